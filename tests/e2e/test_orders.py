"""Orders through the REST edge with the whole chain running: edge, user_svc,
product_svc, order_svc, PostgreSQL, FerretDB and Kafka."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from devstack.cluster import Cluster
from tests.e2e.helpers import admin_session, assert_problem, bearer, register, until_ready

ADDRESS = {"recipient_name": "Ann Buyer", "line1": "1 Main St", "city": "Berlin", "postal_code": "10115",
           "country_code": "DE"}  # fmt: skip


@pytest.fixture(scope="module")
def stack(services) -> Cluster:
    return services("user_svc", "product_svc", "order_svc", "edge")


@pytest.fixture
async def http(stack: Cluster) -> AsyncIterator[httpx.AsyncClient]:
    limits = httpx.Limits(max_connections=100)
    async with httpx.AsyncClient(base_url=f"http://{stack.addr('edge')}", timeout=30, limits=limits) as client:
        yield client


class Catalog:
    def __init__(self, http: httpx.AsyncClient, admin: dict[str, Any]) -> None:
        self.http, self.admin = http, admin
        self.category = ""

    async def product(self, stock: int, price: int = 2500) -> str:
        if not self.category:
            created = await self.http.post(
                "/api/v1/categories", headers=bearer(self.admin),
                json={"name": "Race", "slug": f"race-{uuid.uuid4().hex[:8]}"},
            )  # fmt: skip
            assert created.status_code == 201, created.text
            self.category = created.json()["id"]
        product = await self.http.post(
            "/api/v1/products",
            headers=bearer(self.admin),
            json={"name": "Last units", "category_id": self.category, "stock": stock,
                  "price": {"amount_minor": price, "currency": "EUR"}},
        )  # fmt: skip
        assert product.status_code == 201, product.text
        return str(product.json()["id"])

    async def stock(self, product_id: str) -> int:
        return int((await self.http.get(f"/api/v1/products/{product_id}")).json()["stock"])


@pytest.fixture
async def catalog(http: httpx.AsyncClient, stack: Cluster) -> Catalog:
    return Catalog(http, await admin_session(http, stack))


async def place(
    http: httpx.AsyncClient, buyer: dict[str, Any], product: str, quantity: int, key: str = ""
) -> httpx.Response:
    headers = {**bearer(buyer), **({"Idempotency-Key": key} if key else {})}
    return await http.post(
        "/api/v1/orders", headers=headers,
        json={"items": [{"product_id": product, "quantity": quantity}], "shipping_address": ADDRESS},
    )  # fmt: skip


async def test_order_lifecycle_through_the_edge(http: httpx.AsyncClient, catalog: Catalog) -> None:
    product = await catalog.product(stock=3, price=2500)
    buyer = await register(http)
    created = await place(http, buyer, product, 2, key="first-click")
    assert created.status_code == 201, created.text
    order = created.json()
    assert order["status"] == "pending_payment"
    assert order["total"] == {"amount_minor": 5000, "currency": "EUR"}  # free shipping from 50.00
    repeat = await place(http, buyer, product, 2, key="first-click")
    assert repeat.status_code == 201 and repeat.json() == order
    assert_problem(await place(http, buyer, product, 1, key="first-click"), 422)

    declined = await http.post(
        f"/api/v1/orders/{order['id']}/pay", headers=bearer(buyer), json={"payment_method_token": "tok_decline"}
    )
    assert_problem(declined, 402)
    paid = await http.post(
        f"/api/v1/orders/{order['id']}/pay",
        headers={**bearer(buyer), "Idempotency-Key": "pay-1"},
        json={"payment_method_token": "tok_approve"},
    )
    assert paid.status_code == 200, paid.text
    assert paid.json()["order"]["status"] == "paid" and paid.json()["payment"]["status"] == "approved"

    admin = catalog.admin
    assert_problem(await http.post(f"/api/v1/orders/{order['id']}/ship", headers=bearer(buyer),
                                   json={"carrier": "DHL", "tracking_number": "1"}), 403)  # fmt: skip
    shipped = await http.post(
        f"/api/v1/orders/{order['id']}/ship", headers=bearer(admin), json={"carrier": "DHL", "tracking_number": "1"}
    )
    assert shipped.json()["shipment"]["carrier"] == "DHL"
    cancel = await http.post(f"/api/v1/orders/{order['id']}/cancel", headers=bearer(buyer), json={})
    body = assert_problem(cancel, 409)
    assert body["current_state"] == "ORDER_STATUS_SHIPPED"
    delivered = await http.post(f"/api/v1/orders/{order['id']}/deliver", headers=bearer(admin))
    assert delivered.json()["status"] == "delivered"

    mine = (await http.get("/api/v1/orders", headers=bearer(buyer))).json()
    assert [o["id"] for o in mine["items"]] == [order["id"]]
    assert_problem(await http.get(f"/api/v1/orders/{order['id']}", headers=bearer(await register(http))), 404)
    listed = await http.get("/api/v1/admin/orders", headers=bearer(admin), params={"user_id": buyer["user"]["id"]})
    assert [o["id"] for o in listed.json()["items"]] == [order["id"]]
    assert await catalog.stock(product) == 1


async def test_bad_orders_get_clear_4xx(http: httpx.AsyncClient, catalog: Catalog) -> None:
    buyer = await register(http)
    product = await catalog.product(stock=1)
    assert_problem(await http.post("/api/v1/orders", json={"items": []}), 401)
    empty = assert_problem(
        await http.post("/api/v1/orders", headers=bearer(buyer), json={"items": [], "shipping_address": ADDRESS}), 400
    )
    assert empty["errors"][0]["field"] == "items"
    assert_problem(await place(http, buyer, str(uuid.uuid4()), 1), 404)
    short = assert_problem(await place(http, buyer, product, 2), 409)
    assert short["product_id"] == product
    assert_problem(await place(http, buyer, product, 0), 400)


async def test_many_buyers_race_for_the_last_units(http: httpx.AsyncClient, catalog: Catalog) -> None:
    product = await catalog.product(stock=7)
    buyers = await asyncio.gather(*(register(http) for _ in range(20)))
    responses = await asyncio.gather(*(place(http, buyer, product, 1) for buyer in buyers))
    codes = sorted(r.status_code for r in responses)
    assert codes.count(201) == 7, codes
    assert codes.count(409) == 13, codes
    assert await catalog.stock(product) == 0


async def test_product_service_down_gives_503_and_leaks_nothing(
    http: httpx.AsyncClient, catalog: Catalog, stack: Cluster
) -> None:
    product = await catalog.product(stock=4)
    buyer = await register(http)
    stack.stop_service("product_svc")
    try:
        down = await place(http, buyer, product, 2)
        assert_problem(down, 503)
        assert down.json().get("dependency") == "product_svc"
    finally:
        stack.start_service("product_svc")
        await until_ready(http, "product_svc")
    assert await catalog.stock(product) == 4
    mine = (await http.get("/api/v1/orders", headers=bearer(buyer))).json()
    assert mine["items"] == []
    assert (await place(http, buyer, product, 2)).status_code == 201


async def test_an_order_with_100_invalid_lines_answers_400_with_the_violations_truncated_and_counted(
    http: httpx.AsyncClient,
) -> None:
    """100 lines over order_svc's quantity cap: 100 field violations, more than
    fit in gRPC's trailing metadata; they arrive truncated and counted, never as
    a 429 with the transport's own message."""
    buyer = await register(http)
    lines = [{"product_id": str(uuid.uuid4()), "quantity": 500} for _ in range(100)]
    response = await http.post(
        "/api/v1/orders", headers=bearer(buyer), json={"items": lines, "shipping_address": ADDRESS}
    )
    problem = assert_problem(response, 400)
    errors = problem["errors"]
    assert 0 < len(errors) < 100
    assert errors[0] == {"field": "items[0].quantity", "message": "must be between 1 and 100"}
    assert [e["field"] for e in errors] == [f"items[{n}].quantity" for n in range(len(errors))]
    assert problem["omitted_violations"] == 100 - len(errors)
    assert problem["detail"] == "invalid items[0].quantity, items[1].quantity, items[2].quantity and 97 more"
    assert "metadata" not in response.text
