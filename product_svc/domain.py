"""The catalog's rules: validation, image sniffing, keyset paging, search terms,
product status and the stock reservation state machine.  Plain Python, no I/O.

Failures are :mod:`common.errors` exceptions; invalid input is collected into one
``InvalidArgumentError`` with a field violation per bad field (reason VALIDATION_FAILED).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import string
import unicodedata
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from common.errors import (
    AbortedError,
    AlreadyExistsError,
    DomainError,
    FailedPreconditionError,
    FieldViolation,
    InvalidArgumentError,
    NotFoundError,
)
from common.money import CURRENCY_EXPONENTS, MAX_AMOUNT_MINOR, Money, MoneyError
from common.validation import control_problem

# --- limits -------------------------------------------------------------------------------------

INT32_MAX = 2**31 - 1
CATEGORY_NAME_MAX = 100
SLUG_MAX = 100
CATEGORY_DEPTH_MAX = 8  # a root category is depth 1
PRODUCT_NAME_MAX = 200
DESCRIPTION_MAX = 10_000
ATTRIBUTES_MAX = 50
ATTRIBUTE_KEY_MAX = 64
ATTRIBUTE_VALUE_MAX = 500
WEIGHT_MAX_GRAMS = 10_000_000  # ten tonnes per unit is a freight, not a parcel
PAGE_SIZE_DEFAULT = 20
PAGE_SIZE_MAX = 100
PAGE_TOKEN_MAX = 512
NAME_KEY_MAX = 48  # characters of a name that order it (see sort_name)
BATCH_MAX = 500
RESERVATION_ITEMS_MAX = 100
# Units of one product in one reservation.  order_svc caps an order line far lower
# (SHOP_MAX_LINE_QUANTITY, 100 by default); this backstop keeps any one caller from
# holding a product's whole stock in a single line.
RESERVATION_QUANTITY_MAX = 10_000
QUERY_MAX = 200  # characters of a search query
QUERY_TERMS_MAX = 10
FILENAME_MAX = 255

VALIDATION_FAILED = "VALIDATION_FAILED"


class Violations:
    """Collects field violations; ``check()`` raises them as one InvalidArgumentError."""

    def __init__(self, prefix: str = "") -> None:
        self.prefix = prefix
        self.items: list[FieldViolation] = []

    def add(self, name: str, description: str) -> None:
        self.items.append(FieldViolation(f"{self.prefix}{name}", description))

    def check(self, message: str = "the request has invalid fields") -> None:
        if self.items:
            raise InvalidArgumentError(message, violations=list(self.items), reason=VALIDATION_FAILED)


def invalid(name: str, description: str) -> InvalidArgumentError:
    return InvalidArgumentError(
        f"{name}: {description}", violations=[FieldViolation(name, description)], reason=VALIDATION_FAILED
    )


# --- identifiers and text -------------------------------------------------------------------------


def parse_id(value: str, name: str) -> str:
    """A UUID in its canonical lower-case form, or INVALID_ARGUMENT naming the field."""
    problem = id_problem(value)
    if problem:
        raise invalid(name, problem)
    return str(uuid.UUID(value))


def id_problem(value: str) -> str | None:
    if not value:
        return "is required"
    if len(value) != 36:
        return "must be a UUID such as 0b7a1c52-2f1e-4d8e-9a4f-3c5d6e7f8a9b"
    try:
        uuid.UUID(value)
    except ValueError:
        return "must be a UUID such as 0b7a1c52-2f1e-4d8e-9a4f-3c5d6e7f8a9b"
    return None


def new_id() -> str:
    return str(uuid.uuid4())


def text_problem(value: str, *, max_len: int, required: bool, allow_newlines: bool = False) -> str | None:
    if required and not value:
        return "is required"
    if len(value) > max_len:
        return f"must be at most {max_len} characters"
    return control_problem(value, multiline=allow_newlines)


def normalize(value: str) -> str:
    """Case- and width-insensitive form used for sorting and search."""
    return unicodedata.normalize("NFKC", value).casefold()


def sort_name(value: str) -> str:
    """The key names sort by: normalized, and short enough to travel in a page
    token (names alike in their first characters are ordered by id)."""
    return normalize(value)[:NAME_KEY_MAX]


# --- categories ---------------------------------------------------------------------------------

_SLUG_CHARS = set(string.ascii_lowercase + string.digits + "-")


@dataclass(frozen=True)
class Category:
    id: str
    name: str
    slug: str
    parent_id: str | None
    # Ids from the root down to the parent: "this category and its descendants"
    # is one indexed query on this list.
    ancestors: tuple[str, ...]
    created_at: datetime


@dataclass(frozen=True)
class NewCategory:
    name: str
    slug: str
    parent_id: str | None


def slug_problem(slug: str) -> str | None:
    if not slug:
        return "is required"
    if len(slug) > SLUG_MAX:
        return f"must be at most {SLUG_MAX} characters"
    if set(slug) - _SLUG_CHARS or slug.startswith("-") or slug.endswith("-") or "--" in slug:
        return "must be lower-case letters, digits and single hyphens, e.g. 'running-shoes'"
    return None


def validate_category(name: str, slug: str, parent_id: str | None) -> NewCategory:
    problems = Violations()
    name = name.strip()
    problem = text_problem(name, max_len=CATEGORY_NAME_MAX, required=True)
    if problem:
        problems.add("name", problem)
    problem = slug_problem(slug)
    if problem:
        problems.add("slug", problem)
    if parent_id is not None:
        problem = id_problem(parent_id)
        if problem:
            problems.add("parent_id", problem)
    problems.check()
    return NewCategory(name=name, slug=slug, parent_id=str(uuid.UUID(parent_id)) if parent_id is not None else None)


def child_ancestors(parent: Category | None) -> tuple[str, ...]:
    """The ancestors of a new child of ``parent``; refuses trees deeper than the limit."""
    if parent is None:
        return ()
    ancestors = (*parent.ancestors, parent.id)
    if len(ancestors) >= CATEGORY_DEPTH_MAX:
        raise invalid("parent_id", f"categories nest at most {CATEGORY_DEPTH_MAX} levels deep")
    return ancestors


# --- products -------------------------------------------------------------------------------------

ACTIVE = "active"
ARCHIVED = "archived"
STATUSES = (ACTIVE, ARCHIVED)


@dataclass(frozen=True)
class Image:
    id: str
    key: str  # object key in the bucket
    content_type: str
    size_bytes: int
    filename: str
    created_at: datetime


@dataclass
class Product:
    id: str
    name: str
    description: str
    category_id: str
    price: Money
    stock: int
    attributes: dict[str, str]
    images: list[Image]
    status: str
    weight_grams: int
    created_at: datetime
    updated_at: datetime
    # Open stock reservations holding units of this product: reservation id -> quantity.
    holds: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class ProductInput:
    """Product fields as a caller sent them (before validation)."""

    name: str = ""
    description: str = ""
    category_id: str = ""
    price: tuple[int, str] | None = None  # (amount_minor, currency); None when absent
    stock: int = 0
    attributes: Mapping[str, str] = field(default_factory=dict)
    weight_grams: int = 0
    status: str | None = None  # ACTIVE, ARCHIVED, or None when unspecified


@dataclass(frozen=True)
class ProductFields:
    """Validated, normalized product fields."""

    name: str
    description: str
    category_id: str
    price: Money
    stock: int
    attributes: dict[str, str]
    weight_grams: int
    status: str = ACTIVE


def _name(value: str, problems: Violations, name: str = "name") -> str:
    value = value.strip()
    problem = text_problem(value, max_len=PRODUCT_NAME_MAX, required=True)
    if problem:
        problems.add(name, problem)
    return value


def _description(value: str, problems: Violations) -> str:
    problem = text_problem(value, max_len=DESCRIPTION_MAX, required=False, allow_newlines=True)
    if problem:
        problems.add("description", problem)
    return value


def _category_id(value: str, problems: Violations) -> str:
    problem = id_problem(value)
    if problem:
        problems.add("category_id", problem)
        return value
    return str(uuid.UUID(value))


def money_problems(price: tuple[int, str] | None, name: str, problems: Violations, *, required: bool) -> Money | None:
    """A price: amount >= 0 in a known ISO 4217 currency."""
    if price is None:
        if required:
            problems.add(name, "is required")
        return None
    amount, currency = price
    bad = False
    if currency not in CURRENCY_EXPONENTS:
        problems.add(f"{name}.currency_code", f"unknown currency {currency!r}: use an ISO 4217 code such as 'EUR'")
        bad = True
    if amount < 0:
        problems.add(f"{name}.amount_minor", "must not be negative")
        bad = True
    elif amount > MAX_AMOUNT_MINOR:
        problems.add(f"{name}.amount_minor", f"must be at most {MAX_AMOUNT_MINOR}")
        bad = True
    if bad:
        return None
    try:
        return Money(amount, currency)
    except MoneyError as exc:  # pragma: no cover - the checks above cover Money's rules
        problems.add(name, str(exc))
        return None


def _stock(value: int, problems: Violations) -> int:
    if value < 0:
        problems.add("stock", "must not be negative")
    elif value > INT32_MAX:
        problems.add("stock", f"must be at most {INT32_MAX}")
    return value


def _weight(value: int, problems: Violations) -> int:
    if value < 0:
        problems.add("weight_grams", "must not be negative")
    elif value > WEIGHT_MAX_GRAMS:
        problems.add("weight_grams", f"must be at most {WEIGHT_MAX_GRAMS}")
    return value


def _attributes(values: Mapping[str, str], problems: Violations) -> dict[str, str]:
    if len(values) > ATTRIBUTES_MAX:
        problems.add("attributes", f"at most {ATTRIBUTES_MAX} attributes")
        return {}
    cleaned: dict[str, str] = {}
    for key, value in values.items():
        name = key.strip()
        problem = text_problem(name, max_len=ATTRIBUTE_KEY_MAX, required=True)
        if problem:
            problems.add(f"attributes[{key!r}]", f"the name {problem}")
            continue
        problem = text_problem(value, max_len=ATTRIBUTE_VALUE_MAX, required=False)
        if problem:
            problems.add(f"attributes[{key!r}]", f"the value {problem}")
            continue
        if name in cleaned:
            problems.add(f"attributes[{key!r}]", "is given twice (names are trimmed)")
            continue
        cleaned[name] = value
    return dict(sorted(cleaned.items()))


def validate_new_product(given: ProductInput) -> ProductFields:
    problems = Violations()
    name = _name(given.name, problems)
    description = _description(given.description, problems)
    category_id = _category_id(given.category_id, problems)
    price = money_problems(given.price, "price", problems, required=True)
    stock = _stock(given.stock, problems)
    attributes = _attributes(given.attributes, problems)
    weight = _weight(given.weight_grams, problems)
    problems.check()
    assert price is not None
    return ProductFields(
        name=name,
        description=description,
        category_id=category_id,
        price=price,
        stock=stock,
        attributes=attributes,
        weight_grams=weight,
    )


MUTABLE_PATHS = ("name", "description", "category_id", "price", "stock", "attributes", "weight_grams", "status")
IMMUTABLE_PATHS = ("id", "images", "created_at", "updated_at")


def validate_update(paths: Sequence[str], given: ProductInput) -> dict[str, Any]:
    """The changes a field-mask update asks for, validated: path -> new value."""
    if not paths:
        raise invalid("update_mask", f"name at least one field to change: {', '.join(MUTABLE_PATHS)}")
    problems = Violations("product.")
    changes: dict[str, Any] = {}
    for path in paths:
        if path in IMMUTABLE_PATHS:
            problems.items.append(FieldViolation("update_mask", f"{path!r} cannot be changed here"))
        elif path not in MUTABLE_PATHS:
            problems.items.append(
                FieldViolation("update_mask", f"unknown field {path!r}; allowed: {', '.join(MUTABLE_PATHS)}")
            )
        elif path in changes:
            problems.items.append(FieldViolation("update_mask", f"{path!r} is named twice"))
        elif path == "name":
            changes[path] = _name(given.name, problems)
        elif path == "description":
            changes[path] = _description(given.description, problems)
        elif path == "category_id":
            changes[path] = _category_id(given.category_id, problems)
        elif path == "price":
            changes[path] = money_problems(given.price, "price", problems, required=True)
        elif path == "stock":
            changes[path] = _stock(given.stock, problems)
        elif path == "attributes":
            changes[path] = _attributes(given.attributes, problems)
        elif path == "weight_grams":
            changes[path] = _weight(given.weight_grams, problems)
        elif path == "status":
            if given.status not in STATUSES:
                problems.add("status", "must be PRODUCT_STATUS_ACTIVE or PRODUCT_STATUS_ARCHIVED")
            changes[path] = given.status
    problems.check()
    return changes


# --- images ---------------------------------------------------------------------------------------

IMAGE_TYPES: dict[str, str] = {"image/jpeg": "jpg", "image/png": "png", "image/webp": "webp"}
IMAGE_TOO_LARGE = "IMAGE_TOO_LARGE"
UNSUPPORTED_IMAGE_TYPE = "UNSUPPORTED_IMAGE_TYPE"


def sniff_image_type(content: bytes) -> str | None:
    """The image type named by the content's magic bytes, whatever the file is called."""
    if content.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if content.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if len(content) >= 12 and content[:4] == b"RIFF" and content[8:12] == b"WEBP":
        return "image/webp"
    return None


def check_image(content: bytes, max_bytes: int) -> str:
    """The content type of an acceptable image, or INVALID_ARGUMENT with the reason."""
    if len(content) > max_bytes:
        raise InvalidArgumentError(
            f"the image is {len(content)} bytes; the limit is {max_bytes}",
            violations=[FieldViolation("content", f"must be at most {max_bytes} bytes")],
            reason=IMAGE_TOO_LARGE,
            metadata={"max_bytes": str(max_bytes)},
        )
    found = sniff_image_type(content)
    if found is None:
        raise InvalidArgumentError(
            "the file is not a JPEG, PNG or WebP image (checked by its content, not its name)",
            violations=[FieldViolation("content", "must be a JPEG, PNG or WebP image")],
            reason=UNSUPPORTED_IMAGE_TYPE,
        )
    return found


def clean_filename(name: str) -> str:
    """The uploaded name for display: no path, no control characters, bounded."""
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    base = "".join(ch for ch in base if unicodedata.category(ch) not in ("Cc", "Cs"))
    return base.strip()[:FILENAME_MAX]


def image_key(product_id: str, image_id: str, content_type: str) -> str:
    """The object key: derived from ids only, never from the uploaded name."""
    return f"products/{product_id}/{image_id}.{IMAGE_TYPES[content_type]}"


# --- listing: filters, sort, keyset page tokens ------------------------------------------------------

SortField = Literal["created", "price", "name"]


@dataclass(frozen=True)
class SortSpec:
    field: SortField
    descending: bool


SORTS: dict[str, SortSpec] = {
    "newest": SortSpec("created", True),
    "oldest": SortSpec("created", False),
    "price_asc": SortSpec("price", False),
    "price_desc": SortSpec("price", True),
    "name_asc": SortSpec("name", False),
    "name_desc": SortSpec("name", True),
}
DEFAULT_SORT = "newest"


@dataclass(frozen=True)
class Cursor:
    """Where the previous page ended: its last item's sort key and id."""

    key: int | str
    id: str


@dataclass(frozen=True)
class ProductQuery:
    category_id: str | None
    currency: str | None
    min_price: int | None
    max_price: int | None
    in_stock_only: bool
    terms: tuple[str, ...]
    sort: str
    include_archived: bool
    page_size: int
    after: Cursor | None

    @property
    def sort_spec(self) -> SortSpec:
        return SORTS[self.sort]

    def fingerprint(self) -> str:
        return query_fingerprint(
            "products",
            self.category_id,
            self.currency,
            self.min_price,
            self.max_price,
            self.in_stock_only,
            list(self.terms),
            self.sort,
            self.include_archived,
        )


def page_size(value: int, name: str = "page.page_size") -> int:
    if value < 0:
        raise invalid(name, "must not be negative")
    if value == 0:
        return PAGE_SIZE_DEFAULT
    return min(value, PAGE_SIZE_MAX)


def query_fingerprint(*parts: Any) -> str:
    """Binds a page token to the filters and sort that produced it."""
    raw = json.dumps(parts, separators=(",", ":"), sort_keys=True).encode()
    return hashlib.sha256(raw).hexdigest()[:16]


def encode_page_token(fingerprint: str, cursor: Cursor) -> str:
    raw = json.dumps(
        {"f": fingerprint, "k": cursor.key, "i": cursor.id}, separators=(",", ":"), ensure_ascii=False
    ).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def decode_page_token(token: str, fingerprint: str, key_type: type[int] | type[str]) -> Cursor | None:
    """The cursor in ``token`` (None for an empty token); INVALID_ARGUMENT when it is
    malformed or was made for other filters or another sort order."""
    if not token:
        return None
    name = "page.page_token"
    if len(token) > PAGE_TOKEN_MAX:
        raise invalid(name, "is not a token this service issued")
    try:
        data = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    except (ValueError, binascii.Error, UnicodeDecodeError) as exc:
        raise invalid(name, "is not a token this service issued") from exc
    if not isinstance(data, dict) or data.get("f") != fingerprint:
        raise invalid(name, "belongs to a query with other filters or another sort order; start from the first page")
    key, last_id = data.get("k"), data.get("i")
    if not isinstance(key, (int, str)) or isinstance(key, bool) or not isinstance(key, key_type):
        raise invalid(name, "is not a token this service issued")
    if not isinstance(last_id, str) or id_problem(last_id):
        raise invalid(name, "is not a token this service issued")
    if isinstance(key, int) and abs(key) > 2**63 - 1:
        raise invalid(name, "is not a token this service issued")
    return Cursor(key=key, id=last_id)


def sort_key_type(spec: SortSpec) -> type[int] | type[str]:
    return str if spec.field == "name" else int


def search_text(name: str, description: str) -> str:
    """The normalized text a search query is matched against."""
    return " ".join(normalize(f"{name} {description}").split())


def search_terms(query: str) -> tuple[str, ...]:
    """Words of a search query, normalized and de-duplicated (every one must match)."""
    if len(query) > QUERY_MAX:
        raise invalid("query", f"must be at most {QUERY_MAX} characters")
    if control := control_problem(query):
        raise invalid("query", control)
    terms = tuple(dict.fromkeys(normalize(query).split()))
    if len(terms) > QUERY_TERMS_MAX:
        raise invalid("query", f"at most {QUERY_TERMS_MAX} words")
    return terms


def regex_literal(term: str) -> str:
    """``term`` as a regular expression matching it literally, in a syntax both
    PCRE (MongoDB) and RE2 (FerretDB) read the same way: ASCII punctuation is
    backslash-escaped, everything else stays as it is."""
    return "".join(f"\\{ch}" if ch in string.punctuation else ch for ch in term)


def validate_product_query(
    *,
    category_id: str | None,
    min_price: tuple[int, str] | None,
    max_price: tuple[int, str] | None,
    in_stock_only: bool,
    query: str,
    sort: str,
    include_archived: bool,
    page_size_value: int,
    page_token: str,
) -> ProductQuery:
    problems = Violations()
    category = None
    if category_id is not None:
        problem = id_problem(category_id)
        if problem:
            problems.add("category_id", problem)
        else:
            category = str(uuid.UUID(category_id))
    low = money_problems(min_price, "min_price", problems, required=False)
    high = money_problems(max_price, "max_price", problems, required=False)
    currency = None
    if low and high and low.currency != high.currency:
        problems.add("max_price.currency_code", f"must be the currency of min_price ({low.currency})")
    elif low and high and high.amount_minor < low.amount_minor:
        problems.add("max_price.amount_minor", "must not be below min_price")
    if low or high:
        currency = (low or high).currency  # type: ignore[union-attr]
    try:
        terms = search_terms(query)
    except InvalidArgumentError as exc:
        problems.items.extend(exc.violations)
        terms = ()
    if sort not in SORTS:
        problems.add("sort", f"must be one of {', '.join(SORTS)}")
    try:
        size = page_size(page_size_value)
    except InvalidArgumentError as exc:
        problems.items.extend(exc.violations)
        size = PAGE_SIZE_DEFAULT
    problems.check()
    partial = ProductQuery(
        category_id=category,
        currency=currency,
        min_price=low.amount_minor if low else None,
        max_price=high.amount_minor if high else None,
        in_stock_only=in_stock_only,
        terms=terms,
        sort=sort,
        include_archived=include_archived,
        page_size=size,
        after=None,
    )
    after = decode_page_token(page_token, partial.fingerprint(), sort_key_type(partial.sort_spec))
    return ProductQuery(**{**partial.__dict__, "after": after})


def batch_ids(values: Sequence[str]) -> list[str]:
    """BatchGetProducts ids: 1 to 500, canonical, duplicates dropped (first kept)."""
    if not values:
        raise invalid("product_ids", "name at least one product")
    if len(values) > BATCH_MAX:
        raise invalid("product_ids", f"at most {BATCH_MAX} ids per call")
    problems = Violations()
    found: dict[str, None] = {}
    for index, value in enumerate(values):
        problem = id_problem(value)
        if problem:
            problems.add(f"product_ids[{index}]", problem)
        else:
            found[str(uuid.UUID(value))] = None
    problems.check()
    return list(found)


# --- stock reservations -------------------------------------------------------------------------------

# The states a reservation record goes through.  Every step is one single-document
# update, so a crash between steps leaves a state that says what to finish:
#
#   pending ──all items held──▶ reserved ──▶ committing ──▶ committed
#      │                           │
#      └─an item short: undo──▶ failed     └──▶ releasing ──▶ released
#
# "pending" is written first, before any stock moves; "releasing"/"committing"
# are written before holds are undone/dropped, so a retry or the recovery sweep
# finishes the same transition and never the other one.
PENDING = "pending"
RESERVED = "reserved"
FAILED = "failed"
RELEASING = "releasing"
RELEASED = "released"
COMMITTING = "committing"
COMMITTED = "committed"
RESERVATION_STATES = (PENDING, RESERVED, FAILED, RELEASING, RELEASED, COMMITTING, COMMITTED)

# The state a caller sees (ReservationStatus value names).
STATUS_NAMES: dict[str, str] = {
    PENDING: "RESERVATION_STATUS_UNSPECIFIED",
    RESERVED: "RESERVATION_STATUS_RESERVED",
    FAILED: "RESERVATION_STATUS_RELEASED",
    RELEASING: "RESERVATION_STATUS_RELEASED",
    RELEASED: "RESERVATION_STATUS_RELEASED",
    COMMITTING: "RESERVATION_STATUS_COMMITTED",
    COMMITTED: "RESERVATION_STATUS_COMMITTED",
}

OUT_OF_STOCK = "OUT_OF_STOCK"
PRODUCT_ARCHIVED = "PRODUCT_ARCHIVED"
INVALID_STATE = "INVALID_STATE"
RESERVATION_CONFLICT = "RESERVATION_CONFLICT"


@dataclass(frozen=True)
class ReservationItem:
    product_id: str
    quantity: int


FailureKind = Literal["out_of_stock", "archived", "not_found", "abandoned"]


@dataclass(frozen=True)
class ReservationFailure:
    """Why a reservation could not be made; stored so a repeat gets the same answer."""

    kind: FailureKind
    product_id: str = ""
    requested: int = 0
    available: int = 0

    def error(self) -> DomainError:
        if self.kind == "out_of_stock":
            return FailedPreconditionError(
                f"product {self.product_id} is out of stock: {self.requested} requested, {self.available} available",
                reason=OUT_OF_STOCK,
                metadata={
                    "product_id": self.product_id,
                    "requested": str(self.requested),
                    "available": str(self.available),
                },
            )
        if self.kind == "archived":
            return FailedPreconditionError(
                f"product {self.product_id} is archived and cannot be bought",
                reason=PRODUCT_ARCHIVED,
                metadata={"product_id": self.product_id},
            )
        if self.kind == "not_found":
            return NotFoundError(
                f"product {self.product_id} does not exist",
                violations=[FieldViolation("items.product_id", f"no product {self.product_id}")],
            )
        return AbortedError(
            "an earlier attempt with this reservation id was interrupted and has been rolled back; "
            "reserve again with a new id"
        )


@dataclass(frozen=True)
class Reservation:
    id: str
    items: tuple[ReservationItem, ...]
    state: str
    created_at: datetime
    updated_at: datetime
    failure: ReservationFailure | None = None

    @property
    def status_name(self) -> str:
        return STATUS_NAMES[self.state]

    @property
    def tombstone(self) -> bool:
        """A release of an id never reserved, recorded so a late reserve cannot hold stock."""
        return not self.items


def validate_reservation(
    reservation_id: str, items: Iterable[tuple[str, int]]
) -> tuple[str, tuple[ReservationItem, ...]]:
    rid = parse_id(reservation_id, "reservation_id")
    given = list(items)
    problems = Violations()
    if not given:
        problems.add("items", "name at least one item")
    elif len(given) > RESERVATION_ITEMS_MAX:
        problems.add("items", f"at most {RESERVATION_ITEMS_MAX} items")
    cleaned: list[ReservationItem] = []
    seen: set[str] = set()
    for index, (product_id, quantity) in enumerate(given[:RESERVATION_ITEMS_MAX]):
        problem = id_problem(product_id)
        if problem:
            problems.add(f"items[{index}].product_id", problem)
            continue
        canonical = str(uuid.UUID(product_id))
        if canonical in seen:
            problems.add(f"items[{index}].product_id", "appears twice; give each product once with its total quantity")
        if not 1 <= quantity <= RESERVATION_QUANTITY_MAX:
            problems.add(f"items[{index}].quantity", f"must be between 1 and {RESERVATION_QUANTITY_MAX}")
        seen.add(canonical)
        cleaned.append(ReservationItem(canonical, quantity))
    problems.check()
    return rid, tuple(cleaned)


def same_items(a: Iterable[ReservationItem], b: Iterable[ReservationItem]) -> bool:
    return sorted((i.product_id, i.quantity) for i in a) == sorted((i.product_id, i.quantity) for i in b)


def invalid_state(reservation_id: str, state: str, action: str) -> FailedPreconditionError:
    name = STATUS_NAMES[state]
    shown = {PENDING: "still being made", FAILED: "failed"}.get(state, name.removeprefix("RESERVATION_STATUS_").lower())
    return FailedPreconditionError(
        f"reservation {reservation_id} is {shown}; it cannot be {action}",
        reason=INVALID_STATE,
        metadata={"current_state": name, "reservation_id": reservation_id},
    )


def replay(existing: Reservation, items: Sequence[ReservationItem]) -> Reservation | None:
    """What a ReserveStock repeating an existing reservation id gets: the stored
    reservation, an error, or None when a pending one is to be resumed."""
    if existing.tombstone:
        raise invalid_state(existing.id, RELEASED, "reserved")
    if not same_items(existing.items, items):
        raise AlreadyExistsError(
            f"reservation {existing.id} exists with other items; use a new reservation id",
            reason=RESERVATION_CONFLICT,
            metadata={"reservation_id": existing.id},
        )
    if existing.state == RESERVED:
        return existing
    if existing.state == PENDING:
        return None
    if existing.state == FAILED:
        assert existing.failure is not None
        raise existing.failure.error()
    raise invalid_state(existing.id, existing.state, "reserved again")


ReleasePlan = Literal["record_tombstone", "done", "release"]


def release_plan(existing: Reservation | None) -> ReleasePlan:
    if existing is None:
        return "record_tombstone"
    if existing.state in (COMMITTING, COMMITTED):
        raise invalid_state(existing.id, existing.state, "released")
    if existing.state in (RELEASED, FAILED):
        return "done"
    return "release"  # pending, reserved, or a release interrupted midway


CommitPlan = Literal["done", "commit"]


def commit_plan(reservation_id: str, existing: Reservation | None) -> CommitPlan:
    if existing is None or existing.tombstone:
        if existing is None:
            raise NotFoundError(f"no reservation {reservation_id}")
        raise invalid_state(existing.id, RELEASED, "committed")
    if existing.state == COMMITTED:
        return "done"
    if existing.state in (RESERVED, COMMITTING):
        return "commit"
    raise invalid_state(existing.id, existing.state, "committed")
