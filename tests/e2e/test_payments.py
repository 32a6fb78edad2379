"""Stripe's webhook events through the edge (``POST /api/v1/payments/stripe/events``),
signed the way Stripe signs them, with the local cluster's webhook signing secret."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import httpx
import pytest
import stripe

from common import events
from common.settings import DEV_SECRETS
from devstack.cluster import Cluster
from tests.e2e.helpers import admin_session, assert_problem, bearer, register
from tests.kafka_helpers import consume

ADDRESS = {"recipient_name": "Ann Buyer", "line1": "1 Main St", "city": "Berlin", "postal_code": "10115",
           "country_code": "DE"}  # fmt: skip
EVENTS = "/api/v1/payments/stripe/events"
SECRET = DEV_SECRETS["stripe_webhook_secret"]


@pytest.fixture(scope="module")
def stack(services) -> Cluster:
    return services("user_svc", "product_svc", "order_svc", "edge")


class Shop:
    def __init__(self, http: httpx.AsyncClient, admin: dict[str, Any]) -> None:
        self.http, self.admin, self.category = http, admin, ""

    async def product(self, stock: int = 5, price: int = 1500) -> str:
        if not self.category:
            created = await self.http.post(
                "/api/v1/categories", headers=bearer(self.admin),
                json={"name": "Pay", "slug": f"pay-{uuid.uuid4().hex[:8]}"},
            )  # fmt: skip
            self.category = created.json()["id"]
        product = await self.http.post(
            "/api/v1/products", headers=bearer(self.admin),
            json={"name": "Paid thing", "category_id": self.category, "stock": stock,
                  "price": {"amount_minor": price, "currency": "EUR"}},
        )  # fmt: skip
        assert product.status_code == 201, product.text
        return str(product.json()["id"])

    async def order(self, buyer: dict[str, Any], product: str, quantity: int = 1) -> dict[str, Any]:
        placed = await self.http.post(
            "/api/v1/orders", headers=bearer(buyer),
            json={"items": [{"product_id": product, "quantity": quantity}], "shipping_address": ADDRESS},
        )  # fmt: skip
        assert placed.status_code == 201, placed.text
        order: dict[str, Any] = placed.json()
        return order

    async def get(self, buyer: dict[str, Any], order_id: str) -> dict[str, Any]:
        found: dict[str, Any] = (await self.http.get(f"/api/v1/orders/{order_id}", headers=bearer(buyer))).json()
        return found

    async def stock(self, product: str) -> int:
        return int((await self.http.get(f"/api/v1/products/{product}")).json()["stock"])


@pytest.fixture
async def shop(http: httpx.AsyncClient, stack: Cluster) -> Shop:
    return Shop(http, await admin_session(http, stack))


def intent_event(kind: str, order: dict[str, Any], payment_id: str, intent: str, **extra: Any) -> dict[str, Any]:
    return {
        "id": f"evt_{uuid.uuid4().hex[:24]}", "object": "event", "api_version": "2026-10-28.endive",
        "created": int(time.time()), "livemode": False, "type": kind,
        "data": {"object": {
            "id": intent, "object": "payment_intent", "amount": order["total"]["amount_minor"],
            "currency": order["total"]["currency"].lower(), "status": "succeeded",
            "metadata": {"order_id": order["id"], "payment_id": payment_id}, **extra,
        }},
    }  # fmt: skip


def signed(event: dict[str, Any], secret: str = SECRET, at: int | None = None) -> tuple[bytes, dict[str, str]]:
    payload = json.dumps(event)
    header = stripe.WebhookSignature.generate_signature_header(payload, secret, timestamp=at)
    return payload.encode(), {"Stripe-Signature": header, "Content-Type": "application/json; charset=utf-8"}


def sign_text(payload: str) -> str:
    return stripe.WebhookSignature.generate_signature_header(payload, SECRET)


def intent_id() -> str:
    return f"pi_3{uuid.uuid4().hex[:20]}"


async def deliver(http: httpx.AsyncClient, body: bytes, headers: dict[str, str]) -> httpx.Response:
    return await http.post(EVENTS, content=body, headers=headers)


async def order_event_types(cluster: Cluster, order_id: str, at_least: int) -> list[str]:
    found: list[str] = []
    for _ in range(10):
        messages = await consume(cluster.servers["kafka"], events.ORDERS_TOPIC, 100_000, timeout=3)
        found = [events.header(m.headers(), events.EVENT_TYPE) or "" for m in messages if m.key() == order_id.encode()]
        if len(found) >= at_least:
            break
    return [name.rsplit(".", 1)[-1] for name in found]


async def test_a_signed_succeeded_event_pays_the_order_and_a_replay_changes_nothing(
    http: httpx.AsyncClient, shop: Shop, stack: Cluster
) -> None:
    buyer = await register(http)
    order = await shop.order(buyer, await shop.product())
    payment_id = str(uuid.uuid4())
    event = intent_event("payment_intent.succeeded", order, payment_id, intent_id())
    body, headers = signed(event)
    first = await deliver(http, body, headers)
    assert first.status_code == 200, first.text
    assert first.json() == {"event_id": event["id"], "duplicate": False, "applied": True, "order_id": order["id"]}
    paid = await shop.get(buyer, order["id"])
    assert paid["status"] == "paid" and paid["paid_at"]
    assert [(p["id"], p["status"]) for p in paid["payments"]] == [(payment_id, "approved")]

    again = await deliver(http, body, headers)  # Stripe delivers at least once
    assert again.status_code == 200 and again.json()["duplicate"] is True
    resigned = await deliver(http, *signed(event))  # a later delivery, signed again
    assert resigned.json()["duplicate"] is True
    assert len((await shop.get(buyer, order["id"]))["payments"]) == 1
    assert await order_event_types(stack, order["id"], 2) == ["OrderCreated", "OrderPaid"]
    # The synchronous path sees the payment: the order is no longer payable.
    pay = await http.post(f"/api/v1/orders/{order['id']}/pay", headers=bearer(buyer),
                          json={"payment_method_token": "tok_approve"})  # fmt: skip
    assert_problem(pay, 409)


async def test_a_tampered_unsigned_or_stale_event_is_refused(http: httpx.AsyncClient, shop: Shop) -> None:
    buyer = await register(http)
    order = await shop.order(buyer, await shop.product())
    event = intent_event("payment_intent.succeeded", order, str(uuid.uuid4()), intent_id())
    body, headers = signed(event)
    tampered = body.replace(b'"amount": ', b'"amount": 1')
    for refused in (
        await deliver(http, tampered, headers),
        await deliver(http, body, {"Content-Type": "application/json"}),  # unsigned
        await deliver(http, *signed(event, secret="whsec_someone_else")),
        await deliver(http, *signed(event, at=int(time.time()) - 3600)),  # an old delivery captured and replayed
        await deliver(
            http, b"not json", {**headers, "Stripe-Signature": sign_text("not json")}
        ),  # signed, not an event
    ):
        problem = assert_problem(refused, 400)
        assert "signature" in problem["detail"].lower() or "json" in problem["detail"].lower()
    assert_problem(await http.post(EVENTS, content=body, headers={**headers, "Content-Type": "text/plain"}), 415)
    unchanged = await shop.get(buyer, order["id"])
    assert unchanged["status"] == "pending_payment" and unchanged["payments"] == []


async def test_a_refund_at_stripe_cancels_the_paid_order_and_returns_its_stock(
    http: httpx.AsyncClient, shop: Shop
) -> None:
    buyer = await register(http)
    product = await shop.product(stock=4)
    order = await shop.order(buyer, product, 2)
    assert await shop.stock(product) == 2
    intent = intent_id()
    await deliver(http, *signed(intent_event("payment_intent.succeeded", order, str(uuid.uuid4()), intent)))
    refund = {
        "id": f"evt_{uuid.uuid4().hex[:24]}", "object": "event", "type": "charge.refunded",
        "data": {"object": {"id": "ch_3Refund", "object": "charge", "payment_intent": intent,
                            "amount": order["total"]["amount_minor"], "amount_refunded": order["total"]["amount_minor"],
                            "refunded": True, "currency": "eur", "metadata": {}}},
    }  # fmt: skip
    applied = await deliver(http, *signed(refund))
    assert applied.status_code == 200 and applied.json()["applied"] is True
    cancelled = await shop.get(buyer, order["id"])
    assert cancelled["status"] == "cancelled" and cancelled["cancellation"]["refunded"] is True
    assert [p["status"] for p in cancelled["payments"]] == ["refunded"]
    assert await shop.stock(product) == 4


async def test_a_failed_payment_event_leaves_the_order_payable(http: httpx.AsyncClient, shop: Shop) -> None:
    buyer = await register(http)
    order = await shop.order(buyer, await shop.product())
    failed = intent_event(
        "payment_intent.payment_failed", order, str(uuid.uuid4()), intent_id(), status="requires_payment_method",
        last_payment_error={"type": "card_error", "code": "card_declined", "decline_code": "insufficient_funds"},
    )  # fmt: skip
    reply = await deliver(http, *signed(failed))
    assert reply.status_code == 200 and reply.json()["applied"] is True
    declined = await shop.get(buyer, order["id"])
    assert declined["status"] == "pending_payment"
    assert [(p["status"], p["decline_reason"]) for p in declined["payments"]] == [("declined", "insufficient_funds")]
    other = {"id": f"evt_{uuid.uuid4().hex}", "object": "event", "type": "customer.created",
             "data": {"object": {"object": "customer"}}}  # fmt: skip
    ignored = await deliver(http, *signed(other))
    assert ignored.status_code == 200 and ignored.json()["applied"] is False
    pay = await http.post(f"/api/v1/orders/{order['id']}/pay", headers=bearer(buyer),
                          json={"payment_method_token": "tok_approve"})  # fmt: skip
    assert pay.status_code == 200, pay.text
