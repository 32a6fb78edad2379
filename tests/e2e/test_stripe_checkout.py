"""The README's walk-through with ``SHOP_PAYMENT_PROCESSOR=stripe``: order_svc takes
payments through the Stripe adapter, against the stripe-mock that devstack runs,
and a cancel refunds through Stripe.  (order_svc is restarted with the setting for
this module and restarted back after it.)"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from devstack.cluster import Cluster
from tests.e2e.helpers import admin_session, assert_problem, bearer, register, until_ready

ADDRESS = {"recipient_name": "Ann Buyer", "line1": "1 Main St", "city": "Berlin", "postal_code": "10115",
           "country_code": "DE"}  # fmt: skip


def _restart_order_svc(cluster: Cluster, processor: str) -> None:
    cluster.stop_service("order_svc")
    cluster.overrides.setdefault("order_svc", {})["SHOP_PAYMENT_PROCESSOR"] = processor
    cluster.start_service("order_svc")


@pytest.fixture(scope="module")
def stack(services) -> Iterator[Cluster]:
    cluster: Cluster = services("user_svc", "product_svc", "order_svc", "edge")
    assert "stripe_mock" in cluster.servers  # order_svc's servers include it (devstack/cluster.py)
    _restart_order_svc(cluster, "stripe")
    try:
        yield cluster
    finally:
        _restart_order_svc(cluster, "test")


@pytest.fixture
async def http(stack: Cluster) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=f"http://{stack.addr('edge')}", timeout=30) as client:
        await until_ready(client, "order_svc")
        yield client


async def test_pay_with_a_stripe_payment_method_and_cancel_with_a_refund(
    http: httpx.AsyncClient, stack: Cluster
) -> None:
    admin = await admin_session(http, stack)
    category = await http.post("/api/v1/categories", headers=bearer(admin),
                               json={"name": "Stripe", "slug": f"stripe-{uuid.uuid4().hex[:8]}"})  # fmt: skip
    product = await http.post(
        "/api/v1/products", headers=bearer(admin),
        json={"name": "Paid by card", "category_id": category.json()["id"], "stock": 3,
              "price": {"amount_minor": 4200, "currency": "EUR"}},
    )  # fmt: skip
    product_id = product.json()["id"]
    buyer = await register(http)
    me = bearer(buyer)
    lines = [{"product_id": product_id, "quantity": 1}]
    order = await http.post("/api/v1/orders", headers=me, json={"items": lines, "shipping_address": ADDRESS})
    order_id = order.json()["id"]

    # The test processor's tokens mean nothing to Stripe: stripe-mock takes any string, so only a
    # real Stripe would refuse it; what stripe-mock answers is a succeeded PaymentIntent.
    pay = {"payment_method_token": "pm_card_visa"}
    paid = await http.post(f"/api/v1/orders/{order_id}/pay", headers={**me, "Idempotency-Key": "card-1"}, json=pay)
    assert paid.status_code == 200, paid.text
    assert paid.json()["order"]["status"] == "paid" and paid.json()["payment"]["status"] == "approved"
    again = await http.post(f"/api/v1/orders/{order_id}/pay", headers={**me, "Idempotency-Key": "card-1"}, json=pay)
    assert again.json()["payment"]["id"] == paid.json()["payment"]["id"]  # replayed, not charged again
    assert_problem(await http.post(f"/api/v1/orders/{order_id}/pay", headers=me, json=pay), 409)

    cancelled = await http.post(f"/api/v1/orders/{order_id}/cancel", headers=me, json={})
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["cancellation"]["refunded"] is True
    assert [p["status"] for p in cancelled.json()["payments"]] == ["refunded"]
