"""comment_svc's rules: validation, rights, deletion, rating arithmetic, page tokens."""

from __future__ import annotations

import random
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from comment_svc import domain
from comment_svc.domain import Comment, Cursor, RatingSummary
from common.errors import FailedPreconditionError, InvalidArgumentError, NotFoundError, PermissionDeniedError

AUTHOR = uuid.uuid4()
OTHER = uuid.uuid4()
PRODUCT = uuid.uuid4()
T0 = datetime(2025, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)


def comment(**changes: object) -> Comment:
    base = Comment(
        id=uuid.uuid4(),
        product_id=PRODUCT,
        parent_id=None,
        author_id=AUTHOR,
        author_display_name="Ann",
        body="Great kettle",
        rating=4,
        like_count=0,
        reply_count=0,
        verified_purchase=False,
        edited_at=None,
        deleted_at=None,
        created_at=T0,
        updated_at=T0,
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def fields(error: InvalidArgumentError) -> list[str]:
    return [violation.field for violation in error.violations]


# --- body and rating ------------------------------------------------------------------


def test_body_is_trimmed_and_line_breaks_normalized() -> None:
    new = domain.validate_new_comment(str(PRODUCT), None, "  first line\r\nsecond\rthird\n\tindented  \n", 5)
    assert new.body == "first line\nsecond\nthird\n\tindented"
    assert new.rating == 5 and new.parent_id is None and new.product_id == PRODUCT


@pytest.mark.parametrize("body", ["", "   ", "\n\t \r\n"])
def test_empty_body_is_refused(body: str) -> None:
    with pytest.raises(InvalidArgumentError) as raised:
        domain.validate_new_comment(str(PRODUCT), None, body, None)
    assert fields(raised.value) == ["body"]
    assert raised.value.reason == "VALIDATION_FAILED"


def test_body_length_counts_characters_after_trimming() -> None:
    assert domain.validate_new_comment(str(PRODUCT), None, " " + "é" * 5000 + " ", None).body == "é" * 5000
    assert domain.validate_new_comment(str(PRODUCT), None, "🙂" * 5000, None).body == "🙂" * 5000
    with pytest.raises(InvalidArgumentError) as raised:
        domain.validate_new_comment(str(PRODUCT), None, "x" * 5001, None)
    assert "5000" in raised.value.violations[0].description


@pytest.mark.parametrize("control", ["\x00", "\x07", "\x1b[31m", "\x7f", "\x85", "\ud800"])
def test_control_characters_are_refused(control: str) -> None:
    with pytest.raises(InvalidArgumentError) as raised:
        domain.validate_new_comment(str(PRODUCT), None, f"fine {control} text", None)
    assert fields(raised.value) == ["body"]
    assert "control characters" in raised.value.violations[0].description


@pytest.mark.parametrize("rating", [0, 6, -1, 2**31 - 1])
def test_rating_outside_one_to_five_is_refused(rating: int) -> None:
    with pytest.raises(InvalidArgumentError) as raised:
        domain.validate_new_comment(str(PRODUCT), None, "ok", rating)
    assert fields(raised.value) == ["rating"]


def test_replies_carry_no_rating_and_every_bad_field_is_named() -> None:
    with pytest.raises(InvalidArgumentError) as raised:
        domain.validate_new_comment("not-a-uuid", "also-bad", "", 3)
    assert fields(raised.value) == ["product_id", "parent_id", "body", "rating"]
    assert "top-level" in raised.value.violations[-1].description
    reply = domain.validate_new_comment(str(PRODUCT), str(OTHER), "me too", None)
    assert reply.parent_id == OTHER and reply.rating is None


def test_parent_must_exist_be_of_the_same_product_and_not_removed() -> None:
    new = domain.validate_new_comment(str(PRODUCT), str(uuid.uuid4()), "reply", None)
    with pytest.raises(NotFoundError):
        domain.check_parent(None, new)
    with pytest.raises(FailedPreconditionError) as raised:
        domain.check_parent(comment(product_id=uuid.uuid4()), new)
    assert raised.value.reason == "INVALID_STATE"
    with pytest.raises(FailedPreconditionError) as raised:
        domain.check_parent(comment(deleted_at=T0, author_id=None, body="", rating=None), new)
    assert raised.value.metadata == {"current_state": "DELETED"}
    parent = comment()
    assert domain.check_parent(parent, new) is parent


def test_excerpt() -> None:
    assert domain.excerpt("short") == "short"
    long = domain.excerpt("y" * 500)
    assert len(long) == 200 and long.endswith("…")


# --- edits ------------------------------------------------------------------------------------


def test_update_mask_is_required_and_checked() -> None:
    with pytest.raises(InvalidArgumentError) as raised:
        domain.validate_change([], "x", None)
    assert fields(raised.value) == ["update_mask"]
    with pytest.raises(InvalidArgumentError) as raised:
        domain.validate_change(["body", "author_id"], "x", None)
    assert "author_id" in raised.value.violations[0].description
    with pytest.raises(InvalidArgumentError) as raised:
        domain.validate_change(["body", "rating"], " ", 9)
    assert fields(raised.value) == ["body", "rating"]


def test_author_edits_body_and_rating() -> None:
    current = comment(rating=2)
    body_only = domain.apply_change(current, domain.validate_change(["body"], " Better now ", 5), AUTHOR)
    assert (body_only.body, body_only.rating, body_only.changed) == ("Better now", 2, True)
    rating_removed = domain.apply_change(current, domain.validate_change(["rating"], "", None), AUTHOR)
    assert (rating_removed.body, rating_removed.rating) == ("Great kettle", None)
    same = domain.apply_change(current, domain.validate_change(["body", "rating"], "Great kettle", 2), AUTHOR)
    assert not same.changed


def test_only_the_author_edits_and_never_a_removed_comment() -> None:
    change = domain.validate_change(["body"], "mine now", None)
    with pytest.raises(PermissionDeniedError) as raised:
        domain.apply_change(comment(), change, OTHER)
    assert raised.value.reason == "NOT_OWNER"
    with pytest.raises(FailedPreconditionError):
        domain.apply_change(comment(deleted_at=T0, author_id=None, body="", rating=None), change, AUTHOR)


def test_a_reply_cannot_be_given_a_rating_by_an_edit() -> None:
    reply = comment(parent_id=uuid.uuid4(), rating=None)
    with pytest.raises(InvalidArgumentError) as raised:
        domain.apply_change(reply, domain.validate_change(["rating"], "", 4), AUTHOR)
    assert fields(raised.value) == ["rating"]
    assert domain.apply_change(reply, domain.validate_change(["rating"], "", None), AUTHOR).changed is False


# --- deletion and likes ------------------------------------------------------------------------


def test_deletion_rights_and_outcomes() -> None:
    assert domain.plan_deletion(comment(), AUTHOR, admin=False) == "remove"
    assert domain.plan_deletion(comment(reply_count=2), AUTHOR, admin=False) == "placeholder"
    assert domain.plan_deletion(comment(reply_count=1), OTHER, admin=True) == "placeholder"
    with pytest.raises(PermissionDeniedError) as raised:
        domain.plan_deletion(comment(), OTHER, admin=False)
    assert raised.value.reason == "NOT_OWNER"
    removed = comment(deleted_at=T0, author_id=None, body="", rating=None, reply_count=1)
    assert domain.plan_deletion(removed, OTHER, admin=False) == "already"


def test_likes_need_a_live_comment() -> None:
    with pytest.raises(NotFoundError):
        domain.check_likeable(None)
    with pytest.raises(FailedPreconditionError):
        domain.check_likeable(comment(deleted_at=T0, author_id=None, body="", rating=None))
    live = comment()
    assert domain.check_likeable(live) is live


# --- ratings ---------------------------------------------------------------------------------


def test_rating_deltas() -> None:
    assert domain.rating_delta(None, 4) == domain.RatingDelta(1, 4, (0, 0, 0, 1, 0))
    assert domain.rating_delta(4, 2) == domain.RatingDelta(0, -2, (0, 1, 0, -1, 0))
    assert domain.rating_delta(5, None) == domain.RatingDelta(-1, -5, (0, 0, 0, 0, -1))
    assert domain.rating_delta(None, None).empty
    assert domain.rating_delta(3, 3).empty


def apply(summary: RatingSummary, delta: domain.RatingDelta) -> RatingSummary:
    histogram = tuple(a + b for a, b in zip(summary.histogram, delta.buckets, strict=True))
    return RatingSummary(summary.product_id, summary.count + delta.count, summary.sum + delta.sum, histogram)  # type: ignore[arg-type]


def test_deltas_keep_the_summary_equal_to_a_recount() -> None:
    rng = random.Random(7)
    ratings: dict[int, int | None] = {}
    summary = RatingSummary(PRODUCT)
    for step in range(2000):
        review = rng.randrange(40)
        old = ratings.get(review)
        new = rng.choice([None, 1, 2, 3, 4, 5]) if rng.random() < 0.8 else None
        summary = apply(summary, domain.rating_delta(old, new))
        ratings[review] = new
        rated = [r for r in ratings.values() if r is not None]
        assert summary.count == len(rated), step
        assert summary.sum == sum(rated)
        assert summary.histogram == tuple(rated.count(value) for value in domain.RATINGS)


def test_average_is_rounded_half_up_to_two_decimals() -> None:
    assert RatingSummary(PRODUCT).average == 0.0
    assert RatingSummary(PRODUCT, count=3, sum=14).average == 4.67
    assert RatingSummary(PRODUCT, count=8, sum=29).average == 3.63  # 3.625 rounds up
    assert RatingSummary(PRODUCT, count=2, sum=9).average == 4.5


def test_batch_ids_are_deduplicated_in_request_order() -> None:
    a, b = uuid.uuid4(), uuid.uuid4()
    assert domain.batch_product_ids([str(b), str(a), str(b).upper()]) == [b, a]
    with pytest.raises(InvalidArgumentError) as raised:
        domain.batch_product_ids([str(a), "nope"])
    assert fields(raised.value) == ["product_ids[1]"]
    with pytest.raises(InvalidArgumentError):
        domain.batch_product_ids([])
    with pytest.raises(InvalidArgumentError):
        domain.batch_product_ids([str(uuid.uuid4()) for _ in range(501)])


# --- paging ----------------------------------------------------------------------------------


def test_reply_limit() -> None:
    assert domain.reply_limit(0) == 3 and domain.reply_limit(7) == 7 and domain.reply_limit(50) == 20
    with pytest.raises(InvalidArgumentError):
        domain.reply_limit(-1)


def test_page_tokens_round_trip_to_the_microsecond() -> None:
    scope = domain.Listing(PRODUCT, None, "most_liked")
    cursor = Cursor(T0 + timedelta(microseconds=1), uuid.uuid4(), like_count=12)
    assert domain.read_cursor(domain.cursor_token(cursor, scope), scope) == cursor
    newest = domain.Listing(PRODUCT, None, "newest")
    plain = Cursor(datetime(2031, 12, 31, 23, 59, 59, 999999, tzinfo=UTC), uuid.uuid4())
    assert domain.read_cursor(domain.cursor_token(plain, newest), newest) == plain
    assert domain.read_cursor("", newest) is None


def test_page_tokens_of_another_list_or_tampered_are_refused() -> None:
    newest = domain.Listing(PRODUCT, None, "newest")
    liked = domain.Listing(PRODUCT, None, "most_liked")
    token = domain.cursor_token(Cursor(T0, uuid.uuid4()), newest)
    for scope in (liked, domain.Listing(uuid.uuid4(), None, "newest"), domain.Listing(PRODUCT, OTHER, "newest")):
        with pytest.raises(InvalidArgumentError) as raised:
            domain.read_cursor(token, scope)
        assert fields(raised.value) == ["page.page_token"]
    for bad in ("garbage!", token[:-3], "x" * 600, "eyJ2IjoxfQ"):
        with pytest.raises(InvalidArgumentError):
            domain.read_cursor(bad, newest)


def test_next_page_token_only_when_more_rows_exist() -> None:
    rows = [comment(created_at=T0 - timedelta(seconds=n), like_count=10 - n) for n in range(4)]
    scope = domain.Listing(PRODUCT, None, "most_liked")
    page, token = domain.next_page(rows, 3, scope)
    assert page == rows[:3]
    assert domain.read_cursor(token, scope) == Cursor(rows[2].created_at, rows[2].id, like_count=8)
    assert domain.next_page(rows, 4, scope) == (rows, "")


def test_replies_are_grouped_under_their_parent_oldest_first() -> None:
    first, second = uuid.uuid4(), uuid.uuid4()
    late = comment(parent_id=first, rating=None, created_at=T0 + timedelta(minutes=5))
    early = comment(parent_id=first, rating=None, created_at=T0)
    other = comment(parent_id=second, rating=None)
    grouped = domain.group_replies([late, other, early])
    assert grouped == {first: [early, late], second: [other]}
