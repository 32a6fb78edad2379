"""The rules and aggregates of orders: plain Python, no I/O.

The state machine, the order and payment aggregates, order validation, pricing
and shipping, the idempotency-key rules, and guest cart tokens.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import string
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum

from common.errors import (
    FailedPreconditionError,
    FieldViolation,
    InvalidArgumentError,
    NotFoundError,
    UnauthenticatedError,
)
from common.money import Money, MoneyError
from common.validation import Address, Violations, control_problem, invalid, parse_uuid, validate_address


class Status(StrEnum):
    PENDING_PAYMENT = "PENDING_PAYMENT"
    PAID = "PAID"
    SHIPPED = "SHIPPED"
    DELIVERED = "DELIVERED"
    CANCELLED = "CANCELLED"


# Every legal transition; anything else is refused naming the current state.
TRANSITIONS: dict[Status, frozenset[Status]] = {
    Status.PENDING_PAYMENT: frozenset({Status.PAID, Status.CANCELLED}),
    Status.PAID: frozenset({Status.SHIPPED, Status.CANCELLED}),
    Status.SHIPPED: frozenset({Status.DELIVERED}),
    Status.DELIVERED: frozenset(),
    Status.CANCELLED: frozenset(),
}


class CancelReason(StrEnum):
    CUSTOMER = "CUSTOMER"
    ADMIN = "ADMIN"
    EXPIRED = "EXPIRED"


class ShippingMethod(StrEnum):
    STANDARD = "STANDARD"
    EXPRESS = "EXPRESS"


def now() -> datetime:
    return datetime.now(UTC)


def check_transition(current: Status, target: Status) -> None:
    if target not in TRANSITIONS[current]:
        raise FailedPreconditionError(
            f"the order is {current.value}; it cannot become {target.value}",
            reason="INVALID_STATE",
            metadata={"current_state": f"ORDER_STATUS_{current.value}"},
        )


# --- placing an order -----------------------------------------------------------------


@dataclass(frozen=True)
class Item:
    product_id: str
    quantity: int


@dataclass(frozen=True)
class Limits:
    max_items: int = 100
    max_line_quantity: int = 100


def validate_items(items: Sequence[Item], limits: Limits, path: str = "items") -> list[Item]:
    violations = Violations()
    if not items:
        violations.add(path, "name at least one product")
    if len(items) > limits.max_items:
        violations.add(path, f"at most {limits.max_items} different products per order")
    seen: set[str] = set()
    cleaned = []
    for index, item in enumerate(items):
        where = f"{path}[{index}]"
        product_id = item.product_id.strip()
        if parse_uuid(product_id) is None:
            violations.add(f"{where}.product_id", "must be a product id (UUID)")
        elif product_id in seen:
            violations.add(f"{where}.product_id", "appears twice; send one line per product with its total quantity")
        seen.add(product_id)
        if not 1 <= item.quantity <= limits.max_line_quantity:
            violations.add(f"{where}.quantity", f"must be between 1 and {limits.max_line_quantity}")
        cleaned.append(Item(product_id, item.quantity))
    violations.check()
    return cleaned


def validate_shipping_address(address: Address, path: str = "shipping_address") -> Address:
    violations = Violations()
    cleaned = validate_address(address, path, violations)
    violations.check()
    return cleaned


@dataclass(frozen=True)
class CatalogEntry:
    """What product_svc says about a product right now."""

    product_id: str
    name: str
    price: Money
    active: bool
    stock: int = 0
    weight_grams: int = 0
    image_url: str = ""


@dataclass(frozen=True)
class Line:
    product_id: str
    product_name: str
    quantity: int
    unit_price: Money
    line_total: Money


# Delivery estimate in business days, per method.
DELIVERY_DAYS = {ShippingMethod.STANDARD: (3, 5), ShippingMethod.EXPRESS: (1, 2)}


@dataclass(frozen=True)
class ShippingRule:
    """Standard shipping is free from ``free_over_minor`` of subtotal, express
    never is; a parcel over ``heavy_grams`` pays ``heavy_surcharge_minor``."""

    standard_minor: int = 499
    express_minor: int = 1499
    free_over_minor: int = 5000
    heavy_grams: int = 10_000
    heavy_surcharge_minor: int = 999

    def quote(self, method: ShippingMethod, subtotal: Money, weight_grams: int = 0) -> Money:
        surcharge = self.heavy_surcharge_minor if weight_grams > self.heavy_grams else 0
        if method is ShippingMethod.EXPRESS:
            return Money(self.express_minor + surcharge, subtotal.currency)
        if subtotal.amount_minor >= self.free_over_minor:
            return Money(surcharge, subtotal.currency)
        return Money(self.standard_minor + surcharge, subtotal.currency)


@dataclass(frozen=True)
class Priced:
    lines: list[Line]
    subtotal: Money
    shipping: Money
    total: Money

    @property
    def currency(self) -> str:
        return self.total.currency


def price(
    items: Sequence[Item], catalog: dict[str, CatalogEntry], method: ShippingMethod, rule: ShippingRule
) -> Priced:
    """Lines and totals from the catalog's current prices (never the client's)."""
    missing = [item.product_id for item in items if item.product_id not in catalog]
    if missing:
        raise NotFoundError(
            f"no such product: {', '.join(missing)}", reason="PRODUCT_NOT_FOUND", metadata={"product_id": missing[0]}
        )
    archived = [item.product_id for item in items if not catalog[item.product_id].active]
    if archived:
        raise FailedPreconditionError(
            f"product {archived[0]} is no longer sold", reason="PRODUCT_ARCHIVED", metadata={"product_id": archived[0]}
        )
    currencies = sorted({catalog[item.product_id].price.currency for item in items})
    if len(currencies) > 1:
        raise FailedPreconditionError(
            f"these products are priced in different currencies ({', '.join(currencies)}); order them separately",
            reason="MIXED_CURRENCIES",
        )
    lines = []
    for item in items:
        entry = catalog[item.product_id]
        lines.append(Line(item.product_id, entry.name, item.quantity, entry.price, entry.price.times(item.quantity)))
    try:
        subtotal = Money.zero(currencies[0])
        for line in lines:
            subtotal = subtotal + line.line_total
        weight = sum(catalog[item.product_id].weight_grams * item.quantity for item in items)
        shipping = rule.quote(method, subtotal, weight)
        total = subtotal + shipping
    except MoneyError as exc:
        raise InvalidArgumentError(f"the order total is out of range: {exc}") from exc
    return Priced(lines=lines, subtotal=subtotal, shipping=shipping, total=total)


# --- the aggregates -------------------------------------------------------------------


@dataclass(frozen=True)
class Caller:
    user_id: uuid.UUID
    admin: bool = False


class PaymentStatus(StrEnum):
    APPROVED = "APPROVED"
    DECLINED = "DECLINED"
    FAILED = "FAILED"
    REFUNDED = "REFUNDED"
    # The processor has not said yet: its answer was lost, or it confirms later (a webhook).
    PENDING = "PENDING"


@dataclass
class PaymentRecord:
    id: uuid.UUID
    order_id: uuid.UUID
    amount: Money
    status: PaymentStatus
    decline_reason: str | None
    provider_reference: str
    created_at: datetime
    refunded_at: datetime | None
    processor: str = "test"


@dataclass
class OrderRecord:
    id: uuid.UUID
    user_id: uuid.UUID
    status: Status
    currency: str
    subtotal: Money
    shipping: Money
    total: Money
    shipping_method: ShippingMethod
    shipping_address: Address
    carrier: str | None
    tracking_number: str | None
    cancel_reason: CancelReason | None
    cancel_note: str | None
    refunded: bool
    created_at: datetime
    updated_at: datetime
    expires_at: datetime | None
    paid_at: datetime | None
    shipped_at: datetime | None
    delivered_at: datetime | None
    cancelled_at: datetime | None
    lines: list[Line] = field(default_factory=list)
    payments: list[PaymentRecord] = field(default_factory=list)

    @property
    def approved_payment(self) -> PaymentRecord | None:
        return next((p for p in self.payments if p.status is PaymentStatus.APPROVED), None)


@dataclass(frozen=True)
class OrderQuery:
    """Which orders a list shows (newest first)."""

    user_id: uuid.UUID | None = None
    statuses: tuple[Status, ...] = ()
    created_after: datetime | None = None
    created_before: datetime | None = None


class Abandoned(StrEnum):
    """What giving up an order that was not written did to its reservation's note."""

    RELEASE_QUEUED = "RELEASE_QUEUED"  # the note was taken and the release queued
    NO_NOTE = "NO_NOTE"  # no note: the order was written after all, or the sweeper took it
    UNSETTLED = "UNSETTLED"  # the database could not say; the sweeper settles it


# --- shipping an order ------------------------------------------------------------------


def validate_shipment(carrier: str, tracking_number: str) -> tuple[str, str]:
    violations = Violations()
    cleaned = []
    for name, given in (("carrier", carrier), ("tracking_number", tracking_number)):
        value = given.strip()
        if not 1 <= len(value) <= 100:
            violations.add(name, "must be 1 to 100 characters")
        elif any(ch not in string.printable or ch in "\r\n\t\x0b\x0c" for ch in value):
            violations.add(name, "must be printable characters")
        cleaned.append(value)
    violations.check()
    return cleaned[0], cleaned[1]


def validate_note(note: str, path: str = "note") -> str:
    note = note.strip()
    if len(note) > 500:
        raise invalid(FieldViolation(path, "must be at most 500 characters"))
    if control := control_problem(note, multiline=True):
        raise invalid(FieldViolation(path, control))
    return note


# --- idempotency ---------------------------------------------------------------------------

IDEMPOTENCY_KEY_MAX = 255


def validate_idempotency_key(key: str, path: str = "idempotency_key") -> str:
    if len(key) > IDEMPOTENCY_KEY_MAX or any(not ch.isprintable() for ch in key):
        raise invalid(FieldViolation(path, f"must be 1 to {IDEMPOTENCY_KEY_MAX} printable characters"))
    return key


def fingerprint(request_bytes: bytes) -> str:
    """What a repeat with the same key must match: the request without its key."""
    return hashlib.sha256(request_bytes).hexdigest()


class KeyReusedError(InvalidArgumentError):
    """The same idempotency key with a different request (the edge answers 422)."""


def key_reused() -> KeyReusedError:
    return KeyReusedError(
        "this Idempotency-Key was already used with a different request; use a new key for a new request",
        reason="IDEMPOTENCY_KEY_REUSED",
    )


@dataclass(frozen=True)
class Keyed:
    """An idempotency key with the fingerprint of its request."""

    key: str
    request_hash: str


@dataclass(frozen=True)
class KeyRef:
    """Where an idempotency key lives: one buyer's key in one scope ("create", "checkout", "pay:<order>")."""

    user_id: uuid.UUID
    scope: str
    key: str


@dataclass(frozen=True)
class StoredKey:
    """What an idempotency key's row holds."""

    request_hash: str
    resource_id: uuid.UUID
    done: bool
    response: bytes | None
    locked_until: datetime


class ClaimVerdict(StrEnum):
    """What a request finds when its key is already there."""

    MISMATCH = "MISMATCH"  # the key was used for another request
    REPLAY = "REPLAY"  # that request completed: answer with its response
    BUSY = "BUSY"  # that request is running right now
    TAKE_OVER = "TAKE_OVER"  # its holder outlived its lease (it died, or is too slow to wait for)


def judge_claim(stored: StoredKey, request_hash: str, moment: datetime) -> ClaimVerdict:
    if stored.request_hash != request_hash:
        return ClaimVerdict.MISMATCH
    if stored.done:
        return ClaimVerdict.REPLAY
    if stored.locked_until > moment:
        return ClaimVerdict.BUSY
    return ClaimVerdict.TAKE_OVER


def replay_of(stored: StoredKey | None, request_hash: str) -> bytes | None:
    """The response of a completed request with the key (None: there is none);
    KeyReusedError when the key was used for another request."""
    if stored is None or not stored.done:
        return None
    if stored.request_hash != request_hash:
        raise key_reused()
    return bytes(stored.response or b"")


@dataclass(frozen=True)
class Claim:
    """What a request holding an idempotency key must do."""

    resource_id: uuid.UUID
    replay: bytes | None = None  # the stored response of a completed request
    busy: bool = False  # another request with this key is running right now
    noted: bool = False  # the pending-reservation note for resource_id was written with the claim
    holder: uuid.UUID | None = None  # this claim's token (None: no key, a replay, or busy)
    ref: KeyRef | None = None  # the key claimed (None: the request named none)

    @property
    def held(self) -> KeyRef | None:
        """The key this claim holds (None: it holds none)."""
        return self.ref if self.holder is not None else None


# --- guest carts ---------------------------------------------------------------------------


@dataclass(frozen=True)
class CartRef:
    """The cart a checkout orders, as of one generation (order_svc/store/carts.py)."""

    owner: str
    generation: str


@dataclass(frozen=True)
class StoredLine:
    """A cart line as kept: the product, how many, and when it was first added (ms)."""

    product_id: str
    quantity: int
    added_ms: int


class CheckoutLock(StrEnum):
    """What a checkout finds at its cart's checkout lock."""

    TAKEN = "TAKEN"  # this checkout took it
    HELD = "HELD"  # this checkout's holder has it already (a repeat of the same request)
    BUSY = "BUSY"  # another checkout has it


class BadCartTokenError(UnauthenticatedError):
    pass


def bad_cart_token(why: str) -> BadCartTokenError:
    return BadCartTokenError(f"the guest cart token is {why}; start a new cart", reason="INVALID_CART_TOKEN")


def sign_cart_token(secret: bytes, guest_id: uuid.UUID, expires: int) -> str:
    """An opaque guest cart token: the cart id and its expiry, HMAC-signed."""
    body = guest_id.bytes + expires.to_bytes(8, "big")
    mac = hmac.new(secret, body, hashlib.sha256).digest()[:16]
    return base64.urlsafe_b64encode(body + mac).decode().rstrip("=")


def verify_cart_token(secret: bytes, token: str, now: float) -> tuple[uuid.UUID, int]:
    """(guest cart id, expiry) of a token; BadCartTokenError when forged, malformed or expired."""
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except (ValueError, binascii.Error):
        raise bad_cart_token("malformed") from None
    if len(raw) != 40:
        raise bad_cart_token("malformed")
    body, mac = raw[:24], raw[24:]
    if not hmac.compare_digest(mac, hmac.new(secret, body, hashlib.sha256).digest()[:16]):
        raise bad_cart_token("not one of ours")
    expires = int.from_bytes(body[16:], "big")
    if expires <= now:
        raise bad_cart_token("expired")
    return uuid.UUID(bytes=body[:16]), expires


def validate_quantity(quantity: int, limit: int, path: str = "quantity") -> int:
    if not 1 <= quantity <= limit:
        raise invalid(FieldViolation(path, f"must be between 1 and {limit}"))
    return quantity


def out_of_stock(product_id: str, requested: int, available: int) -> FailedPreconditionError:
    return FailedPreconditionError(
        f"only {available} of product {product_id} in stock, {requested} wanted",
        reason="OUT_OF_STOCK",
        metadata={"product_id": product_id, "requested": str(requested), "available": str(available)},
    )
