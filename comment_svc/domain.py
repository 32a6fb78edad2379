"""The rules of comments, reviews, likes and ratings: plain Python, no I/O.

Validation failures raise :class:`~common.errors.InvalidArgumentError` with one
:class:`~common.errors.FieldViolation` per bad field (paths relative to the
request message) and reason ``VALIDATION_FAILED``; rights and states raise
PERMISSION_DENIED (``NOT_OWNER``) and FAILED_PRECONDITION (``INVALID_STATE``).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Literal

from common import paging
from common.errors import FailedPreconditionError, FieldViolation, NotFoundError, PermissionDeniedError
from common.validation import Violations, control_problem, invalid, parse_uuid, require_uuid, uuid_problem

BODY_MAX = 5000  # characters, after trimming
RATING_MIN, RATING_MAX = 1, 5
RATINGS = tuple(range(RATING_MIN, RATING_MAX + 1))
EXCERPT_MAX = 200  # characters of a reply in CommentReplied
REPLY_LIMIT_DEFAULT = 3
REPLY_LIMIT_MAX = 20
BATCH_MAX = 500
UPDATE_PATHS = ("body", "rating")

Sort = Literal["newest", "most_liked"]


# --- body and rating ------------------------------------------------------------------------


def normalize_body(raw: str) -> str:
    """Line breaks as ``\\n`` (browsers send ``\\r\\n`` from text areas), trimmed."""
    return raw.replace("\r\n", "\n").replace("\r", "\n").strip()


def body_problem(body: str) -> str | None:
    """Why a normalized body is not acceptable, or None."""
    if not body:
        return "is required: write 1 to 5000 characters"
    if len(body) > BODY_MAX:
        return f"must be at most {BODY_MAX} characters (it has {len(body)})"
    return control_problem(body, multiline=True)


def rating_problem(rating: int | None, *, reply: bool) -> str | None:
    if rating is None:
        return None
    if reply:
        return "only a top-level review may carry a rating, not a reply"
    if not RATING_MIN <= rating <= RATING_MAX:
        return f"must be a whole number from {RATING_MIN} to {RATING_MAX} (got {rating})"
    return None


def excerpt(body: str, limit: int = EXCERPT_MAX) -> str:
    return body if len(body) <= limit else body[: limit - 1] + "…"


# --- the comment ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Comment:
    """A stored comment.  A deleted placeholder has no author, body or rating."""

    id: uuid.UUID
    product_id: uuid.UUID
    parent_id: uuid.UUID | None
    author_id: uuid.UUID | None
    author_display_name: str
    body: str
    rating: int | None
    like_count: int
    reply_count: int
    verified_purchase: bool
    edited_at: datetime | None
    deleted_at: datetime | None
    created_at: datetime
    updated_at: datetime

    @property
    def deleted(self) -> bool:
        return self.deleted_at is not None

    @property
    def is_reply(self) -> bool:
        return self.parent_id is not None


@dataclass(frozen=True)
class NewComment:
    product_id: uuid.UUID
    parent_id: uuid.UUID | None
    body: str
    rating: int | None


@dataclass(frozen=True)
class Authorship:
    """Who writes a new comment, as the other services tell: the account, its
    display name ("" when unknown) and whether they received the product."""

    author_id: uuid.UUID
    display_name: str
    verified_purchase: bool


def validate_new_comment(product_id: str, parent_id: str | None, body: str, rating: int | None) -> NewComment:
    """The request of CreateComment, checked before anything is asked of anyone."""
    violations = Violations()
    problem = uuid_problem(product_id, "a product id")
    if problem:
        violations.add("product_id", problem)
    if parent_id is not None:
        problem = uuid_problem(parent_id, "a comment id")
        if problem:
            violations.add("parent_id", problem)
    text = normalize_body(body)
    problem = body_problem(text)
    if problem:
        violations.add("body", problem)
    problem = rating_problem(rating, reply=parent_id is not None)
    if problem:
        violations.add("rating", problem)
    violations.check()
    parent = parse_uuid(parent_id) if parent_id is not None else None
    product = parse_uuid(product_id)
    assert product is not None
    return NewComment(product_id=product, parent_id=parent, body=text, rating=rating)


def _removed(action: str) -> FailedPreconditionError:
    message = f"this comment was removed and cannot be {action}"
    return FailedPreconditionError(message, reason="INVALID_STATE", metadata={"current_state": "DELETED"})


def check_parent(parent: Comment | None, new: NewComment) -> Comment:
    """The comment a reply answers must exist, be of the same product and not be removed."""
    if parent is None:
        raise NotFoundError(
            "the comment you reply to does not exist", violations=[FieldViolation("parent_id", "no such comment")]
        )
    if parent.product_id != new.product_id:
        raise FailedPreconditionError(
            "the comment you reply to belongs to another product",
            violations=[FieldViolation("parent_id", "belongs to another product")],
            reason="INVALID_STATE",
            metadata={"current_state": "OTHER_PRODUCT"},
        )
    if parent.deleted:
        raise _removed("replied to")
    return parent


# --- edits -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Change:
    """What UpdateComment asks for: a new body and/or a new rating (None removes it)."""

    body: str | None
    set_rating: bool
    rating: int | None


def validate_change(paths: Sequence[str], body: str, rating: int | None) -> Change:
    """The update mask and the values it names (the reply/review check needs the comment)."""
    violations = Violations()
    wanted = list(dict.fromkeys(path.strip() for path in paths))
    if not wanted:
        violations.add("update_mask", f"name at least one of {', '.join(UPDATE_PATHS)}")
    unknown = [path for path in wanted if path not in UPDATE_PATHS]
    if unknown:
        violations.add("update_mask", f"unknown path {', '.join(unknown)}; allowed: {', '.join(UPDATE_PATHS)}")
    text: str | None = None
    if "body" in wanted:
        text = normalize_body(body)
        problem = body_problem(text)
        if problem:
            violations.add("body", problem)
    if "rating" in wanted and rating is not None and not RATING_MIN <= rating <= RATING_MAX:
        violations.add("rating", f"must be a whole number from {RATING_MIN} to {RATING_MAX} (got {rating})")
    violations.check()
    return Change(body=text, set_rating="rating" in wanted, rating=rating if "rating" in wanted else None)


@dataclass(frozen=True)
class Edit:
    """The new body and rating of an edited comment; ``changed`` is False when
    the edit repeats what is stored (nothing is written, no edited mark)."""

    body: str
    rating: int | None
    changed: bool


def apply_change(comment: Comment, change: Change, user_id: uuid.UUID) -> Edit:
    """An author's edit of their comment (checked against the locked row)."""
    if comment.deleted:
        raise _removed("edited")
    if comment.author_id != user_id:
        raise PermissionDeniedError("only the author may edit a comment", reason="NOT_OWNER")
    if change.set_rating and change.rating is not None and comment.is_reply:
        raise invalid(FieldViolation("rating", "only a top-level review may carry a rating, not a reply"))
    body = change.body if change.body is not None else comment.body
    rating = change.rating if change.set_rating else comment.rating
    return Edit(body=body, rating=rating, changed=(body, rating) != (comment.body, comment.rating))


# --- deletion --------------------------------------------------------------------------------


class Deletion(StrEnum):
    """What deleting a comment does."""

    ALREADY = "already"  # it is a removed placeholder already: nothing
    PLACEHOLDER = "placeholder"  # it has replies: a "removed" placeholder holds the thread together
    REMOVE = "remove"  # the row goes


def plan_deletion(comment: Comment, user_id: uuid.UUID, *, admin: bool) -> Deletion:
    """What deleting a comment does: nothing (already a placeholder), keep a
    "removed" placeholder (it has replies), or remove the row."""
    if comment.deleted:
        return Deletion.ALREADY
    if comment.author_id != user_id and not admin:
        raise PermissionDeniedError("only the author or an admin may delete a comment", reason="NOT_OWNER")
    return Deletion.PLACEHOLDER if comment.reply_count > 0 else Deletion.REMOVE


def left_empty(parent: Comment) -> bool:
    """Whether a parent losing one reply is a removed placeholder with nothing left
    to hold together (and goes too)."""
    return parent.deleted and parent.reply_count - 1 <= 0


def check_likeable(comment: Comment | None) -> Comment:
    if comment is None:
        raise NotFoundError("no comment with this id")
    if comment.deleted:
        raise _removed("liked")
    return comment


# --- ratings ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class RatingDelta:
    """A change to a product's summary: count, sum and the five buckets."""

    count: int
    sum: int
    buckets: tuple[int, int, int, int, int]

    @property
    def empty(self) -> bool:
        return self.count == 0 and self.sum == 0 and not any(self.buckets)


def rating_delta(old: int | None, new: int | None) -> RatingDelta:
    """How a product's summary changes when a review's rating goes from old to new
    (None: no rating, or no review)."""
    buckets = [0, 0, 0, 0, 0]
    count = total = 0
    if old is not None:
        buckets[old - 1] -= 1
        count -= 1
        total -= old
    if new is not None:
        buckets[new - 1] += 1
        count += 1
        total += new
    return RatingDelta(count, total, (buckets[0], buckets[1], buckets[2], buckets[3], buckets[4]))


@dataclass(frozen=True)
class RatingSummary:
    product_id: uuid.UUID
    count: int = 0
    sum: int = 0
    histogram: tuple[int, int, int, int, int] = (0, 0, 0, 0, 0)

    @property
    def average(self) -> float:
        """sum / count rounded half up to two decimals (integer arithmetic); 0 without ratings."""
        if self.count <= 0:
            return 0.0
        hundredths = (self.sum * 200 + self.count) // (2 * self.count)
        return hundredths / 100


def batch_product_ids(raw: Sequence[str]) -> list[uuid.UUID]:
    """1 to 500 product ids, duplicates dropped, request order kept."""
    if not raw:
        raise invalid(FieldViolation("product_ids", "give 1 to 500 product ids"))
    violations = Violations()
    found: dict[uuid.UUID, None] = {}
    for index, value in enumerate(raw):
        parsed = parse_uuid(value)
        if parsed is None:
            violations.add(f"product_ids[{index}]", "must be a product id (UUID)")
        else:
            found[parsed] = None
    if len(found) > BATCH_MAX:
        violations.add("product_ids", f"at most {BATCH_MAX} distinct ids per call")
    violations.check()
    return list(found)


# --- listing and paging ----------------------------------------------------------------------


def reply_limit(requested: int, path: str = "reply_limit") -> int:
    """Replies shown under each comment of a page: a page size of its own."""
    return paging.page_size(requested, path, default=REPLY_LIMIT_DEFAULT, maximum=REPLY_LIMIT_MAX)


@dataclass(frozen=True)
class Listing:
    """Which list a page is of: a product's top-level comments in an order, or a
    comment's direct replies (oldest first, whatever the order asked)."""

    product_id: uuid.UUID
    parent_id: uuid.UUID | None = None
    sort: Sort = "newest"

    @property
    def by_likes(self) -> bool:
        return self.parent_id is None and self.sort == "most_liked"

    @property
    def scope(self) -> str:
        """What a page token is valid for: the same product, parent and order."""
        if self.parent_id is not None:
            return paging.scope("comments", self.product_id.hex, self.parent_id.hex, "replies")
        return paging.scope("comments", self.product_id.hex, self.sort)


@dataclass(frozen=True)
class Cursor:
    """Position after the last item of a page: (like_count,) created_at, id in the
    list's order (most liked: like_count set; newest and replies: None)."""

    created_at: datetime
    id: uuid.UUID
    like_count: int | None = None

    @classmethod
    def after(cls, comment: Comment, listing: Listing) -> Cursor:
        return cls(comment.created_at, comment.id, comment.like_count if listing.by_likes else None)


def cursor_token(cursor: Cursor, listing: Listing) -> str:
    """The page token (common/paging.py) holding ``cursor`` for this list."""
    position = paging.created_position(cursor.created_at, cursor.id)
    if cursor.like_count is not None:
        position["l"] = cursor.like_count
    return paging.encode_page_token(position, listing.scope)


def read_cursor(token: str, listing: Listing, path: str = paging.PAGE_TOKEN_PATH) -> Cursor | None:
    """The cursor in ``token`` (None for an empty token); INVALID_ARGUMENT when it is
    malformed or was issued for another list (most liked tokens carry a like count)."""
    position = paging.decode_page_token(token, listing.scope, path)
    if position is None:
        return None
    likes = position.optional_integer("l")
    if (likes is not None) != listing.by_likes:
        raise paging.not_a_token(path)
    created_at, comment_id = position.created()
    return Cursor(created_at=created_at, id=comment_id, like_count=likes)


@dataclass(frozen=True)
class ListQuery:
    """A checked ListComments request."""

    listing: Listing
    size: int
    per_parent: int
    after: Cursor | None


def list_query(
    *, product_id: str, parent_id: str | None, sort: Sort | None, page_size: int, page_token: str, replies: int
) -> ListQuery:
    """The ListComments request, checked field by field (the first bad one is named)."""
    product = require_uuid(product_id, "product_id", "a product id")
    parent = require_uuid(parent_id, "parent_id", "a comment id") if parent_id is not None else None
    if sort is None:
        raise invalid(FieldViolation("sort", "unknown sort order"))
    size = paging.page_size(page_size)
    per_parent = reply_limit(replies)
    listing = Listing(product, parent, sort)
    return ListQuery(listing, size, per_parent, read_cursor(page_token, listing))


def next_page(rows: Sequence[Comment], size: int, listing: Listing) -> tuple[list[Comment], str]:
    """The page (rows were fetched with limit size + 1) and the token of the next one."""
    page = list(rows[:size])
    if len(rows) <= size or not page:
        return page, ""
    return page, cursor_token(Cursor.after(page[-1], listing), listing)


def group_replies(replies: Iterable[Comment]) -> dict[uuid.UUID, list[Comment]]:
    """Replies by parent, oldest first."""
    grouped: dict[uuid.UUID, list[Comment]] = {}
    for reply in sorted(replies, key=lambda c: (c.created_at, c.id)):
        assert reply.parent_id is not None
        grouped.setdefault(reply.parent_id, []).append(reply)
    return grouped
