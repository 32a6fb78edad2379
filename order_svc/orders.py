"""The use cases of order_svc: the checkout saga, payment, the state changes,
and the background work that keeps stock consistent.

Stock is never lost or leaked:

* before ReserveStock the order id is noted in ``pending_reservations``; the
  transaction that writes the order removes that note, and a reservation whose
  note outlives ``orphan_reservation_after`` (the order was never written:
  a failure, a crash, product_svc unreachable while compensating) is released
  by the sweeper;
* releases and commits needed by a state change (cancel, expiry, shipping) are
  written as ``stock_actions`` in the same transaction and retried until
  product_svc confirms them (both calls are idempotent there);
* a retry that takes over an Idempotency-Key whose holder outlived its lease
  orders under a fresh id, so two holders never share a reservation, and only
  the holder the key names may complete it (``Store.claim_key``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from prometheus_client import Counter
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection

from common.errors import (
    Aborted,
    DomainError,
    FailedPrecondition,
    FieldViolation,
    NotFound,
    PermissionDenied,
    Unavailable,
)
from common.events import ORDERS_TOPIC
from common.outbox import add_event
from common.validation import Address, invalid
from order_svc import domain, events
from order_svc.domain import CancelReason, Item, ShippingMethod, Status
from order_svc.payments import Outcome, Processor, UnknownPaymentMethod
from order_svc.products import ProductClient
from order_svc.settings import OrderSettings
from order_svc.store import Claim, OrderRecord, PaymentRecord, PaymentStatus, Store, now, outbox

log = logging.getLogger("shop.order")

ORDERS_CREATED = Counter("orders_created_total", "Orders placed")
PAYMENTS = Counter("order_payments_total", "Payment attempts by outcome", ["outcome"])
STOCK_ACTIONS = Counter("order_stock_actions_total", "Reservation releases/commits sent to product_svc", ["action"])

Render = Callable[[OrderRecord], bytes]


@dataclass(frozen=True)
class Caller:
    user_id: uuid.UUID
    admin: bool = False


@dataclass(frozen=True)
class Keyed:
    """An idempotency key with the fingerprint of its request."""

    key: str
    request_hash: str


class Orders:
    def __init__(self, store: Store, products: ProductClient, processor: Processor, settings: OrderSettings) -> None:
        self.store = store
        self.products = products
        self.processor = processor
        self.settings = settings
        self.limits = domain.Limits(settings.max_items, settings.max_line_quantity)
        self.rule = domain.ShippingRule(
            settings.shipping_standard_minor,
            settings.shipping_express_minor,
            settings.free_shipping_over_minor,
            settings.heavy_parcel_grams,
            settings.heavy_surcharge_minor,
        )

    # --- idempotency -------------------------------------------------------------------------

    async def _claim(self, caller: Caller, scope: str, keyed: Keyed | None, *, reserving: bool = False) -> Claim:
        if keyed is None:
            return Claim(resource_id=uuid.uuid4())
        deadline = time.monotonic() + self.settings.idempotency_lease_seconds
        while True:
            claim = await self.store.claim_key(
                caller.user_id, scope, keyed.key, keyed.request_hash, uuid.uuid4(),
                self.settings.idempotency_lease_seconds, reserving=reserving,
            )  # fmt: skip
            if claim == "mismatch":
                raise domain.key_reused()
            assert isinstance(claim, Claim)
            if not claim.busy:
                return claim
            if time.monotonic() > deadline:
                raise Aborted("a request with this Idempotency-Key is still being processed; retry shortly")
            await asyncio.sleep(0.05)  # a concurrent repeat (a double click): wait for the first

    async def replay(self, caller: Caller, scope: str, keyed: Keyed | None) -> bytes | None:
        """The first response of a completed request with this key, before any other check."""
        if keyed is None:
            return None
        found = await self.store.completed(caller.user_id, scope, keyed.key, keyed.request_hash)
        if found == "mismatch":
            raise domain.key_reused()
        return found if isinstance(found, bytes) else None

    # --- placing an order ------------------------------------------------------------------------

    async def create(
        self,
        caller: Caller,
        items: list[Item],
        address: Address,
        method: ShippingMethod,
        keyed: Keyed | None,
        render: Render,
        scope: str = "create",
    ) -> OrderRecord | bytes:
        """The order (or, for a repeated key, the first response's bytes).
        CreateOrder and cart checkout both come here, each with its own key scope."""
        items = domain.validate_items(items, self.limits)
        address = domain.validate_shipping_address(address)
        claim = await self._claim(caller, scope, keyed, reserving=True)
        if claim.replay is not None:
            return claim.replay
        try:
            order = await self._place(caller, claim, items, address, method, keyed, render, scope)
        except BaseException:
            if keyed is not None:
                await self.store.release_key(caller.user_id, scope, keyed.key, claim.resource_id)
            raise
        ORDERS_CREATED.inc()
        return order

    async def _place(
        self,
        caller: Caller,
        claim: Claim,
        items: list[Item],
        address: Address,
        method: ShippingMethod,
        keyed: Keyed | None,
        render: Render,
        scope: str,
    ) -> OrderRecord:
        order_id = claim.resource_id
        try:
            catalog = await self.products.catalog([item.product_id for item in items])
            priced = domain.price(items, catalog, method, self.rule)
        except BaseException:
            if claim.noted:
                await self.store.drop_pending_reservation(order_id)  # nothing was reserved
            raise
        if not claim.noted:
            await self.store.note_pending_reservation(order_id)
        try:
            await self.products.reserve(order_id, items)
        except Unavailable:
            await self._compensate(order_id)  # it may have reserved before the failure
            raise
        except DomainError:
            await self.store.drop_pending_reservation(order_id)  # refused: nothing was reserved
            raise
        # Anything else (cancelled, say) may have reserved: the note stays for the sweeper.
        try:
            created_at = now()
            async with self.store.engine.begin() as conn:
                order = await self.store.insert_order(
                    conn, order_id=order_id, user_id=caller.user_id, priced=priced, method=method,
                    address=address, created_at=created_at,
                    expires_at=created_at + timedelta(seconds=self.settings.payment_window_seconds),
                )  # fmt: skip
                if order is None:
                    raise Unavailable("placing the order took too long; nothing was ordered, try again")
                await add_event(conn, outbox, topic=ORDERS_TOPIC, key=str(order_id), message=events.created(order))
                if keyed is not None and not await self.store.complete_key(
                    conn, caller.user_id, scope, keyed.key, order_id, render(order)
                ):
                    raise Aborted(
                        "this request outlived its Idempotency-Key's lease and a retry took the key over;"
                        " nothing was ordered here, the retry's outcome stands"
                    )
        except BaseException:
            await self._compensate(order_id)
            raise
        return order

    async def _compensate(self, order_id: uuid.UUID) -> None:
        """Give back the reservation of an order that was not written.  Taking its
        note settles whether it was: the order's transaction takes the note too,
        so an order written after all (its commit's answer lost, or still in
        flight) keeps its stock.  The release is queued with the note's removal
        and sent at once; whatever fails here, the sweeper finishes it."""
        try:
            if not await self.store.abandon_reservation(order_id):
                return
        except SQLAlchemyError:
            log.warning("could not settle the reservation now; the sweeper will", extra={"order_id": str(order_id)})
            return
        await self.run_stock_action(order_id, "release")

    # --- reads ------------------------------------------------------------------------------------

    async def get(self, caller: Caller, order_id: uuid.UUID) -> OrderRecord:
        order = await self.store.get(order_id)
        if order is None or not (caller.admin or order.user_id == caller.user_id):
            raise NotFound(f"no order {order_id}")
        return order

    # --- payment ----------------------------------------------------------------------------------

    async def pay(
        self, caller: Caller, order_id: uuid.UUID, token: str, keyed: Keyed | None, render: Render
    ) -> tuple[OrderRecord, PaymentRecord] | bytes:
        if not token.strip():
            raise invalid(FieldViolation("payment_method_token", "is required"))
        scope = f"pay:{order_id}"
        claim = await self._claim(caller, scope, keyed)
        if claim.replay is not None:
            return claim.replay
        try:
            return await self._pay(caller, order_id, token.strip(), claim.resource_id, keyed, render)
        except BaseException:
            if keyed is not None:
                await self.store.release_key(caller.user_id, scope, keyed.key, claim.resource_id)
            raise

    async def _pay(
        self, caller: Caller, order_id: uuid.UUID, token: str, payment_id: uuid.UUID, keyed: Keyed | None,
        render: Render,
    ) -> tuple[OrderRecord, PaymentRecord]:  # fmt: skip
        async with self.store.engine.begin() as conn:
            order = await self.store.lock_order(conn, order_id)
            if order is None or order.user_id != caller.user_id:
                raise NotFound(f"no order {order_id}")
            domain.check_transition(order.status, Status.PAID)
            try:
                # The row lock is held while charging: a concurrent payment of the
                # same order waits, then finds it PAID.
                result = await self.processor.charge(token, order.total, idempotency_key=str(payment_id))
            except UnknownPaymentMethod as exc:
                raise invalid(FieldViolation("payment_method_token", str(exc))) from exc
            status = {
                Outcome.APPROVED: PaymentStatus.APPROVED,
                Outcome.DECLINED: PaymentStatus.DECLINED,
                Outcome.FAILED: PaymentStatus.FAILED,
            }[result.outcome]
            payment = PaymentRecord(
                id=payment_id, order_id=order_id, amount=order.total, status=status,
                decline_reason=result.decline_reason.value if result.decline_reason else None,
                provider_reference=result.reference, created_at=now(), refunded_at=None,
            )  # fmt: skip
            await self.store.add_payment(conn, payment)
            PAYMENTS.labels(status.value).inc()
            if status is PaymentStatus.APPROVED:
                await self.store.update_order(conn, order_id, status=Status.PAID.value, paid_at=payment.created_at)
                order = await self.store.get(order_id, conn)
                assert order is not None
                await add_event(
                    conn, outbox, topic=ORDERS_TOPIC, key=str(order_id), message=events.paid(order, str(payment_id))
                )
                if keyed is not None:  # a takeover of this key used the same payment id: either may store it
                    await self.store.complete_key(
                        conn, caller.user_id, f"pay:{order_id}", keyed.key, payment_id, render(order)
                    )
        # Declines and failures are recorded (committed above) and then reported.
        if status is PaymentStatus.DECLINED:
            insufficient = result.decline_reason is not None and result.decline_reason.value == "INSUFFICIENT_FUNDS"
            raise FailedPrecondition(
                "the payment was declined: insufficient funds; the order is still payable"
                if insufficient
                else "the payment was declined; the order is still payable with another payment method",
                reason="INSUFFICIENT_FUNDS" if insufficient else "PAYMENT_DECLINED",
                metadata={"payment_id": str(payment_id)},
            )
        if status is PaymentStatus.FAILED:
            raise Unavailable(
                "the payment processor failed; nothing was charged, try again",
                reason="PAYMENT_PROCESSOR_ERROR",
                metadata={"payment_id": str(payment_id)},
            )
        return order, payment

    # --- cancel, ship, deliver, expire ---------------------------------------------------------------

    async def cancel(self, caller: Caller, order_id: uuid.UUID, note: str) -> OrderRecord:
        note = domain.validate_note(note)
        reason = CancelReason.CUSTOMER if not caller.admin else CancelReason.ADMIN
        async with self.store.engine.begin() as conn:
            order = await self.store.lock_order(conn, order_id)
            if order is None or not (caller.admin or order.user_id == caller.user_id):
                raise NotFound(f"no order {order_id}")
            if order.user_id == caller.user_id:
                reason = CancelReason.CUSTOMER
            if order.status is Status.CANCELLED:
                cancelled = await self.store.get(order_id, conn)
                assert cancelled is not None
                return cancelled  # idempotent
            cancelled = await self._cancel(conn, order, reason, note)
        await self.run_stock_action(order_id, "release")
        return cancelled

    async def _cancel(self, conn: AsyncConnection, order: OrderRecord, reason: CancelReason, note: str) -> OrderRecord:
        domain.check_transition(order.status, Status.CANCELLED)
        refunded = False
        if order.status is Status.PAID:
            full = await self.store.get(order.id, conn)
            payment = full.approved_payment if full else None
            if payment is not None:
                await self.processor.refund(payment.provider_reference, payment.amount)
                await self.store.refund_payment(conn, payment.id)
                refunded = True
        await self.store.update_order(
            conn, order.id, status=Status.CANCELLED.value, cancel_reason=reason.value, cancel_note=note or None,
            refunded=refunded, cancelled_at=now(),
        )  # fmt: skip
        await self.store.add_stock_action(conn, order.id, "release")
        cancelled = await self.store.get(order.id, conn)
        assert cancelled is not None
        await add_event(conn, outbox, topic=ORDERS_TOPIC, key=str(order.id), message=events.cancelled(cancelled))
        return cancelled

    async def ship(self, order_id: uuid.UUID, carrier: str, tracking_number: str) -> OrderRecord:
        carrier, tracking_number = domain.validate_shipment(carrier, tracking_number)
        async with self.store.engine.begin() as conn:
            order = await self.store.lock_order(conn, order_id)
            if order is None:
                raise NotFound(f"no order {order_id}")
            domain.check_transition(order.status, Status.SHIPPED)
            await self.store.update_order(
                conn, order_id, status=Status.SHIPPED.value, carrier=carrier, tracking_number=tracking_number,
                shipped_at=now(),
            )  # fmt: skip
            await self.store.add_stock_action(conn, order_id, "commit")
            shipped = await self.store.get(order_id, conn)
            assert shipped is not None
            await add_event(conn, outbox, topic=ORDERS_TOPIC, key=str(order_id), message=events.shipped(shipped))
        await self.run_stock_action(order_id, "commit")
        return shipped

    async def deliver(self, order_id: uuid.UUID) -> OrderRecord:
        async with self.store.engine.begin() as conn:
            order = await self.store.lock_order(conn, order_id)
            if order is None:
                raise NotFound(f"no order {order_id}")
            domain.check_transition(order.status, Status.DELIVERED)
            await self.store.update_order(conn, order_id, status=Status.DELIVERED.value, delivered_at=now())
            delivered = await self.store.get(order_id, conn)
            assert delivered is not None
            await add_event(conn, outbox, topic=ORDERS_TOPIC, key=str(order_id), message=events.delivered(delivered))
        return delivered

    async def expire_due(self) -> int:
        expired = 0
        for order_id in await self.store.expired(now()):
            async with self.store.engine.begin() as conn:
                order = await self.store.lock_order(conn, order_id)
                if order is None or order.status is not Status.PENDING_PAYMENT:
                    continue  # paid or cancelled in the meantime
                if order.expires_at is None or order.expires_at >= now():
                    continue
                await self._cancel(conn, order, CancelReason.EXPIRED, "not paid in time")
                expired += 1
            await self.run_stock_action(order_id, "release")
        return expired

    # --- stock actions ---------------------------------------------------------------------------------

    async def run_stock_action(self, order_id: uuid.UUID, action: str) -> bool:
        try:
            if action == "release":
                await self.products.release(order_id)
            else:
                await self.products.commit(order_id)
        except DomainError as exc:
            log.warning(
                "stock %s not confirmed yet; will retry", action, extra={"order_id": str(order_id), "error": str(exc)}
            )
            return False
        await self.store.finish_stock_action(order_id, action)
        STOCK_ACTIONS.labels(action).inc()
        return True

    async def sweep(self) -> None:
        """One round of background work: expiry, orphaned reservations, pending
        stock actions, old idempotency keys."""
        await self.expire_due()
        await self.store.orphaned_reservations(now() - timedelta(seconds=self.settings.orphan_reservation_after))
        for order_id, action in await self.store.due_stock_actions():
            await self.run_stock_action(order_id, action)
        await self.store.purge_keys(now() - timedelta(seconds=self.settings.idempotency_ttl_seconds))

    async def sweep_forever(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.sweep()
            except Exception:  # the next round tries again
                log.warning("sweep failed", exc_info=True)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.settings.sweep_interval)

    async def purchased(self, caller: Caller, user_id: uuid.UUID, product_id: uuid.UUID) -> datetime | None:
        """When the user first received the product (None: never)."""
        if not (caller.admin or caller.user_id == user_id):
            raise PermissionDenied("only the user themself or an admin may ask this")
        return await self.store.first_delivery(user_id, product_id)
