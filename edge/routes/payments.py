"""Payment processor callbacks: Stripe's webhook events (``/api/v1/payments/stripe/events``)."""

from __future__ import annotations

import stripe
from pydantic import BaseModel
from shop.order.v1 import order_pb2
from starlette.requests import Request

from edge.api import Api, Contract
from edge.bodies import read_body
from edge.clients import call_options, clients
from edge.problems import HttpProblemError
from edge.routes.models import Uuid

api = Api(upstreams=["order_svc"])


class StripeEventReceipt(BaseModel):
    event_id: str
    # Applied before (Stripe delivers at least once): nothing was done this time.
    duplicate: bool
    # It changed a payment or an order (false for events the shop does not act on).
    applied: bool
    order_id: Uuid | None


@api.operation("POST", "/api/v1/payments/stripe/events", Contract(
    summary="Stripe webhook events (signed by Stripe)", tag="payments",
    response=StripeEventReceipt, errors=(400, 404, 413, 415, 503),
))  # fmt: skip
async def stripe_event(request: Request) -> StripeEventReceipt:
    """Point a Stripe webhook endpoint here. The ``Stripe-Signature`` header is
    verified with the webhook signing secret (``SHOP_STRIPE_WEBHOOK_SECRET``)
    before anything else; order_svc verifies it again and applies each event id
    once: ``payment_intent.succeeded`` pays the order, ``payment_intent.payment_failed``
    declines the waiting payment, ``charge.refunded`` (in full) cancels a paid
    order. Other events are acknowledged with ``applied: false``. 400: unsigned,
    tampered or stale (older than 5 minutes) body."""
    settings = request.app.state.settings
    secret = settings.stripe_webhook_secret
    if secret is None:
        raise HttpProblemError(404, "Stripe webhook events are not taken here (no webhook signing secret configured)")
    media = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media != "application/json":
        raise HttpProblemError(415, "Stripe sends its events as application/json")
    signature = request.headers.get("stripe-signature", "")
    if not signature:
        raise HttpProblemError(400, "the Stripe-Signature header is missing: only Stripe's signed events are taken")
    payload = await read_body(request, settings.max_webhook_bytes)
    try:
        stripe.WebhookSignature.verify_header(payload, signature, secret.get_secret_value(), tolerance=300)
    except stripe.SignatureVerificationError as exc:
        raise HttpProblemError(400, f"the Stripe-Signature does not verify: {exc.user_message}") from exc
    except UnicodeDecodeError as exc:
        raise HttpProblemError(400, "the body is not UTF-8 text") from exc
    reply = await clients(request).order.HandleStripeEvent(
        order_pb2.HandleStripeEventRequest(payload=payload, signature=signature), **call_options(request)
    )
    return StripeEventReceipt(
        event_id=reply.event_id, duplicate=reply.duplicate, applied=reply.applied, order_id=reply.order_id or None
    )
