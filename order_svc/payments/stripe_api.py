"""Stripe: PaymentIntents and refunds through the official ``stripe`` package,
and the verification of Stripe's webhook events.

Calls use the SDK's async methods (``*_async``, over httpx), so nothing blocks
the event loop.  A charge is one PaymentIntent created and confirmed at once
with the order's amount, currency and metadata (order id, payment id); its
Stripe idempotency key is derived from the payment id, so the same payment
retried (the same ``Idempotency-Key``, even after a takeover) is the same
PaymentIntent at Stripe.  What Stripe answers becomes an :class:`Outcome`:

================================================  ==============================
Stripe                                            outcome
================================================  ==============================
``succeeded``                                     APPROVED (reference: the PaymentIntent id)
card error / ``requires_payment_method``           DECLINED (insufficient funds from its decline code)
``requires_action`` (3-D Secure, redirects)       DECLINED: this API cannot authenticate a card
``processing``, ``requires_capture``              PENDING: the webhook settles it
bad or unknown payment method                     :class:`UnknownPaymentMethodError` (400 to the client)
authentication, permission, rate limit, 4xx       FAILED: Stripe refused the request, nothing charged
no answer (connection, timeout), 5xx, idempotency UNKNOWN: ask again with the same key
================================================  ==============================
"""

from __future__ import annotations

import dataclasses
import json
import logging
import uuid
from typing import Any

import stripe

from common.money import Money, MoneyError
from order_svc.payments import (
    Charge,
    ChargeResult,
    DeclineReason,
    EventKind,
    Outcome,
    PaymentEvent,
    RefundFailedError,
    UnknownPaymentMethodError,
)

log = logging.getLogger("shop.order.stripe")


# Stripe's own idempotency keys, derived from ours (the payment id).
def idempotency_key(action: str, payment_id: uuid.UUID) -> str:
    return f"shop-{action}-{payment_id}"


def _decline_reason(code: str | None, decline_code: str | None) -> DeclineReason:
    if "insufficient_funds" in (code, decline_code):
        return DeclineReason.INSUFFICIENT_FUNDS
    return DeclineReason.CARD_DECLINED


def outcome_of(intent: stripe.PaymentIntent) -> ChargeResult:
    """What a PaymentIntent Stripe answered a confirmation with means here."""
    status = intent.status
    if status == "succeeded":
        return ChargeResult(Outcome.APPROVED, reference=intent.id)
    if status in ("processing", "requires_capture"):
        return ChargeResult(Outcome.PENDING, reference=intent.id, detail=f"PaymentIntent {status}")
    if status == "requires_action":
        return ChargeResult(
            Outcome.DECLINED, reference=intent.id, decline_reason=DeclineReason.CARD_DECLINED,
            detail="the payment method needs customer authentication (3-D Secure or a redirect)",
        )  # fmt: skip
    error = intent.last_payment_error.to_dict() if intent.last_payment_error else {}
    message = error.get("message")
    return ChargeResult(
        Outcome.DECLINED,
        reference=intent.id,
        decline_reason=_decline_reason(error.get("code"), error.get("decline_code")),
        detail=f"PaymentIntent {status}" + (f": {message}" if message else ""),
    )


def _refused_request(exc: stripe.InvalidRequestError) -> ChargeResult:
    """What a charge request Stripe refused as invalid comes to."""
    if exc.param == "payment_method" or (exc.code or "").startswith("payment_method"):
        raise UnknownPaymentMethodError(
            f"the payment processor does not accept this payment method: {exc.user_message}"
        ) from exc
    if exc.http_status == 409:  # a concurrent request with the same key is still running
        return ChargeResult(Outcome.UNKNOWN, detail=exc.user_message or "idempotent request in progress")
    log.warning("Stripe refused the charge request", extra={"error": str(exc), "param": exc.param})
    return ChargeResult(Outcome.FAILED, decline_reason=DeclineReason.PROCESSOR_ERROR, detail=str(exc))


class StripeProcessor:
    name = "stripe"

    def __init__(self, secret_key: str, api_base: str, *, timeout: float = 10.0, max_network_retries: int = 2) -> None:
        self.http = stripe.HTTPXClient(timeout=timeout)
        self.client = stripe.StripeClient(
            secret_key,
            base_addresses={"api": api_base.rstrip("/")},
            http_client=self.http,
            max_network_retries=max_network_retries,
        )

    async def charge(self, charge: Charge) -> ChargeResult:
        key = idempotency_key("charge", charge.payment_id)
        try:
            intent = await self.client.v1.payment_intents.create_async(
                {
                    "amount": charge.amount.amount_minor,
                    "currency": charge.amount.currency.lower(),
                    "payment_method": charge.token,
                    "confirm": True,
                    # Cards and the like, confirmed here: nothing that needs a redirect.
                    "automatic_payment_methods": {"enabled": True, "allow_redirects": "never"},
                    "description": f"shop order {charge.order_id}",
                    "metadata": {"order_id": str(charge.order_id), "payment_id": str(charge.payment_id)},
                },
                {"idempotency_key": key},
            )
        except stripe.CardError as exc:
            error = exc.error.to_dict() if exc.error is not None else {}
            return ChargeResult(
                Outcome.DECLINED,
                reference=_intent_id(exc),
                decline_reason=_decline_reason(exc.code, error.get("decline_code")),
                detail=exc.user_message or "card declined",
            )
        except stripe.IdempotencyError as exc:
            # The key was used with other parameters: the earlier request may have charged.
            return ChargeResult(Outcome.UNKNOWN, detail=f"idempotency error: {exc.user_message}")
        except stripe.InvalidRequestError as exc:
            return _refused_request(exc)
        except (stripe.AuthenticationError, stripe.PermissionError, stripe.RateLimitError) as exc:
            log.warning("Stripe refused the charge request", extra={"error": str(exc)})
            return ChargeResult(Outcome.FAILED, decline_reason=DeclineReason.PROCESSOR_ERROR, detail=str(exc))
        except stripe.StripeError as exc:  # no answer, or a 5xx: it may have gone through
            log.warning("Stripe gave no answer to a charge", extra={"error": str(exc)})
            return ChargeResult(Outcome.UNKNOWN, detail=str(exc) or type(exc).__name__)
        acknowledged = intent.last_response.idempotency_key if intent.last_response else None
        return dataclasses.replace(outcome_of(intent), processor_key=acknowledged or "")

    async def refund(self, reference: str, amount: Money, payment_id: uuid.UUID) -> str:
        try:
            refund = await self.client.v1.refunds.create_async(
                {
                    "payment_intent": reference,
                    "amount": amount.amount_minor,
                    "metadata": {"payment_id": str(payment_id)},
                },
                {"idempotency_key": idempotency_key("refund", payment_id)},
            )
        except stripe.StripeError as exc:
            raise RefundFailedError(
                f"the payment processor did not confirm the refund ({exc.user_message or type(exc).__name__});"
                " nothing changed, try again",
                reason="PAYMENT_PROCESSOR_ERROR",
            ) from exc
        if refund.status in ("failed", "canceled"):
            raise RefundFailedError(f"the payment processor refused the refund ({refund.status})",
                               reason="PAYMENT_PROCESSOR_ERROR")  # fmt: skip
        return refund.id

    async def close(self) -> None:
        await self.http.close_async()  # type: ignore[no-untyped-call]


def _intent_id(exc: stripe.StripeError) -> str:
    body = exc.json_body if isinstance(exc.json_body, dict) else {}
    error = body.get("error")
    intent = error.get("payment_intent") if isinstance(error, dict) else None
    return str(intent.get("id", "")) if isinstance(intent, dict) else ""


# --- webhook events -----------------------------------------------------------------------------


class InvalidEventError(ValueError):
    """A webhook body whose signature does not verify, or that is not a Stripe event."""


class StripeEvents:
    """Verifies ``Stripe-Signature`` with the SDK's verifier and reads the events
    this service acts on: a PaymentIntent that succeeded or failed, a charge
    refunded in full."""

    def __init__(self, secret: str, tolerance: int = stripe.Webhook.DEFAULT_TOLERANCE) -> None:
        self.secret = secret
        self.tolerance = tolerance

    def verify(self, payload: bytes, signature: str) -> dict[str, Any]:
        try:
            stripe.WebhookSignature.verify_header(payload, signature, self.secret, self.tolerance)
        except stripe.SignatureVerificationError as exc:
            raise InvalidEventError(f"the Stripe-Signature does not verify: {exc.user_message}") from exc
        except UnicodeDecodeError as exc:
            raise InvalidEventError("the body is not UTF-8 text") from exc
        try:
            event = json.loads(payload)
        except ValueError as exc:
            raise InvalidEventError(f"the body is not JSON: {exc}") from exc
        if not isinstance(event, dict) or event.get("object") != "event" or not isinstance(event.get("id"), str):
            raise InvalidEventError("the body is not a Stripe event")
        if not isinstance(event.get("type"), str) or not isinstance(event.get("data"), dict):
            raise InvalidEventError("the event has no type or data")
        return event

    def read(self, payload: bytes, signature: str) -> PaymentEvent:
        event = self.verify(payload, signature)
        type_ = str(event["type"])
        found = event["data"].get("object")
        obj: dict[str, Any] = found if isinstance(found, dict) else {}
        metadata = obj.get("metadata")
        tags: dict[str, Any] = metadata if isinstance(metadata, dict) else {}

        def made(kind: EventKind, **found: Any) -> PaymentEvent:
            return PaymentEvent(
                processor="stripe", event_id=str(event["id"]), type=type_, kind=kind,
                order_id=_uuid(tags.get("order_id")), payment_id=_uuid(tags.get("payment_id")), **found,
            )  # fmt: skip

        kind = obj.get("object")
        amount = _money(obj.get("amount"), obj.get("currency"))
        if type_ == "payment_intent.succeeded" and kind == "payment_intent":
            return made(EventKind.SUCCEEDED, reference=str(obj.get("id", "")), amount=amount)
        if type_ == "payment_intent.payment_failed" and kind == "payment_intent":
            error = obj.get("last_payment_error")
            error = error if isinstance(error, dict) else {}
            reason = _decline_reason(error.get("code"), error.get("decline_code"))
            return made(EventKind.FAILED, reference=str(obj.get("id", "")), amount=amount, decline_reason=reason)
        if type_ == "charge.refunded" and kind == "charge":
            intent = obj.get("payment_intent")
            reference = intent.get("id") if isinstance(intent, dict) else intent
            full = obj.get("refunded") is True or obj.get("amount_refunded") == obj.get("amount")
            if full and isinstance(reference, str) and reference:
                return made(EventKind.REFUNDED, reference=reference, amount=amount)
        return made(EventKind.IGNORED)


def _uuid(value: object) -> uuid.UUID | None:
    try:
        return uuid.UUID(str(value)) if isinstance(value, str) else None
    except ValueError:
        return None


def _money(amount: object, currency: object) -> Money | None:
    if not (isinstance(amount, int) and not isinstance(amount, bool) and isinstance(currency, str)):
        return None
    try:
        return Money(amount, currency.upper())
    except MoneyError:
        return None
