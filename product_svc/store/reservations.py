"""The ``reservations`` collection:
``{_id: reservation_id, items: [{product_id, quantity}], product_ids, state,
failure, created_at, updated_at}``.

The record (written first, as ``pending``) says which holds a reservation should
have; see :mod:`product_svc.domain.reservations` for its state machine.  Every
method is one atomic step; :mod:`product_svc.reservations` composes them.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from pymongo import ASCENDING
from pymongo.errors import DuplicateKeyError

from product_svc.domain.reservations import Reservation, ReservationFailure, ReservationItem
from product_svc.store.mongo import Collection, Doc, aware, mongo_errors, update_where, utcnow


def _failure_doc(failure: ReservationFailure | None) -> dict[str, Any] | None:
    if failure is None:
        return None
    return {
        "kind": failure.kind,
        "product_id": failure.product_id,
        "requested": failure.requested,
        "available": failure.available,
    }


def _failure_of(doc: Doc | None) -> ReservationFailure | None:
    if not doc:
        return None
    return ReservationFailure(
        kind=doc["kind"],
        product_id=doc.get("product_id", ""),
        requested=int(doc.get("requested", 0)),
        available=int(doc.get("available", 0)),
    )


def reservation_of(doc: Doc) -> Reservation:
    return Reservation(
        id=doc["_id"],
        items=tuple(ReservationItem(item["product_id"], int(item["quantity"])) for item in doc.get("items", ())),
        state=doc["state"],
        created_at=aware(doc["created_at"]),
        updated_at=aware(doc["updated_at"]),
        failure=_failure_of(doc.get("failure")),
    )


def reservation_doc(reservation: Reservation) -> dict[str, Any]:
    return {
        "_id": reservation.id,
        "items": [{"product_id": i.product_id, "quantity": i.quantity} for i in reservation.items],
        "product_ids": [i.product_id for i in reservation.items],
        "state": reservation.state,
        "failure": _failure_doc(reservation.failure),
        "created_at": reservation.created_at,
        "updated_at": reservation.updated_at,
    }


class ReservationStore:
    def __init__(self, collection: Collection) -> None:
        self.collection = collection

    async def ensure_indexes(self) -> None:
        await self.collection.create_index([("state", ASCENDING), ("updated_at", ASCENDING)])

    @mongo_errors
    async def insert(self, reservation_id: str, items: Sequence[ReservationItem], state: str) -> Reservation | None:
        """A new record; None when one with this id exists already (records are never deleted)."""
        now = utcnow()
        record = Reservation(reservation_id, tuple(items), state, created_at=now, updated_at=now)
        try:
            await self.collection.insert_one(reservation_doc(record))
        except DuplicateKeyError:
            return None
        return record

    @mongo_errors
    async def get(self, reservation_id: str) -> Reservation | None:
        doc = await self.collection.find_one({"_id": reservation_id})
        return reservation_of(doc) if doc else None

    @mongo_errors
    async def move(
        self,
        reservation_id: str,
        from_states: Sequence[str],
        to_state: str,
        failure: ReservationFailure | None = None,
    ) -> Reservation | None:
        """One state transition, only from the given states; None when the record was elsewhere."""
        update: dict[str, Any] = {"state": to_state, "updated_at": utcnow()}
        if failure is not None:
            update["failure"] = _failure_doc(failure)
        doc = await update_where(
            self.collection, reservation_id, {"state": {"$in": list(from_states)}}, {"$set": update}, after=True
        )
        return reservation_of(doc) if doc else None

    @mongo_errors
    async def stuck(self, states: Sequence[str], before: datetime) -> list[Reservation]:
        """The records in one of ``states`` last changed before ``before``."""
        found = self.collection.find({"state": {"$in": list(states)}, "updated_at": {"$lt": before}})
        return [reservation_of(doc) for doc in await found.to_list()]
