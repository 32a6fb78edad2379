"""The catalog's pure rules (product_svc.domain.*): validation, image sniffing,
page tokens, search terms and the reservation state machine."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime
from typing import Any

import grpc
import pytest

from common import paging
from common.errors import DomainError
from common.money import Money
from common.validation import require_uuid
from product_svc.domain import categories, images, listing, products, reservations, text
from product_svc.domain.categories import Category
from product_svc.domain.listing import Cursor, ListingRequest
from product_svc.domain.products import ProductInput
from product_svc.domain.reservations import Reservation, ReservationFailure, ReservationItem

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
CATEGORY = str(uuid.uuid4())
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 32
JPEG = b"\xff\xd8\xff\xe0" + b"\x00" * 32
WEBP = b"RIFF" + (100).to_bytes(4, "little") + b"WEBPVP8 " + b"\x00" * 32


def fields_of(error: DomainError) -> list[str]:
    return [v.field for v in error.violations]


def raises(code: grpc.StatusCode, call, *args, **kwargs) -> DomainError:
    with pytest.raises(DomainError) as caught:
        call(*args, **kwargs)
    assert caught.value.code == code, caught.value
    return caught.value


# --- ids, categories ------------------------------------------------------------------------------


def test_ids_are_canonical_uuids() -> None:
    value = str(uuid.uuid4())
    assert str(require_uuid(value.upper(), "product_id")) == value
    for bad in ("", "42", "not-a-uuid-not-a-uuid-not-a-uuid-123", value[:-1] + "g"):
        error = raises(grpc.StatusCode.INVALID_ARGUMENT, require_uuid, bad, "product_id")
        assert fields_of(error) == ["product_id"]
        assert error.reason == "VALIDATION_FAILED"


@pytest.mark.parametrize("slug", ["shoes", "running-shoes", "a1-b2-c3", "x"])
def test_good_slugs(slug: str) -> None:
    assert categories.validate_category("Shoes", slug, None).slug == slug


@pytest.mark.parametrize(
    "slug", ["", "Shoes", "running_shoes", "-shoes", "shoes-", "a--b", "sch\u00fche", "a b", "x" * 101]
)
def test_bad_slugs(slug: str) -> None:
    error = raises(grpc.StatusCode.INVALID_ARGUMENT, categories.validate_category, "Shoes", slug, None)
    assert fields_of(error) == ["slug"]


def test_category_name_is_trimmed_and_checked_with_every_problem_reported() -> None:
    assert categories.validate_category("  Shoes  ", "shoes", None).name == "Shoes"
    error = raises(grpc.StatusCode.INVALID_ARGUMENT, categories.validate_category, "  ", "Bad Slug", "nope")
    assert fields_of(error) == ["name", "slug", "parent_id"]
    error = raises(grpc.StatusCode.INVALID_ARGUMENT, categories.validate_category, "bell\x07", "bell", None)
    assert "control" in error.violations[0].description


def test_category_depth_is_bounded() -> None:
    parent = None
    for _ in range(categories.CATEGORY_DEPTH_MAX):  # root, then children down to the deepest level
        ancestors = categories.child_ancestors(parent)
        parent = Category(str(uuid.uuid4()), "c", "c", parent.id if parent else None, ancestors, NOW)
    assert parent is not None and len(parent.ancestors) == categories.CATEGORY_DEPTH_MAX - 1
    with pytest.raises(DomainError, match="at most"):
        categories.child_ancestors(parent)


# --- products -------------------------------------------------------------------------------------


def good_input(**changes: object) -> ProductInput:
    values = {
        "name": " Trail Runner ",
        "description": "Light shoe.\nGrips well.",
        "category_id": CATEGORY,
        "price": (1999, "EUR"),
        "stock": 5,
        "attributes": {"color": "red", " size ": "42"},
        "weight_grams": 350,
    }
    values.update(changes)
    return ProductInput(**values)  # type: ignore[arg-type]


def test_a_valid_product_is_normalized() -> None:
    fields = products.validate_new_product(good_input())
    assert fields.name == "Trail Runner"
    assert fields.price == Money(1999, "EUR")
    assert fields.attributes == {"color": "red", "size": "42"}
    assert fields.status == products.ACTIVE


def test_bad_product_input_names_every_field() -> None:
    error = raises(
        grpc.StatusCode.INVALID_ARGUMENT,
        products.validate_new_product,
        good_input(name="", category_id="x", price=(-1, "EURO"), stock=-3, weight_grams=-1),
    )
    assert fields_of(error) == [
        "name",
        "category_id",
        "price.currency_code",
        "price.amount_minor",
        "stock",
        "weight_grams",
    ]


def test_price_is_required_and_bounded() -> None:
    error = raises(grpc.StatusCode.INVALID_ARGUMENT, products.validate_new_product, good_input(price=None))
    assert fields_of(error) == ["price"]
    error = raises(grpc.StatusCode.INVALID_ARGUMENT, products.validate_new_product, good_input(price=(10**16, "EUR")))
    assert fields_of(error) == ["price.amount_minor"]
    assert products.validate_new_product(good_input(price=(0, "JPY"))).price == Money(0, "JPY")


def test_attribute_limits() -> None:
    many = {f"k{i}": "v" for i in range(products.ATTRIBUTES_MAX + 1)}
    assert fields_of(
        raises(grpc.StatusCode.INVALID_ARGUMENT, products.validate_new_product, good_input(attributes=many))
    )
    error = raises(
        grpc.StatusCode.INVALID_ARGUMENT,
        products.validate_new_product,
        good_input(attributes={"": "x", "k" * 65: "x", "ok": "v" * 501, "tab": "a\tb", "a": "1", " a": "2"}),
    )
    assert len(error.violations) == 5
    dotted = products.validate_new_product(good_input(attributes={"size.eu": "42", "$weird": "ok"}))
    assert dotted.attributes == {"$weird": "ok", "size.eu": "42"}


def test_update_mask_rules() -> None:
    changes = products.validate_update(["name", "price", "status"], good_input(status=products.ARCHIVED))
    assert changes == {"name": "Trail Runner", "price": Money(1999, "EUR"), "status": products.ARCHIVED}
    assert fields_of(raises(grpc.StatusCode.INVALID_ARGUMENT, products.validate_update, [], good_input())) == [
        "update_mask"
    ]
    for paths in (["images"], ["id"], ["colour"], ["name", "name"]):
        error = raises(grpc.StatusCode.INVALID_ARGUMENT, products.validate_update, paths, good_input())
        assert fields_of(error) == ["update_mask"]
    error = raises(grpc.StatusCode.INVALID_ARGUMENT, products.validate_update, ["status"], good_input(status=None))
    assert fields_of(error) == ["product.status"]
    error = raises(
        grpc.StatusCode.INVALID_ARGUMENT, products.validate_update, ["price", "stock"], good_input(price=(5, "XXX"))
    )
    assert fields_of(error) == ["product.price.currency_code"]
    error = raises(grpc.StatusCode.INVALID_ARGUMENT, products.validate_update, ["stock"], good_input(stock=-1))
    assert fields_of(error) == ["product.stock"]


# --- images ---------------------------------------------------------------------------------------


def test_image_type_comes_from_the_content() -> None:
    assert images.sniff_image_type(JPEG) == "image/jpeg"
    assert images.sniff_image_type(PNG) == "image/png"
    assert images.sniff_image_type(WEBP) == "image/webp"
    wav = b"RIFF" + b"\x00" * 4 + b"WAVEfmt "
    for other in (b"", b"hello, I am a text file named cat.png\n", wav, b"RIFF", b"\x89PNG", b"GIF89a" + b"\x00" * 10):
        assert images.sniff_image_type(other) is None


def test_check_image_reasons() -> None:
    assert images.check_image(PNG, 1024) == "image/png"
    too_large = raises(grpc.StatusCode.INVALID_ARGUMENT, images.check_image, PNG + b"\x00" * 2000, 1024)
    assert too_large.reason == "IMAGE_TOO_LARGE"
    assert too_large.metadata == {"max_bytes": "1024"}
    text = raises(grpc.StatusCode.INVALID_ARGUMENT, images.check_image, b"just text", 1024)
    assert text.reason == "UNSUPPORTED_IMAGE_TYPE"


def test_object_keys_never_use_the_uploaded_name() -> None:
    product, image = str(uuid.uuid4()), str(uuid.uuid4())
    assert images.image_key(product, image, "image/webp") == f"products/{product}/{image}.webp"
    assert images.clean_filename("C:\\Users\\ann\\..\\cat\x00.png") == "cat.png"
    assert images.clean_filename("../../etc/passwd") == "passwd"
    assert len(images.clean_filename("a" * 1000)) == images.FILENAME_MAX


# --- listing --------------------------------------------------------------------------------------


def query(**changes: Any) -> listing.ProductQuery:
    values: dict[str, Any] = {
        "category_id": None,
        "min_price": None,
        "max_price": None,
        "in_stock_only": False,
        "query": "",
        "sort": "newest",
        "include_archived": False,
        "page_size_value": 0,
        "page_token": "",
    }
    values.update(changes)
    return listing.validate_product_query(ListingRequest(**values))


def test_page_size_defaults_and_clamps() -> None:
    assert paging.page_size(0) == 20
    assert paging.page_size(7) == 7
    assert paging.page_size(10_000) == 100
    assert fields_of(raises(grpc.StatusCode.INVALID_ARGUMENT, paging.page_size, -1)) == ["page.page_size"]


def test_page_tokens_round_trip_and_are_bound_to_their_query() -> None:
    cursor = Cursor(key=1999, id=str(uuid.uuid4()))
    first = query(sort="price_asc")
    token = listing.cursor_token(cursor, first.scope())
    assert query(sort="price_asc", page_token=token).after == cursor
    # Same token, other filters or another order: refused.
    for other in (
        {"sort": "price_desc"},
        {"sort": "price_asc", "in_stock_only": True},
        {"sort": "price_asc", "query": "x"},
    ):
        error = raises(grpc.StatusCode.INVALID_ARGUMENT, query, page_token=token, **other)
        assert fields_of(error) == ["page.page_token"]
    # Garbage, a wrong key type (a name key for a price sort), a bool key.
    bad_key = listing.cursor_token(Cursor(key="abc", id=cursor.id), first.scope())
    bool_key = listing.cursor_token(Cursor(key=True, id=cursor.id), first.scope())
    bad_id = listing.cursor_token(Cursor(key=1, id="x"), first.scope())
    for bad in ("%%%", "bm90IGpzb24", "W10", bad_key, bool_key, bad_id, "a" * 2000):
        raises(grpc.StatusCode.INVALID_ARGUMENT, query, sort="price_asc", page_token=bad)
    name_token = listing.cursor_token(Cursor(key="shoe", id=cursor.id), query(sort="name_asc").scope())
    assert query(sort="name_asc", page_token=name_token).after == Cursor(key="shoe", id=cursor.id)


def test_price_range_rules() -> None:
    ranged = query(min_price=(100, "EUR"), max_price=(500, "EUR"))
    assert (ranged.currency, ranged.min_price, ranged.max_price) == ("EUR", 100, 500)
    assert query(max_price=(500, "USD")).currency == "USD"
    error = raises(grpc.StatusCode.INVALID_ARGUMENT, query, min_price=(500, "EUR"), max_price=(100, "EUR"))
    assert fields_of(error) == ["max_price.amount_minor"]
    error = raises(grpc.StatusCode.INVALID_ARGUMENT, query, min_price=(1, "EUR"), max_price=(2, "USD"))
    assert fields_of(error) == ["max_price.currency_code"]
    error = raises(grpc.StatusCode.INVALID_ARGUMENT, query, min_price=(-1, "EUR"), sort="cheapest")
    assert fields_of(error) == ["min_price.amount_minor", "sort"]


def test_search_terms_are_normalized_words() -> None:
    assert query(query="  Trail  RUNNER trail ").terms == ("trail", "runner")
    assert text.search_terms("STRASSE Ｓｈｏｅ") == ("strasse", "shoe")
    assert text.search_text("Straße", "Ｓｈｏｅ\n for  Trails") == "strasse shoe for trails"
    assert fields_of(raises(grpc.StatusCode.INVALID_ARGUMENT, query, query="x" * 201)) == ["query"]
    assert fields_of(raises(grpc.StatusCode.INVALID_ARGUMENT, query, query=" ".join("abcdefghijk"))) == ["query"]


@pytest.mark.parametrize("term", ["a.b", "(x)+", "c++", "50%", "[a-z]*", "^$", "a|b", "back\\slash", "ünï"])
def test_regex_literal_matches_only_itself(term: str) -> None:
    pattern = re.compile(text.regex_literal(term))
    assert pattern.search(f"before {term} after")
    assert not pattern.search("before after")


def test_batch_ids() -> None:
    a, b = str(uuid.uuid4()), str(uuid.uuid4())
    assert products.batch_ids([a, b, a.upper()]) == [a, b]
    assert fields_of(raises(grpc.StatusCode.INVALID_ARGUMENT, products.batch_ids, [])) == ["product_ids"]
    assert fields_of(raises(grpc.StatusCode.INVALID_ARGUMENT, products.batch_ids, [a] * 501)) == ["product_ids"]
    assert fields_of(raises(grpc.StatusCode.INVALID_ARGUMENT, products.batch_ids, [a, "nope"])) == ["product_ids[1]"]


# --- reservations ---------------------------------------------------------------------------------

P1, P2 = str(uuid.uuid4()), str(uuid.uuid4())
RID = str(uuid.uuid4())
ITEMS = (ReservationItem(P1, 2), ReservationItem(P2, 1))


def reservation(state: str, items=ITEMS, failure: ReservationFailure | None = None) -> Reservation:
    return Reservation(RID, tuple(items), state, created_at=NOW, updated_at=NOW, failure=failure)


def test_reservation_input() -> None:
    rid, items = reservations.validate_reservation(RID.upper(), [(P1, 2), (P2.upper(), 1)])
    assert rid == RID and items == ITEMS
    error = raises(
        grpc.StatusCode.INVALID_ARGUMENT, reservations.validate_reservation, RID, [(P1, 0), (P1, 1), ("x", 1)]
    )
    assert fields_of(error) == ["items[0].quantity", "items[1].product_id", "items[2].product_id"]
    assert fields_of(raises(grpc.StatusCode.INVALID_ARGUMENT, reservations.validate_reservation, RID, [])) == ["items"]
    many = [(str(uuid.uuid4()), 1) for _ in range(101)]
    assert "items" in fields_of(raises(grpc.StatusCode.INVALID_ARGUMENT, reservations.validate_reservation, RID, many))
    assert fields_of(raises(grpc.StatusCode.INVALID_ARGUMENT, reservations.validate_reservation, "r1", [(P1, 1)])) == [
        "reservation_id"
    ]


def test_replaying_a_reservation_id() -> None:
    reserved = reservation(reservations.RESERVED)
    assert reservations.replay(reserved, tuple(reversed(ITEMS))) is reserved  # same items, any order
    assert reservations.replay(reservation(reservations.PENDING), ITEMS) is None  # resume
    conflict = raises(grpc.StatusCode.ALREADY_EXISTS, reservations.replay, reserved, (ReservationItem(P1, 3),))
    assert conflict.reason == "RESERVATION_CONFLICT"
    short = ReservationFailure("out_of_stock", P2, requested=1, available=0)
    failed = raises(
        grpc.StatusCode.FAILED_PRECONDITION, reservations.replay, reservation(reservations.FAILED, failure=short), ITEMS
    )
    assert failed.reason == "OUT_OF_STOCK"
    assert failed.metadata == {"product_id": P2, "requested": "1", "available": "0"}
    for state, shown in (
        (reservations.RELEASED, "RELEASED"),
        (reservations.RELEASING, "RELEASED"),
        (reservations.COMMITTED, "COMMITTED"),
    ):
        error = raises(grpc.StatusCode.FAILED_PRECONDITION, reservations.replay, reservation(state), ITEMS)
        assert error.reason == "INVALID_STATE"
        assert error.metadata["current_state"] == f"RESERVATION_STATUS_{shown}"
    tombstone = raises(
        grpc.StatusCode.FAILED_PRECONDITION, reservations.replay, reservation(reservations.RELEASED, items=()), ITEMS
    )
    assert tombstone.reason == "INVALID_STATE"


def test_release_and_commit_transitions() -> None:
    assert reservations.release_plan(None) == "record_tombstone"
    for state in (reservations.PENDING, reservations.RESERVED, reservations.RELEASING):
        assert reservations.release_plan(reservation(state)) == "release"
    for state in (reservations.RELEASED, reservations.FAILED):
        assert reservations.release_plan(reservation(state)) == "done"
    for state in (reservations.COMMITTING, reservations.COMMITTED):
        error = raises(grpc.StatusCode.FAILED_PRECONDITION, reservations.release_plan, reservation(state))
        assert error.metadata["current_state"] == "RESERVATION_STATUS_COMMITTED"

    assert reservations.commit_plan(RID, reservation(reservations.RESERVED)) == "commit"
    assert reservations.commit_plan(RID, reservation(reservations.COMMITTING)) == "commit"
    assert reservations.commit_plan(RID, reservation(reservations.COMMITTED)) == "done"
    raises(grpc.StatusCode.NOT_FOUND, reservations.commit_plan, RID, None)
    for state in (reservations.PENDING, reservations.FAILED, reservations.RELEASING, reservations.RELEASED):
        error = raises(grpc.StatusCode.FAILED_PRECONDITION, reservations.commit_plan, RID, reservation(state))
        assert error.reason == "INVALID_STATE"
    raises(
        grpc.StatusCode.FAILED_PRECONDITION, reservations.commit_plan, RID, reservation(reservations.RELEASED, items=())
    )


def test_failures_map_to_the_documented_errors() -> None:
    assert ReservationFailure("archived", P1).error().reason == "PRODUCT_ARCHIVED"
    assert ReservationFailure("not_found", P1).error().code == grpc.StatusCode.NOT_FOUND
    assert ReservationFailure("abandoned").error().code == grpc.StatusCode.ABORTED
    assert reservation(reservations.FAILED).status_name == "RESERVATION_STATUS_RELEASED"
    assert reservation(reservations.RESERVED).status_name == "RESERVATION_STATUS_RESERVED"


def test_page_tokens_stay_short_for_any_name() -> None:
    token_scope = query(sort="name_asc").scope()
    for name in ("x" * 200, "\ufdfa" * 200, "Straße " * 28, "😀" * 200):
        key = text.sort_name(name)
        assert len(key) <= text.NAME_KEY_MAX
        cursor = Cursor(key=key, id=str(uuid.uuid4()))
        token = listing.cursor_token(cursor, token_scope)
        assert len(token) <= paging.PAGE_TOKEN_MAX  # the edge accepts page tokens up to 512 characters
        assert query(sort="name_asc", page_token=token).after == cursor


def test_a_hold_not_taken_says_why() -> None:
    item = ReservationItem(P1, 3)
    assert reservations.hold_failure(item, None) == ReservationFailure("not_found", P1)
    held = reservations.StockLevel(stock=0, status=products.ACTIVE, held=True)
    assert reservations.hold_failure(item, held) is None  # an earlier attempt of this reservation took it
    archived = reservations.StockLevel(stock=10, status=products.ARCHIVED, held=False)
    assert reservations.hold_failure(item, archived) == ReservationFailure("archived", P1)
    short = reservations.StockLevel(stock=2, status=products.ACTIVE, held=False)
    assert reservations.hold_failure(item, short) == ReservationFailure("out_of_stock", P1, requested=3, available=2)


def test_a_category_is_named_by_id_or_slug() -> None:
    value = str(uuid.uuid4())
    assert categories.validate_key(categories.CategoryKey(id=value.upper())) == categories.CategoryKey(id=value)
    assert categories.validate_key(categories.CategoryKey(slug="shoes")) == categories.CategoryKey(slug="shoes")
    for key, field in (
        (categories.CategoryKey(), "key"),
        (categories.CategoryKey(id="x"), "id"),
        (categories.CategoryKey(slug="Shoes"), "slug"),
    ):
        assert fields_of(raises(grpc.StatusCode.INVALID_ARGUMENT, categories.validate_key, key)) == [field]


def test_category_pages_are_bound_to_their_parent() -> None:
    parent = str(uuid.uuid4())
    first = listing.validate_category_query(parent, 1, "")
    found = [Category(str(uuid.uuid4()), name, name, parent, (parent,), NOW) for name in ("Boots", "Sandals")]
    page, token = listing.category_page(first, found)
    assert page == found[:1] and token
    assert listing.validate_category_query(parent, 1, token).after == Cursor(key="boots", id=found[0].id)
    error = raises(grpc.StatusCode.INVALID_ARGUMENT, listing.validate_category_query, None, 1, token)
    assert fields_of(error) == ["page.page_token"]
    assert listing.category_page(first, found[:1]) == (found[:1], "")
