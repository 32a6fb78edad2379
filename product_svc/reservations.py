"""The stock reservation saga (order_svc's checkout): ReserveStock, Release,
Commit, and the recovery sweep that finishes what crashed callers left behind.

The document store spans no transaction, so every step is one atomic store call
(a hold on one product, one state transition of the record) and the order of the
steps makes any interleaving of attempts, instances and the sweep safe; see
:mod:`product_svc.domain.reservations` for the state machine.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from datetime import timedelta

from common.validation import require_uuid
from product_svc.domain import reservations as rules
from product_svc.domain.reservations import (
    COMMITTING,
    FAILED,
    PENDING,
    RELEASED,
    RELEASING,
    RESERVED,
    CommitPlan,
    ReleasePlan,
    Reservation,
    ReservationFailure,
    ReservationItem,
)
from product_svc.store import Store, utcnow

log = logging.getLogger("shop.product.reservations")


class Reservations:
    def __init__(self, store: Store) -> None:
        self.store = store

    # -- the use cases

    async def reserve(self, reservation_id: str, items: Iterable[tuple[str, int]]) -> Reservation:
        """Hold every item or none; a repeat with the same id and items answers the
        same result without holding anything twice."""
        rid, wanted = rules.validate_reservation(reservation_id, items)
        return await self.reserve_items(rid, wanted)

    async def reserve_items(self, reservation_id: str, items: Sequence[ReservationItem]) -> Reservation:
        """:meth:`reserve` of items already validated."""
        record = await self.store.reservations.insert(reservation_id, items, PENDING)
        if record is None:
            existing = await self.store.reservations.get(reservation_id)
            assert existing is not None  # records are never deleted
            stored = rules.replay(existing, items)
            if stored is not None:
                return stored
            record = existing  # pending: an attempt crashed or timed out midway; finish it
        return await self._complete(record)

    async def release(self, reservation_id: str) -> Reservation:
        rid = str(require_uuid(reservation_id, "reservation_id", rules.RESERVATION_ID))
        existing = await self.store.reservations.get(rid)
        if rules.release_plan(existing) == ReleasePlan.RECORD_TOMBSTONE:
            # Never reserved (yet): remember the release, so a reserve arriving
            # late with this id cannot hold stock nobody will release.
            tombstone = await self.store.reservations.insert(rid, (), RELEASED)
            if tombstone is not None:
                return tombstone
            existing = await self.store.reservations.get(rid)  # a reserve (another instance) got there first
        assert existing is not None
        if rules.release_plan(existing) == ReleasePlan.DONE:
            return existing
        return await self._finish_release(existing)

    async def commit(self, reservation_id: str) -> Reservation:
        rid = str(require_uuid(reservation_id, "reservation_id", rules.RESERVATION_ID))
        existing = await self.store.reservations.get(rid)
        plan = rules.commit_plan(rid, existing)
        assert existing is not None
        if plan == CommitPlan.DONE:
            return existing
        return await self._finish_commit(existing)

    async def recover(self, older_than: timedelta, *, scan_holds: bool = True) -> int:
        """Finish what crashed callers left behind: a reservation stuck ``pending`` for
        longer than ``older_than`` is rolled back (its holds return to stock) and
        marked failed; one stuck ``releasing``/``committing`` is finished; with
        ``scan_holds``, a hold whose reservation is already over is dropped (only
        concurrent instances racing on one reservation can leave one, so this scan
        over every product runs less often).  Answers how many were fixed."""
        fixed = await self._recover_stuck(older_than)
        if scan_holds:
            fixed += await self._drop_stale_holds()
        return fixed

    # -- the steps

    async def _hold_all(self, record: Reservation) -> ReservationFailure | None:
        for item in record.items:
            if await self.store.stock.hold(record.id, item):
                continue
            failure = rules.hold_failure(item, await self.store.stock.level(record.id, item.product_id))
            if failure is not None:
                return failure
        return None

    async def _unhold_all(self, reservation: Reservation, *, restock: bool) -> None:
        for item in reservation.items:
            await self.store.stock.unhold(item.product_id, reservation.id, restock=restock)

    async def _complete(self, record: Reservation) -> Reservation:
        """Hold each item, then move the record on.  The record moves first and the
        holds are undone after, so an attempt that lost a race (another attempt of
        the same id, a release, the recovery sweep) can never undo the holds of a
        reservation that ended up reserved."""
        failure = await self._hold_all(record)
        if failure is not None:
            if await self.store.reservations.move(record.id, [PENDING], FAILED, failure) is not None:
                await self._unhold_all(record, restock=True)
                raise failure.error()
        else:
            reserved = await self.store.reservations.move(record.id, [PENDING], RESERVED)
            if reserved is not None:
                return reserved
        return await self._settle(record)

    async def _settle(self, record: Reservation) -> Reservation:
        """The record moved on while this attempt held stock: if it ended without its
        holds, what this attempt held goes back; answer from where it is now."""
        current = await self.store.reservations.get(record.id)
        assert current is not None
        if current.state in (FAILED, RELEASING, RELEASED):
            await self._unhold_all(record, restock=True)
        stored = rules.replay(current, record.items)
        assert stored is not None
        return stored

    async def _finish_release(self, record: Reservation) -> Reservation:
        releasing = await self.store.reservations.move(record.id, [PENDING, RESERVED, RELEASING], RELEASING)
        if releasing is None:  # moved on meanwhile; answer from where it is now
            current = await self.store.reservations.get(record.id)
            assert current is not None
            if rules.release_plan(current) == ReleasePlan.DONE:
                return current
            raise rules.invalid_state(record.id, current.state, "released")
        await self._unhold_all(record, restock=True)
        released = await self.store.reservations.move(record.id, [RELEASING], RELEASED)
        return released or releasing

    async def _finish_commit(self, record: Reservation) -> Reservation:
        committing = await self.store.reservations.move(record.id, [RESERVED, COMMITTING], COMMITTING)
        if committing is None:
            current = await self.store.reservations.get(record.id)
            if rules.commit_plan(record.id, current) == CommitPlan.DONE:
                assert current is not None
                return current
            raise AssertionError("unreachable: commit_plan raises for every other state")
        await self._unhold_all(record, restock=False)
        committed = await self.store.reservations.move(record.id, [COMMITTING], rules.COMMITTED)
        return committed or committing

    async def _recover_one(self, record: Reservation) -> bool:
        if record.state == PENDING:
            # Failed first, then undone: an attempt still running sees the record
            # failed and undoes what it holds itself.
            abandoned = ReservationFailure("abandoned")
            if await self.store.reservations.move(record.id, [PENDING], FAILED, abandoned) is None:
                return False
            await self._unhold_all(record, restock=True)
        elif record.state == RELEASING:
            await self._finish_release(record)
        elif record.state == COMMITTING:
            await self._finish_commit(record)
        else:
            return False
        return True

    async def _recover_stuck(self, older_than: timedelta) -> int:
        cutoff = utcnow() - older_than
        fixed = 0
        for found in await self.store.reservations.stuck(rules.UNFINISHED, cutoff):
            record = await self.store.reservations.get(found.id)
            if record is None or record.updated_at >= cutoff or not await self._recover_one(record):
                continue
            log.warning("recovered an interrupted reservation", extra={"reservation_id": record.id})
            fixed += 1
        return fixed

    async def _drop_stale_holds(self) -> int:
        fixed = 0
        for product_id, reservation_ids in await self.store.stock.held():
            for reservation_id in reservation_ids:
                record = await self.store.reservations.get(reservation_id)
                if record is None or record.state not in rules.OVER:
                    continue
                restock = record.state != rules.COMMITTED
                if not await self.store.stock.unhold(product_id, reservation_id, restock=restock):
                    continue  # another instance (or its own caller) dropped it meanwhile
                log.warning(
                    "dropped a stale stock hold", extra={"reservation_id": reservation_id, "product_id": product_id}
                )
                fixed += 1
        return fixed
