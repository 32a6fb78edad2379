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

Money is never taken twice, nor lost track of:

* a payment's id is its processor's idempotency key; a takeover of a payment
  key keeps the id (the retry reaches the same charge) under a holder token of
  its own, so only the current holder completes or releases the key;
* a pay that finds its payment recorded answers from the record (approved:
  the first response; declined: the same refusal) without charging again; a
  payment whose outcome the processor has not given (no answer, or it confirms
  later) is recorded PENDING and keeps the key, so a retry with the same key
  asks the processor again under the same idempotency key;
* processor events (Stripe webhooks, verified in ``payments/stripe_api.py``) move
  the order through the same transitions and outbox, once per event id; money
  that came in for an order that no longer takes it is refunded;
* a payment is refunded by the processor that took it.
"""

from __future__ import annotations

import asyncio
import dataclasses
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
    AbortedError,
    DomainError,
    FailedPreconditionError,
    FieldViolation,
    InvalidArgumentError,
    NotFoundError,
    PermissionDeniedError,
    UnavailableError,
)
from common.events import ORDERS_TOPIC
from common.outbox import add_event
from common.ratelimit import Limiter, Window
from common.validation import Address, invalid
from common.waits import wait_or_stop
from order_svc import domain, events
from order_svc.domain import CancelReason, Item, ShippingMethod, Status
from order_svc.payments import (
    Charge,
    ChargeResult,
    EventKind,
    Outcome,
    PaymentEvent,
    Processors,
    UnknownPaymentMethodError,
)
from order_svc.payments.stripe_api import InvalidEventError, StripeEvents
from order_svc.products import ProductClient
from order_svc.settings import OrderSettings
from order_svc.store import Claim, OrderRecord, PaymentRecord, PaymentStatus, Store, now, outbox

log = logging.getLogger("shop.order")

ORDERS_CREATED = Counter("orders_created_total", "Orders placed")
PAYMENTS = Counter("order_payments_total", "Payment attempts by outcome", ["outcome"])
PAYMENT_EVENTS = Counter("order_payment_events_total", "Processor events by what they did", ["kind", "effect"])

STATUS_OF_OUTCOME = {
    Outcome.APPROVED: PaymentStatus.APPROVED,
    Outcome.DECLINED: PaymentStatus.DECLINED,
    Outcome.FAILED: PaymentStatus.FAILED,
    Outcome.PENDING: PaymentStatus.PENDING,
    Outcome.UNKNOWN: PaymentStatus.PENDING,
}
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


@dataclass(frozen=True)
class CartRef:
    """The cart a checkout orders, as of one generation (order_svc/cart_store.py)."""

    owner: str
    generation: str


@dataclass(frozen=True)
class EventApplied:
    """What a processor event did."""

    event_id: str
    duplicate: bool = False  # applied before (a redelivery): nothing done
    applied: bool = False  # it changed a payment or an order
    order_id: uuid.UUID | None = None
    note: str = ""


class Orders:
    def __init__(
        self,
        store: Store,
        products: ProductClient,
        processors: Processors,
        settings: OrderSettings,
        stripe_events: StripeEvents | None = None,
        *,
        limiter: Limiter | None = None,
    ) -> None:
        self.store = store
        # Order placements per user (None: no rate limit); unpaid orders held are capped in any case.
        self.limiter = limiter
        self.create_window = Window("orders", settings.order_create_limit, settings.order_create_window)
        self.products = products
        self.processors = processors
        self.stripe_events = stripe_events
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
                raise AbortedError("a request with this Idempotency-Key is still being processed; retry shortly")
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
        cart: CartRef | None = None,
    ) -> OrderRecord | bytes:
        """The order (or, for a repeated key, the first response's bytes).
        CreateOrder and cart checkout both come here, each with its own key scope;
        a checkout names its cart generation, which becomes one order at most."""
        items = domain.validate_items(items, self.limits)
        address = domain.validate_shipping_address(address)
        claim = await self._claim(caller, scope, keyed, reserving=True)
        if claim.replay is not None:
            return claim.replay
        try:
            order = await self._place(caller, claim, items, address, method, keyed, render, scope, cart)
        except BaseException:
            if keyed is not None and claim.holder is not None:
                await self.store.release_key(caller.user_id, scope, keyed.key, claim.holder)
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
        cart: CartRef | None = None,
    ) -> OrderRecord:
        order_id = claim.resource_id
        try:
            await self._within_limits(caller)
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
        except UnavailableError:
            await self._compensate(order_id)  # it may have reserved before the failure
            raise
        except DomainError:
            await self.store.drop_pending_reservation(order_id)  # refused: nothing was reserved
            raise
        # Anything else (cancelled, say) may have reserved: the note stays for the sweeper.
        try:
            created_at = now()
            async with self.store.engine.begin() as conn:
                # Counted again under the user's lock: placements at the same moment stay under the cap.
                self._check_unpaid(await self.store.unpaid_orders(conn, caller.user_id, lock=True))
                order = await self.store.insert_order(
                    conn, order_id=order_id, user_id=caller.user_id, priced=priced, method=method,
                    address=address, created_at=created_at,
                    expires_at=created_at + timedelta(seconds=self.settings.payment_window_seconds),
                )  # fmt: skip
                if order is None:
                    raise UnavailableError("placing the order took too long; nothing was ordered, try again")
                if cart is not None:
                    earlier = await self.store.record_cart_checkout(conn, cart.owner, cart.generation, order_id)
                    if earlier is not None:
                        raise FailedPreconditionError(
                            f"this cart was already checked out as order {earlier}; nothing was ordered here",
                            reason="CART_ALREADY_CHECKED_OUT",
                            metadata={"order_id": str(earlier)},
                        )
                await add_event(conn, outbox, topic=ORDERS_TOPIC, key=str(order_id), message=events.created(order))
                if keyed is not None and claim.holder is not None:
                    completed = await self.store.complete_key(
                        conn, caller.user_id, scope, keyed.key, claim.holder, render(order)
                    )
                else:
                    completed = True
                if not completed:
                    raise AbortedError(
                        "this request outlived its Idempotency-Key's lease and a retry took the key over;"
                        " nothing was ordered here, the retry's outcome stands"
                    )
        except BaseException:
            await self._compensate(order_id)
            raise
        return order

    async def _within_limits(self, caller: Caller) -> None:
        """Refuse before any stock is reserved: too many placements lately (429), or
        too many unpaid orders held (409: paying or cancelling one helps, waiting
        helps only when an order expires)."""
        self._check_unpaid(await self.store.unpaid_count(caller.user_id))
        if self.limiter is not None:
            await self.limiter.hit(
                self.create_window, str(caller.user_id), "you placed too many orders lately; try again later"
            )

    def _check_unpaid(self, held: int) -> None:
        limit = self.settings.unpaid_orders_limit
        if held >= limit:
            raise FailedPreconditionError(
                f"you have {held} unpaid orders (at most {limit}); pay or cancel one before placing another",
                reason="UNPAID_ORDERS_LIMIT",
                metadata={"limit": str(limit)},
            )

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
            raise NotFoundError(f"no order {order_id}")
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
            order, payment, result = await self._pay(caller, order_id, token.strip(), claim, keyed, render)
        except BaseException:
            if keyed is not None and claim.holder is not None:
                await self.store.release_key(caller.user_id, scope, keyed.key, claim.holder)
            raise
        if payment.status is PaymentStatus.APPROVED:
            return order, payment
        if keyed is not None and claim.holder is not None:
            if payment.status is PaymentStatus.PENDING:
                # Keep the key (and with it the payment id): a retry asks the processor again.
                await self.store.lapse_key(caller.user_id, scope, keyed.key, claim.holder)
            else:
                await self.store.release_key(caller.user_id, scope, keyed.key, claim.holder)
        raise _refusal(payment, result)

    async def _pay(
        self, caller: Caller, order_id: uuid.UUID, token: str, claim: Claim, keyed: Keyed | None, render: Render
    ) -> tuple[OrderRecord, PaymentRecord, ChargeResult | None]:
        """Charge the order under the claim's payment id, or answer from the payment
        recorded under it.  The result is None when answered from the record."""
        payment_id = claim.resource_id
        scope = f"pay:{order_id}"
        async with self.store.engine.begin() as conn:
            # The row lock is held while charging: a concurrent payment of the
            # same order waits, then finds it PAID (or its own payment recorded).
            locked = await self.store.lock_order(conn, order_id)
            if locked is None or locked.user_id != caller.user_id:
                raise NotFoundError(f"no order {order_id}")
            order = await self.store.get(order_id, conn)
            assert order is not None
            recorded = next((p for p in order.payments if p.id == payment_id), None)
            if recorded is not None and recorded.status is PaymentStatus.APPROVED:
                # An earlier holder of this key (or the processor's webhook) recorded it: answer from the record.
                if keyed is not None and claim.holder is not None:
                    await self.store.complete_key(conn, caller.user_id, scope, keyed.key, claim.holder, render(order))
                return order, recorded, None
            if recorded is not None and recorded.status in (PaymentStatus.DECLINED, PaymentStatus.FAILED):
                return order, recorded, None  # the same refusal, not a second attempt under one id
            domain.check_transition(order.status, Status.PAID)
            waiting = [p for p in order.payments if p.status is PaymentStatus.PENDING and p.id != payment_id]
            if waiting:
                raise FailedPreconditionError(
                    "another payment of this order is waiting for the processor's answer; retry that one"
                    " (with its Idempotency-Key) or wait for the order to become PAID",
                    reason="PAYMENT_PENDING",
                    metadata={"payment_id": str(waiting[0].id)},
                )
            processor = self.processors.of(recorded.processor) if recorded else self.processors.charging
            try:
                result = await processor.charge(Charge(token, order.total, payment_id, order_id))
            except UnknownPaymentMethodError as exc:
                raise invalid(FieldViolation("payment_method_token", str(exc))) from exc
            status = STATUS_OF_OUTCOME[result.outcome]
            reason = result.decline_reason.value if result.decline_reason else None
            if recorded is None:
                payment = PaymentRecord(
                    id=payment_id, order_id=order_id, amount=order.total, status=status, decline_reason=reason,
                    provider_reference=result.reference, created_at=now(), refunded_at=None, processor=processor.name,
                )  # fmt: skip
                await self.store.add_payment(conn, payment)
            else:  # a payment whose outcome was pending, asked again
                payment = dataclasses.replace(
                    recorded, status=status, decline_reason=reason,
                    provider_reference=result.reference or recorded.provider_reference,
                )  # fmt: skip
                await self.store.update_payment(
                    conn, payment_id, status=status.value, decline_reason=reason,
                    provider_reference=payment.provider_reference,
                )  # fmt: skip
            PAYMENTS.labels(result.outcome.value).inc()
            if status is PaymentStatus.APPROVED:
                await self.store.update_order(conn, order_id, status=Status.PAID.value, paid_at=now())
                paid = await self.store.get(order_id, conn)
                assert paid is not None
                await add_event(
                    conn, outbox, topic=ORDERS_TOPIC, key=str(order_id), message=events.paid(paid, str(payment_id))
                )
                if keyed is not None and claim.holder is not None:
                    # False when a retry took the key over meanwhile: the charge stands, and
                    # the retry answers from this record.
                    await self.store.complete_key(conn, caller.user_id, scope, keyed.key, claim.holder, render(paid))
                return paid, payment, result
            # Declines, failures and pending payments are recorded (committed here) and then reported.
            current = await self.store.get(order_id, conn)
            assert current is not None
            return current, payment, result

    # --- processor events (webhooks) ------------------------------------------------------------------

    async def apply_stripe_event(self, payload: bytes, signature: str) -> EventApplied:
        """A Stripe webhook delivery: verified with the signing secret (the edge
        verified it too; this service does not act on an unverified call), then applied."""
        if self.stripe_events is None:
            raise FailedPreconditionError("Stripe events are not configured here (no SHOP_STRIPE_WEBHOOK_SECRET)")
        try:
            event = self.stripe_events.read(payload, signature)
        except InvalidEventError as exc:
            raise InvalidArgumentError(str(exc), reason="WEBHOOK_SIGNATURE_INVALID") from exc
        return await self.apply_payment_event(event)

    async def apply_payment_event(self, event: PaymentEvent) -> EventApplied:
        """Apply a verified processor event once (by its id), through the same
        transitions and outbox as the synchronous path."""
        release = False
        async with self.store.engine.begin() as conn:
            payment = None
            if event.payment_id is not None:
                payment = await self.store.get_payment(conn, event.payment_id)
            if payment is None and event.reference:
                payment = await self.store.payment_by_reference(conn, event.processor, event.reference)
            order_id = payment.order_id if payment is not None else event.order_id
            if not await self.store.record_payment_event(conn, event.processor, event.event_id, event.type, order_id):
                PAYMENT_EVENTS.labels(event.kind.value, "duplicate").inc()
                return EventApplied(event.event_id, duplicate=True, order_id=order_id, note="already applied")
            order = await self.store.lock_order(conn, order_id) if order_id is not None else None
            if event.kind is EventKind.IGNORED or order is None:
                note = "not an event this service acts on" if event.kind is EventKind.IGNORED else "no such order"
                PAYMENT_EVENTS.labels(event.kind.value, "ignored").inc()
                return EventApplied(event.event_id, order_id=order_id, note=note)
            if payment is not None:  # read again under the order's lock
                payment = await self.store.get_payment(conn, payment.id)
            if event.kind is EventKind.SUCCEEDED:
                note = await self._payment_succeeded(conn, order, payment, event)
            elif event.kind is EventKind.FAILED:
                note = await self._payment_failed(conn, order, payment, event)
            else:
                note, release = await self._payment_refunded(conn, order, payment)
        if release:
            await self.run_stock_action(order.id, "release")
        applied = bool(note) and not note.startswith("nothing")
        PAYMENT_EVENTS.labels(event.kind.value, "applied" if applied else "no-op").inc()
        return EventApplied(event.event_id, applied=applied, order_id=order.id, note=note)

    async def _payment_succeeded(
        self, conn: AsyncConnection, order: OrderRecord, payment: PaymentRecord | None, event: PaymentEvent
    ) -> str:
        if payment is not None and payment.status is PaymentStatus.APPROVED:
            return "nothing to do: the payment is recorded as approved"
        if payment is not None and payment.status is PaymentStatus.REFUNDED:
            return "nothing to do: the payment was refunded"
        amount = payment.amount if payment is not None else event.amount or order.total
        if event.amount is not None and event.amount != amount:
            log.warning("a payment event's amount differs from the payment's", extra={"event_id": event.event_id})
            return "nothing done: the event's amount differs from the payment's"
        moment = now()
        if order.status is Status.PENDING_PAYMENT and amount == order.total:
            status, note = PaymentStatus.APPROVED, "the order is paid"
        else:
            # Money for an order that does not take it (paid otherwise, cancelled, expired, or not
            # this amount): give it back.
            await self.processors.of(event.processor).refund(event.reference, amount, payment.id if payment
                                                              else event.payment_id or uuid.uuid4())  # fmt: skip
            why = f"the order is {order.status.value}" if amount == order.total else "not the order's total"
            status, note = PaymentStatus.REFUNDED, f"refunded: {why}"
        payment_id = payment.id if payment is not None else event.payment_id or uuid.uuid4()
        refunded_at = moment if status is PaymentStatus.REFUNDED else None
        if payment is None:
            await self.store.add_payment(
                conn,
                PaymentRecord(
                    id=payment_id, order_id=order.id, amount=amount, status=status, decline_reason=None,
                    provider_reference=event.reference, created_at=moment, refunded_at=refunded_at,
                    processor=event.processor,
                ),
            )  # fmt: skip
        else:
            await self.store.update_payment(
                conn, payment_id, status=status.value, decline_reason=None, refunded_at=refunded_at,
                provider_reference=event.reference or payment.provider_reference,
            )  # fmt: skip
        if status is PaymentStatus.APPROVED:
            await self.store.update_order(conn, order.id, status=Status.PAID.value, paid_at=moment)
            paid = await self.store.get(order.id, conn)
            assert paid is not None
            await add_event(
                conn, outbox, topic=ORDERS_TOPIC, key=str(order.id), message=events.paid(paid, str(payment_id))
            )
        return note

    async def _payment_failed(
        self, conn: AsyncConnection, order: OrderRecord, payment: PaymentRecord | None, event: PaymentEvent
    ) -> str:
        reason = (event.decline_reason.value if event.decline_reason else None) or "CARD_DECLINED"
        if payment is not None:
            if payment.status is not PaymentStatus.PENDING:
                return f"nothing to do: the payment is recorded as {payment.status.value}"
            await self.store.update_payment(
                conn, payment.id, status=PaymentStatus.DECLINED.value, decline_reason=reason
            )
            return "the payment is declined; the order is still payable"
        if event.payment_id is None or order.status is not Status.PENDING_PAYMENT:
            return "nothing to do: no payment of this order is waiting"
        await self.store.add_payment(
            conn,
            PaymentRecord(
                id=event.payment_id, order_id=order.id, amount=event.amount or order.total,
                status=PaymentStatus.DECLINED, decline_reason=reason, provider_reference=event.reference,
                created_at=now(), refunded_at=None, processor=event.processor,
            ),
        )  # fmt: skip
        return "the payment is declined; the order is still payable"

    async def _payment_refunded(
        self, conn: AsyncConnection, order: OrderRecord, payment: PaymentRecord | None
    ) -> tuple[str, bool]:
        """A charge refunded in full at the processor (its dashboard, say): a paid
        order is cancelled (stock released, OrderCancelled); a shipped one keeps its state."""
        if payment is None or payment.status is not PaymentStatus.APPROVED:
            return "nothing to do: no approved payment of this order has that reference", False
        if order.status is Status.PAID:
            await self._cancel(conn, order, CancelReason.ADMIN, "refunded at the payment processor", refund=False)
            return "the order is cancelled and its stock released", True
        await self.store.refund_payment(conn, payment.id)
        return f"the payment is marked refunded; the order stays {order.status.value}", False

    # --- cancel, ship, deliver, expire ---------------------------------------------------------------

    async def cancel(self, caller: Caller, order_id: uuid.UUID, note: str) -> OrderRecord:
        note = domain.validate_note(note)
        reason = CancelReason.CUSTOMER if not caller.admin else CancelReason.ADMIN
        async with self.store.engine.begin() as conn:
            order = await self.store.lock_order(conn, order_id)
            if order is None or not (caller.admin or order.user_id == caller.user_id):
                raise NotFoundError(f"no order {order_id}")
            if order.user_id == caller.user_id:
                reason = CancelReason.CUSTOMER
            if order.status is Status.CANCELLED:
                cancelled = await self.store.get(order_id, conn)
                assert cancelled is not None
                return cancelled  # idempotent
            cancelled = await self._cancel(conn, order, reason, note)
        await self.run_stock_action(order_id, "release")
        return cancelled

    async def _cancel(
        self, conn: AsyncConnection, order: OrderRecord, reason: CancelReason, note: str, *, refund: bool = True
    ) -> OrderRecord:
        """``refund``: give the approved payment back through the processor that took
        it (False: the processor already did, and said so in an event)."""
        domain.check_transition(order.status, Status.CANCELLED)
        refunded = False
        if order.status is Status.PAID:
            full = await self.store.get(order.id, conn)
            payment = full.approved_payment if full else None
            if payment is not None:
                if refund:
                    processor = self.processors.of(payment.processor)
                    await processor.refund(payment.provider_reference, payment.amount, payment.id)
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
                raise NotFoundError(f"no order {order_id}")
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
                raise NotFoundError(f"no order {order_id}")
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
        await self.store.purge_history(
            now() - timedelta(seconds=self.settings.payment_event_ttl_seconds),
            now() - timedelta(seconds=self.settings.cart_ttl_seconds),
        )

    async def sweep_forever(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.sweep()
            except Exception:  # the next round tries again
                log.warning("sweep failed", exc_info=True)
            await wait_or_stop(stop, self.settings.sweep_interval)

    async def purchased(self, caller: Caller, user_id: uuid.UUID, product_id: uuid.UUID) -> datetime | None:
        """When the user first received the product (None: never)."""
        if not (caller.admin or caller.user_id == user_id):
            raise PermissionDeniedError("only the user themself or an admin may ask this")
        return await self.store.first_delivery(user_id, product_id)


def _refusal(payment: PaymentRecord, result: ChargeResult | None) -> DomainError:
    """What a payment that was not approved answers (the same whether just
    attempted or answered from its record)."""
    metadata = {"payment_id": str(payment.id)}
    if payment.status is PaymentStatus.DECLINED:
        if payment.decline_reason == "INSUFFICIENT_FUNDS":
            return FailedPreconditionError("the payment was declined: insufficient funds; the order is still payable",
                                      reason="INSUFFICIENT_FUNDS", metadata=metadata)  # fmt: skip
        return FailedPreconditionError(
            "the payment was declined; the order is still payable with another payment method",
            reason="PAYMENT_DECLINED", metadata=metadata,
        )  # fmt: skip
    if payment.status is PaymentStatus.PENDING:
        if result is None or result.outcome is Outcome.UNKNOWN:
            return UnavailableError(
                "the payment processor did not answer; the payment may have gone through: retry with the same"
                " Idempotency-Key to learn its outcome (it is never charged twice)",
                reason="PAYMENT_OUTCOME_UNKNOWN", metadata=metadata,
            )  # fmt: skip
        return FailedPreconditionError(
            "the payment processor has not confirmed the payment yet; the order becomes PAID when it does",
            reason="PAYMENT_PENDING", metadata=metadata,
        )  # fmt: skip
    if payment.status is PaymentStatus.FAILED:
        return UnavailableError("the payment processor failed; nothing was charged, try again",
                           reason="PAYMENT_PROCESSOR_ERROR", metadata=metadata)  # fmt: skip
    return FailedPreconditionError(f"the payment is {payment.status.value}", reason="INVALID_STATE", metadata=metadata)
