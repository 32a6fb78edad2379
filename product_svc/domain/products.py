"""Products: their fields, validated and normalized (prices included), field-mask
updates, batch ids and the rule that keeps held stock from being deleted."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from common.errors import FailedPreconditionError, FieldViolation
from common.money import CURRENCY_EXPONENTS, MAX_AMOUNT_MINOR, Money, MoneyError
from common.validation import Violations, invalid, require_uuid, uuid_problem
from product_svc.domain.categories import CATEGORY_ID
from product_svc.domain.images import Image
from product_svc.domain.text import text_problem

INT32_MAX = 2**31 - 1
PRODUCT_NAME_MAX = 200
DESCRIPTION_MAX = 10_000
ATTRIBUTES_MAX = 50
ATTRIBUTE_KEY_MAX = 64
ATTRIBUTE_VALUE_MAX = 500
WEIGHT_MAX_GRAMS = 10_000_000  # ten tonnes per unit is a freight, not a parcel
BATCH_MAX = 500
PRODUCT_ID = "a product id"
INVALID_STATE = "INVALID_STATE"

ACTIVE = "active"
ARCHIVED = "archived"
STATUSES = (ACTIVE, ARCHIVED)


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


def _name(value: str, problems: Violations) -> str:
    value = value.strip()
    problem = text_problem(value, max_len=PRODUCT_NAME_MAX, required=True)
    if problem:
        problems.add("name", problem)
    return value


def _description(value: str, problems: Violations) -> str:
    problem = text_problem(value, max_len=DESCRIPTION_MAX, required=False, allow_newlines=True)
    if problem:
        problems.add("description", problem)
    return value


def _category_id(value: str, problems: Violations) -> str:
    problem = uuid_problem(value, CATEGORY_ID)
    if problem:
        problems.add("category_id", problem)
        return value
    return str(require_uuid(value, "category_id", CATEGORY_ID))


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


def _attribute_problem(name: str, value: str) -> str | None:
    problem = text_problem(name, max_len=ATTRIBUTE_KEY_MAX, required=True)
    if problem:
        return f"the name {problem}"
    problem = text_problem(value, max_len=ATTRIBUTE_VALUE_MAX, required=False)
    if problem:
        return f"the value {problem}"
    return None


def _attributes(values: Mapping[str, str], problems: Violations) -> dict[str, str]:
    if len(values) > ATTRIBUTES_MAX:
        problems.add("attributes", f"at most {ATTRIBUTES_MAX} attributes")
        return {}
    cleaned: dict[str, str] = {}
    for key, value in values.items():
        name = key.strip()
        problem = _attribute_problem(name, value)
        if problem is None and name in cleaned:
            problem = "is given twice (names are trimmed)"
        if problem:
            problems.add(f"attributes[{key!r}]", problem)
            continue
        cleaned[name] = value
    return dict(sorted(cleaned.items()))


def _status(value: str | None, problems: Violations) -> str | None:
    if value not in STATUSES:
        problems.add("status", "must be PRODUCT_STATUS_ACTIVE or PRODUCT_STATUS_ARCHIVED")
    return value


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


# Each changeable path and how its new value is read (and checked) from the input.
_CHANGES: dict[str, Callable[[ProductInput, Violations], Any]] = {
    "name": lambda given, problems: _name(given.name, problems),
    "description": lambda given, problems: _description(given.description, problems),
    "category_id": lambda given, problems: _category_id(given.category_id, problems),
    "price": lambda given, problems: money_problems(given.price, "price", problems, required=True),
    "stock": lambda given, problems: _stock(given.stock, problems),
    "attributes": lambda given, problems: _attributes(given.attributes, problems),
    "weight_grams": lambda given, problems: _weight(given.weight_grams, problems),
    "status": lambda given, problems: _status(given.status, problems),
}
MUTABLE_PATHS = tuple(_CHANGES)
IMMUTABLE_PATHS = ("id", "images", "created_at", "updated_at")


def _mask_problem(path: str, seen: Mapping[str, Any]) -> str | None:
    if path in IMMUTABLE_PATHS:
        return f"{path!r} cannot be changed here"
    if path not in _CHANGES:
        return f"unknown field {path!r}; allowed: {', '.join(MUTABLE_PATHS)}"
    if path in seen:
        return f"{path!r} is named twice"
    return None


def validate_update(paths: Sequence[str], given: ProductInput) -> dict[str, Any]:
    """The changes a field-mask update asks for, validated: path -> new value."""
    if not paths:
        raise invalid(FieldViolation("update_mask", f"name at least one field to change: {', '.join(MUTABLE_PATHS)}"))
    problems = Violations("product.")
    changes: dict[str, Any] = {}
    for path in paths:
        problem = _mask_problem(path, changes)
        if problem:
            problems.items.append(FieldViolation("update_mask", problem))
        else:
            changes[path] = _CHANGES[path](given, problems)
    problems.check()
    return changes


def batch_ids(values: Sequence[str]) -> list[str]:
    """BatchGetProducts ids: 1 to 500, canonical, duplicates dropped (first kept)."""
    if not values:
        raise invalid(FieldViolation("product_ids", "name at least one product"))
    if len(values) > BATCH_MAX:
        raise invalid(FieldViolation("product_ids", f"at most {BATCH_MAX} ids per call"))
    problems = Violations()
    found: dict[str, None] = {}
    for index, value in enumerate(values):
        path = f"product_ids[{index}]"
        problem = uuid_problem(value, PRODUCT_ID)
        if problem:
            problems.add(path, problem)
        else:
            found[str(require_uuid(value, path, PRODUCT_ID))] = None
    problems.check()
    return list(found)


def open_reservations(product: Product) -> FailedPreconditionError:
    """Why a product with stock held by reservations is not deleted."""
    return FailedPreconditionError(
        f"product {product.id} has {len(product.holds) or 'open'} open stock reservation(s); "
        "archive it instead, or delete it once they are committed or released",
        reason=INVALID_STATE,
        metadata={"current_state": "OPEN_RESERVATIONS"},
    )
