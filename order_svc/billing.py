"""The payment use cases: paying an order, and the payment processor's events
(Stripe webhooks); refunds go back through the processor that took the money.

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

import dataclasses
import logging
import uuid
from dataclasses import dataclass

from prometheus_client import Counter

from common.errors import (
    DomainError,
    FailedPreconditionError,
    FieldViolation,
    InvalidArgumentError,
    NotFoundError,
    UnavailableError,
)
from common.events import ORDERS_TOPIC
from common.validation import invalid
from order_svc import domain, events
from order_svc.domain import Caller, CancelReason, Claim, Keyed, OrderRecord, PaymentRecord, PaymentStatus, Status, now
from order_svc.orders import Orders, Render
from order_svc.payments import Charge, ChargeResult, EventKind, Outcome, PaymentEvent, UnknownPaymentMethodError
from order_svc.payments.stripe_api import InvalidEventError, StripeEvents
from order_svc.store import Work

log = logging.getLogger("shop.order")

PAYMENTS = Counter("order_payments_total", "Payment attempts by outcome", ["outcome"])
PAYMENT_EVENTS = Counter("order_payment_events_total", "Processor events by what they did", ["kind", "effect"])

STATUS_OF_OUTCOME = {
    Outcome.APPROVED: PaymentStatus.APPROVED,
    Outcome.DECLINED: PaymentStatus.DECLINED,
    Outcome.FAILED: PaymentStatus.FAILED,
    Outcome.PENDING: PaymentStatus.PENDING,
    Outcome.UNKNOWN: PaymentStatus.PENDING,
}


@dataclass(frozen=True)
class EventApplied:
    """What a processor event did."""

    event_id: str
    duplicate: bool = False  # applied before (a redelivery): nothing done
    applied: bool = False  # it changed a payment or an order
    order_id: uuid.UUID | None = None
    note: str = ""


class Billing:
    def __init__(self, orders: Orders, *, stripe_events: StripeEvents | None = None) -> None:
        # The order transitions (a refund at the processor cancels a paid order) and their stock actions.
        self.orders = orders
        self.store = orders.store
        self.keys = orders.keys
        self.processors = orders.processors
        self.stripe_events = stripe_events

    # --- paying an order ----------------------------------------------------------------------------

    async def pay(
        self, caller: Caller, order_id: uuid.UUID, token: str, keyed: Keyed | None, render: Render
    ) -> tuple[OrderRecord, PaymentRecord] | bytes:
        if not token.strip():
            raise invalid(FieldViolation("payment_method_token", "is required"))
        claim = await self.keys.claim(caller.user_id, f"pay:{order_id}", keyed)
        if claim.replay is not None:
            return claim.replay
        try:
            order, payment, result = await self._pay(caller, order_id, token.strip(), claim, render)
        except BaseException:
            await self.keys.release(claim)
            raise
        if payment.status is PaymentStatus.APPROVED:
            return order, payment
        if payment.status is PaymentStatus.PENDING:
            # Keep the key (and with it the payment id): a retry asks the processor again.
            await self.keys.lapse(claim)
        else:
            await self.keys.release(claim)
        raise _refusal(payment, outcome_unknown=result is None or result.outcome is Outcome.UNKNOWN)

    async def _pay(
        self, caller: Caller, order_id: uuid.UUID, token: str, claim: Claim, render: Render
    ) -> tuple[OrderRecord, PaymentRecord, ChargeResult | None]:
        """Charge the order under the claim's payment id, or answer from the payment
        recorded under it.  The result is None when answered from the record."""
        payment_id = claim.resource_id
        async with self.store.unit_of_work() as work:
            # The row lock is held while charging: a concurrent payment of the
            # same order waits, then finds it PAID (or its own payment recorded).
            locked = await work.lock_order(order_id)
            if locked is None or locked.user_id != caller.user_id:
                raise NotFoundError(f"no order {order_id}")
            order = await work.order(order_id)
            assert order is not None
            recorded = next((p for p in order.payments if p.id == payment_id), None)
            if recorded is not None and recorded.status is PaymentStatus.APPROVED:
                # An earlier holder of this key (or the processor's webhook) recorded it: answer from the record.
                await self.keys.complete(work, claim, render(order))
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
            charge = Charge(token, order.total, payment_id, order_id)
            payment, result = await self._charge(work, order, recorded, charge)
            if payment.status is not PaymentStatus.APPROVED:
                # Declines, failures and pending payments are recorded (committed here) and then reported.
                current = await work.order(order_id)
                assert current is not None
                return current, payment, result
            paid = await self._mark_paid(work, order_id, payment_id)
            # False when a retry took the key over meanwhile: the charge stands, and
            # the retry answers from this record.
            await self.keys.complete(work, claim, render(paid))
            return paid, payment, result

    async def _charge(
        self, work: Work, order: OrderRecord, recorded: PaymentRecord | None, charge: Charge
    ) -> tuple[PaymentRecord, ChargeResult]:
        """Ask the processor (the one of a pending payment asked again) and record its answer."""
        processor = self.processors.of(recorded.processor) if recorded else self.processors.charging
        try:
            result = await processor.charge(charge)
        except UnknownPaymentMethodError as exc:
            raise invalid(FieldViolation("payment_method_token", str(exc))) from exc
        status = STATUS_OF_OUTCOME[result.outcome]
        reason = result.decline_reason.value if result.decline_reason else None
        if recorded is None:
            payment = PaymentRecord(
                id=charge.payment_id, order_id=order.id, amount=order.total, status=status, decline_reason=reason,
                provider_reference=result.reference, created_at=now(), refunded_at=None, processor=processor.name,
            )  # fmt: skip
            await work.add_payment(payment)
        else:  # a payment whose outcome was pending, asked again
            payment = dataclasses.replace(
                recorded, status=status, decline_reason=reason,
                provider_reference=result.reference or recorded.provider_reference,
            )  # fmt: skip
            await work.update_payment(payment)
        PAYMENTS.labels(result.outcome.value).inc()
        return payment, result

    @staticmethod
    async def _mark_paid(work: Work, order_id: uuid.UUID, payment_id: uuid.UUID) -> OrderRecord:
        await work.mark_paid(order_id, now())
        paid = await work.order(order_id)
        assert paid is not None
        await work.add_event(ORDERS_TOPIC, str(order_id), events.paid(paid, str(payment_id)))
        return paid

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
        async with self.store.unit_of_work() as work:
            payment = await self._payment_of(work, event)
            order_id = payment.order_id if payment is not None else event.order_id
            if not await work.record_payment_event(event.processor, event.event_id, event.type, order_id):
                PAYMENT_EVENTS.labels(event.kind.value, "duplicate").inc()
                return EventApplied(event.event_id, duplicate=True, order_id=order_id, note="already applied")
            order = await work.lock_order(order_id) if order_id is not None else None
            if event.kind is EventKind.IGNORED or order is None:
                note = "not an event this service acts on" if event.kind is EventKind.IGNORED else "no such order"
                PAYMENT_EVENTS.labels(event.kind.value, "ignored").inc()
                return EventApplied(event.event_id, order_id=order_id, note=note)
            if payment is not None:  # read again under the order's lock
                payment = await work.payment(payment.id)
            if event.kind is EventKind.SUCCEEDED:
                note = await self._payment_succeeded(work, order, payment, event)
            elif event.kind is EventKind.FAILED:
                note = await self._payment_failed(work, order, payment, event)
            else:
                note, release = await self._payment_refunded(work, order, payment)
        if release:
            await self.orders.run_stock_action(order.id, "release")
        applied = bool(note) and not note.startswith("nothing")
        PAYMENT_EVENTS.labels(event.kind.value, "applied" if applied else "no-op").inc()
        return EventApplied(event.event_id, applied=applied, order_id=order.id, note=note)

    @staticmethod
    async def _payment_of(work: Work, event: PaymentEvent) -> PaymentRecord | None:
        payment = None
        if event.payment_id is not None:
            payment = await work.payment(event.payment_id)
        if payment is None and event.reference:
            payment = await work.payment_by_reference(event.processor, event.reference)
        return payment

    async def _payment_succeeded(
        self, work: Work, order: OrderRecord, payment: PaymentRecord | None, event: PaymentEvent
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
        payment_id = payment.id if payment is not None else event.payment_id or uuid.uuid4()
        if order.status is Status.PENDING_PAYMENT and amount == order.total:
            status, note = PaymentStatus.APPROVED, "the order is paid"
        else:
            # Money for an order that does not take it (paid otherwise, cancelled, expired, or not
            # this amount): give it back.
            await self.processors.of(event.processor).refund(event.reference, amount, payment_id)
            why = f"the order is {order.status.value}" if amount == order.total else "not the order's total"
            status, note = PaymentStatus.REFUNDED, f"refunded: {why}"
        refunded_at = moment if status is PaymentStatus.REFUNDED else None
        if payment is None:
            await work.add_payment(
                PaymentRecord(
                    id=payment_id, order_id=order.id, amount=amount, status=status, decline_reason=None,
                    provider_reference=event.reference, created_at=moment, refunded_at=refunded_at,
                    processor=event.processor,
                )
            )  # fmt: skip
        else:
            await work.update_payment(
                dataclasses.replace(
                    payment, status=status, decline_reason=None, refunded_at=refunded_at,
                    provider_reference=event.reference or payment.provider_reference,
                )
            )  # fmt: skip
        if status is PaymentStatus.APPROVED:
            await self._mark_paid(work, order.id, payment_id)
        return note

    @staticmethod
    async def _payment_failed(
        work: Work, order: OrderRecord, payment: PaymentRecord | None, event: PaymentEvent
    ) -> str:
        reason = (event.decline_reason.value if event.decline_reason else None) or "CARD_DECLINED"
        if payment is not None:
            if payment.status is not PaymentStatus.PENDING:
                return f"nothing to do: the payment is recorded as {payment.status.value}"
            declined = dataclasses.replace(payment, status=PaymentStatus.DECLINED, decline_reason=reason)
            await work.update_payment(declined)
            return "the payment is declined; the order is still payable"
        if event.payment_id is None or order.status is not Status.PENDING_PAYMENT:
            return "nothing to do: no payment of this order is waiting"
        await work.add_payment(
            PaymentRecord(
                id=event.payment_id, order_id=order.id, amount=event.amount or order.total,
                status=PaymentStatus.DECLINED, decline_reason=reason, provider_reference=event.reference,
                created_at=now(), refunded_at=None, processor=event.processor,
            )
        )  # fmt: skip
        return "the payment is declined; the order is still payable"

    async def _payment_refunded(
        self, work: Work, order: OrderRecord, payment: PaymentRecord | None
    ) -> tuple[str, bool]:
        """A charge refunded in full at the processor (its dashboard, say): a paid
        order is cancelled (stock released, OrderCancelled); a shipped one keeps its state."""
        if payment is None or payment.status is not PaymentStatus.APPROVED:
            return "nothing to do: no approved payment of this order has that reference", False
        if order.status is Status.PAID:
            await self.orders.cancel_in(
                work, order, CancelReason.ADMIN, "refunded at the payment processor", refund=False
            )
            return "the order is cancelled and its stock released", True
        await work.refund_payment(payment.id)
        return f"the payment is marked refunded; the order stays {order.status.value}", False


def _refusal(payment: PaymentRecord, *, outcome_unknown: bool) -> DomainError:
    """What a payment that was not approved answers (the same whether just
    attempted or answered from its record); ``outcome_unknown``: the processor
    gave no answer (or none was asked for)."""
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
        if outcome_unknown:
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
