"""Payment processors: the one place that talks to whoever takes the money.

Every processor answers the same interface (:class:`Processor`):

* ``testing.TestProcessor`` (``SHOP_PAYMENT_PROCESSOR=test``, the default):
  deterministic tokens, no money moves; refused in production unless
  ``SHOP_ALLOW_TEST_PAYMENTS_IN_STAGING`` says the deployment is a staging one;
* ``stripe_api.StripeProcessor`` (``SHOP_PAYMENT_PROCESSOR=stripe``):
  PaymentIntents through Stripe's API with the official ``stripe`` package
  (stripe-mock in the local cluster).

A charge carries the payment id; the processor derives its own idempotency key
from it, so a retry of the same payment (the same ``Idempotency-Key``, even
after a takeover) never charges twice.  Each payment records the processor that
took it, and a refund goes back through that one.

Processor events (Stripe webhooks) are verified and read into a
:class:`PaymentEvent` by ``stripe_api.StripeEvents``; ``Orders`` applies them.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from common.errors import UnavailableError
from common.money import Money


class Outcome(StrEnum):
    APPROVED = "APPROVED"
    DECLINED = "DECLINED"
    # The processor refused the request before charging (misconfiguration, rate
    # limit, an outage it reported): nothing was charged.
    FAILED = "FAILED"
    # Accepted, not settled: the processor confirms later (a webhook).
    PENDING = "PENDING"
    # No answer (a timeout, a dropped connection, a 5xx): it may have charged.
    # Asking again with the same idempotency key tells.
    UNKNOWN = "UNKNOWN"


class DeclineReason(StrEnum):
    CARD_DECLINED = "CARD_DECLINED"
    INSUFFICIENT_FUNDS = "INSUFFICIENT_FUNDS"
    PROCESSOR_ERROR = "PROCESSOR_ERROR"


@dataclass(frozen=True)
class Charge:
    """One attempt to take an order's total: ``payment_id`` is stable across retries."""

    token: str
    amount: Money
    payment_id: uuid.UUID
    order_id: uuid.UUID


@dataclass(frozen=True)
class ChargeResult:
    outcome: Outcome
    reference: str = ""  # the processor's id of the charge (Stripe: the PaymentIntent)
    decline_reason: DeclineReason | None = None
    detail: str = ""  # what the processor said, for the logs
    # The idempotency key the processor acknowledged for this charge (its answer's
    # Idempotency-Key): the same for every retry of one payment.
    processor_key: str = ""


class UnknownPaymentMethodError(ValueError):
    """The token names no payment method the processor knows."""


class RefundFailedError(UnavailableError):
    """The processor did not confirm a refund; nothing changed here, try again."""


class Processor(Protocol):
    name: str

    async def charge(self, charge: Charge) -> ChargeResult: ...

    async def refund(self, reference: str, amount: Money, payment_id: uuid.UUID) -> str:
        """Refund the whole charge ``reference``; the refund's reference.  Raises
        :class:`RefundFailedError` when the processor does not confirm it."""
        ...

    async def close(self) -> None: ...


class Processors:
    """The processor that takes new payments, and every configured one by name
    (a payment is refunded by the processor that took it)."""

    def __init__(self, charging: Processor, *others: Processor) -> None:
        self.charging = charging
        self.by_name: Mapping[str, Processor] = {p.name: p for p in (*others, charging)}

    def of(self, name: str) -> Processor:
        found = self.by_name.get(name)
        if found is None:
            raise RefundFailedError(
                f"the payment went through the {name!r} processor, which this deployment does not configure",
                reason="PAYMENT_PROCESSOR_ERROR",
            )
        return found

    async def close(self) -> None:
        for processor in self.by_name.values():
            await processor.close()


class EventKind(StrEnum):
    SUCCEEDED = "SUCCEEDED"  # the payment went through
    FAILED = "FAILED"  # the attempt was declined or failed
    REFUNDED = "REFUNDED"  # the whole charge was refunded (at the processor, say from its dashboard)
    IGNORED = "IGNORED"  # an event type this service does not act on


@dataclass(frozen=True)
class PaymentEvent:
    """A verified processor event, in this service's terms."""

    processor: str
    event_id: str
    type: str
    kind: EventKind
    reference: str = ""
    order_id: uuid.UUID | None = None
    payment_id: uuid.UUID | None = None
    amount: Money | None = None
    decline_reason: DeclineReason | None = None
