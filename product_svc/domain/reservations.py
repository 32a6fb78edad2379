"""Stock reservations: their input, their state machine, and the answers a
repeated, released or committed reservation gets.

The states a reservation record goes through.  Every step is one single-document
update, so a crash between steps leaves a state that says what to finish::

  pending ──all items held──▶ reserved ──▶ committing ──▶ committed
     │                           │
     └─an item short: undo──▶ failed     └──▶ releasing ──▶ released

"pending" is written first, before any stock moves; "releasing"/"committing"
are written before holds are undone/dropped, so a retry or the recovery sweep
finishes the same transition and never the other one.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Literal

from common.errors import (
    AbortedError,
    AlreadyExistsError,
    DomainError,
    FailedPreconditionError,
    FieldViolation,
    NotFoundError,
)
from common.validation import Violations, require_uuid, uuid_problem
from product_svc.domain.products import ACTIVE, INVALID_STATE, PRODUCT_ID

RESERVATION_ITEMS_MAX = 100
# Units of one product in one reservation.  order_svc caps an order line far lower
# (SHOP_MAX_LINE_QUANTITY, 100 by default); this backstop keeps any one caller from
# holding a product's whole stock in a single line.
RESERVATION_QUANTITY_MAX = 10_000
RESERVATION_ID = "a reservation id"

PENDING = "pending"
RESERVED = "reserved"
FAILED = "failed"
RELEASING = "releasing"
RELEASED = "released"
COMMITTING = "committing"
COMMITTED = "committed"
# A record in one of these is an interrupted transition the recovery sweep finishes.
UNFINISHED = (PENDING, RELEASING, COMMITTING)
# A record in one of these holds no stock any more.
OVER = (FAILED, RELEASED, COMMITTED)

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


@dataclass(frozen=True)
class StockLevel:
    """A product as a hold that did not go through found it."""

    stock: int
    status: str
    held: bool  # by this reservation already


def hold_failure(item: ReservationItem, level: StockLevel | None) -> ReservationFailure | None:
    """Why a hold of ``item`` was not taken; None when it is held (by an earlier attempt)."""
    if level is None:
        return ReservationFailure("not_found", item.product_id)
    if level.held:
        return None
    if level.status != ACTIVE:
        return ReservationFailure("archived", item.product_id)
    return ReservationFailure("out_of_stock", item.product_id, requested=item.quantity, available=level.stock)


def _items(given: Sequence[tuple[str, int]], problems: Violations) -> tuple[ReservationItem, ...]:
    cleaned: list[ReservationItem] = []
    seen: set[str] = set()
    for index, (product_id, quantity) in enumerate(given[:RESERVATION_ITEMS_MAX]):
        path = f"items[{index}].product_id"
        problem = uuid_problem(product_id, PRODUCT_ID)
        if problem:
            problems.add(path, problem)
            continue
        canonical = str(require_uuid(product_id, path, PRODUCT_ID))
        if canonical in seen:
            problems.add(path, "appears twice; give each product once with its total quantity")
        if not 1 <= quantity <= RESERVATION_QUANTITY_MAX:
            problems.add(f"items[{index}].quantity", f"must be between 1 and {RESERVATION_QUANTITY_MAX}")
        seen.add(canonical)
        cleaned.append(ReservationItem(canonical, quantity))
    return tuple(cleaned)


def validate_reservation(
    reservation_id: str, items: Iterable[tuple[str, int]]
) -> tuple[str, tuple[ReservationItem, ...]]:
    rid = str(require_uuid(reservation_id, "reservation_id", RESERVATION_ID))
    given = list(items)
    problems = Violations()
    if not given:
        problems.add("items", "name at least one item")
    elif len(given) > RESERVATION_ITEMS_MAX:
        problems.add("items", f"at most {RESERVATION_ITEMS_MAX} items")
    cleaned = _items(given, problems)
    problems.check()
    return rid, cleaned


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


class ReleasePlan(StrEnum):
    RECORD_TOMBSTONE = "record_tombstone"  # never reserved (yet): remember the release
    DONE = "done"
    RELEASE = "release"


def release_plan(existing: Reservation | None) -> ReleasePlan:
    if existing is None:
        return ReleasePlan.RECORD_TOMBSTONE
    if existing.state in (COMMITTING, COMMITTED):
        raise invalid_state(existing.id, existing.state, "released")
    if existing.state in (RELEASED, FAILED):
        return ReleasePlan.DONE
    return ReleasePlan.RELEASE  # pending, reserved, or a release interrupted midway


class CommitPlan(StrEnum):
    DONE = "done"
    COMMIT = "commit"


def commit_plan(reservation_id: str, existing: Reservation | None) -> CommitPlan:
    if existing is None:
        raise NotFoundError(f"no reservation {reservation_id}")
    if existing.tombstone:
        raise invalid_state(existing.id, RELEASED, "committed")
    if existing.state == COMMITTED:
        return CommitPlan.DONE
    if existing.state in (RESERVED, COMMITTING):
        return CommitPlan.COMMIT
    raise invalid_state(existing.id, existing.state, "committed")
