"""The shopping cart through the edge against real Redis, product_svc and order_svc."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx
import pytest

from devstack.cluster import Cluster
from tests.e2e.helpers import PASSWORD, admin_session, assert_problem, bearer, register, until_ready

ADDRESS = {"recipient_name": "Ann Buyer", "line1": "1 Main St", "city": "Berlin", "postal_code": "10115",
           "country_code": "DE"}  # fmt: skip


@pytest.fixture(scope="module")
def stack(services) -> Cluster:
    return services("user_svc", "product_svc", "order_svc", "edge")


class Admin:
    def __init__(self, http: httpx.AsyncClient, session: dict[str, Any]) -> None:
        self.http, self.session, self.category = http, session, ""

    async def product(self, stock: int = 10, price: int = 1000, currency: str = "EUR", weight: int = 100) -> str:
        if not self.category:
            created = await self.http.post(
                "/api/v1/categories", headers=bearer(self.session),
                json={"name": "Cart", "slug": f"cart-{uuid.uuid4().hex[:8]}"},
            )  # fmt: skip
            self.category = created.json()["id"]
        product = await self.http.post(
            "/api/v1/products", headers=bearer(self.session),
            json={"name": f"Item {uuid.uuid4().hex[:4]}", "category_id": self.category, "stock": stock,
                  "weight_grams": weight, "price": {"amount_minor": price, "currency": currency}},
        )  # fmt: skip
        assert product.status_code == 201, product.text
        return str(product.json()["id"])

    async def patch(self, product_id: str, **changes: Any) -> None:
        response = await self.http.patch(f"/api/v1/products/{product_id}", headers=bearer(self.session), json=changes)
        assert response.status_code == 200, response.text


@pytest.fixture
async def admin(http: httpx.AsyncClient, stack: Cluster) -> Admin:
    return Admin(http, await admin_session(http, stack))


def quantities(cart: dict[str, Any]) -> dict[str, int]:
    return {line["product_id"]: line["quantity"] for line in cart["lines"]}


async def test_add_change_remove_and_bad_input(http: httpx.AsyncClient, admin: Admin) -> None:
    a, b = await admin.product(stock=5, price=1000), await admin.product(stock=5, price=250)
    user = await register(http)
    me = bearer(user)
    empty = await http.get("/api/v1/cart", headers=me)
    assert empty.status_code == 200, empty.text
    assert empty.json()["lines"] == []
    await http.post("/api/v1/cart/items", headers=me, json={"product_id": a, "quantity": 2})
    cart = (await http.post("/api/v1/cart/items", headers=me, json={"product_id": b, "quantity": 1})).json()
    assert quantities(cart) == {a: 2, b: 1}
    assert cart["subtotal"] == {"amount_minor": 2250, "currency": "EUR"}
    assert cart["lines"][0]["line_total"]["amount_minor"] == 2000 and cart["checkout_ready"]
    changed = await http.patch(f"/api/v1/cart/items/{a}", headers=me, json={"quantity": 4})
    assert quantities(changed.json()) == {a: 4, b: 1}
    removed = await http.delete(f"/api/v1/cart/items/{b}", headers=me)
    assert quantities(removed.json()) == {a: 4}

    assert_problem(await http.post("/api/v1/cart/items", headers=me, json={"product_id": str(uuid.uuid4())}), 404)
    assert_problem(await http.post("/api/v1/cart/items", headers=me, json={"product_id": a, "quantity": 0}), 400)
    assert_problem(await http.post("/api/v1/cart/items", headers=me, json={"product_id": a, "quantity": 101}), 400)
    short = assert_problem(
        await http.post("/api/v1/cart/items", headers=me, json={"product_id": a, "quantity": 2}), 409
    )
    assert short["product_id"] == a
    assert_problem(await http.patch(f"/api/v1/cart/items/{b}", headers=me, json={"quantity": 1}), 404)
    dollars = await admin.product(currency="USD")
    assert_problem(await http.post("/api/v1/cart/items", headers=me, json={"product_id": dollars}), 409)
    cleared = await http.delete("/api/v1/cart", headers=me)
    assert cleared.json()["lines"] == []


async def test_guest_cart_merges_at_login(http: httpx.AsyncClient, admin: Admin) -> None:
    a, b = await admin.product(stock=3), await admin.product(stock=10)
    user = await register(http)
    await http.post("/api/v1/cart/items", headers=bearer(user), json={"product_id": a, "quantity": 2})

    first = await http.post("/api/v1/cart/items", json={"product_id": a, "quantity": 2})
    token = first.headers["x-cart-token"]
    assert first.json()["cart_token"] == token
    await http.post("/api/v1/cart/items", headers={"X-Cart-Token": token}, json={"product_id": b, "quantity": 3})
    guest = (await http.get("/api/v1/cart", headers={"X-Cart-Token": token})).json()
    assert quantities(guest) == {a: 2, b: 3}

    login = await http.post(
        "/api/v1/auth/login", headers={"X-Cart-Token": token},
        json={"email": user["user"]["email"], "password": PASSWORD},
    )  # fmt: skip
    assert login.status_code == 200
    merged = (await http.get("/api/v1/cart", headers=bearer(login.json()))).json()
    assert quantities(merged) == {a: 3, b: 3}  # 2 + 2 of a, capped at its stock of 3
    assert (await http.get("/api/v1/cart", headers={"X-Cart-Token": token})).json()["lines"] == []

    assert_problem(await http.get("/api/v1/cart", headers={"X-Cart-Token": token[:-3] + "AAA"}), 401)
    assert_problem(await http.get("/api/v1/cart", headers={"X-Cart-Token": "garbage"}), 401)
    assert_problem(await http.post("/api/v1/cart/checkout", headers={"X-Cart-Token": token},
                                   json={"shipping_method": "standard", "shipping_address": ADDRESS}), 401)  # fmt: skip


async def test_prices_and_flags_are_current_and_checkout_uses_them(http: httpx.AsyncClient, admin: Admin) -> None:
    cheap, doomed = await admin.product(stock=5, price=1000), await admin.product(stock=5, price=500)
    user = await register(http)
    me = bearer(user)
    await http.post("/api/v1/cart/items", headers=me, json={"product_id": cheap, "quantity": 2})
    await http.post("/api/v1/cart/items", headers=me, json={"product_id": doomed, "quantity": 1})
    await admin.patch(cheap, price={"amount_minor": 1200, "currency": "EUR"})
    await admin.patch(doomed, status="archived")
    cart = (await http.get("/api/v1/cart", headers=me)).json()
    lines = {line["product_id"]: line for line in cart["lines"]}
    assert lines[cheap]["unit_price"]["amount_minor"] == 1200
    assert lines[doomed]["archived"] and not cart["checkout_ready"]
    assert cart["subtotal"]["amount_minor"] == 2400  # flagged lines are not counted
    refused = await http.post(
        "/api/v1/cart/checkout", headers=me, json={"shipping_method": "standard", "shipping_address": ADDRESS}
    )
    assert assert_problem(refused, 409)["product_id"] == doomed
    assert quantities((await http.get("/api/v1/cart", headers=me)).json()) == {cheap: 2, doomed: 1}

    await http.delete(f"/api/v1/cart/items/{doomed}", headers=me)
    options = (await http.get("/api/v1/cart/shipping-options", headers=me)).json()["options"]
    assert [(o["method"], o["price"]["amount_minor"]) for o in options] == [("standard", 499), ("express", 1499)]
    ordered = await http.post(
        "/api/v1/cart/checkout", headers={**me, "Idempotency-Key": "cart-1"},
        json={"shipping_method": "express", "shipping_address": ADDRESS},
    )  # fmt: skip
    assert ordered.status_code == 201, ordered.text
    order = ordered.json()
    assert order["lines"][0]["unit_price"]["amount_minor"] == 1200
    assert order["shipping"]["amount_minor"] == 1499 and order["total"]["amount_minor"] == 3899
    empty = await http.get("/api/v1/cart", headers=me)
    assert empty.status_code == 200, empty.text
    assert empty.json()["lines"] == []
    again = await http.post(
        "/api/v1/cart/checkout", headers={**me, "Idempotency-Key": "cart-1"},
        json={"shipping_method": "express", "shipping_address": ADDRESS},
    )  # fmt: skip
    assert again.status_code == 201 and again.json()["id"] == order["id"]
    mine = (await http.get("/api/v1/orders", headers=me)).json()["items"]
    assert [o["id"] for o in mine] == [order["id"]]


async def test_double_checkout_makes_one_order(http: httpx.AsyncClient, admin: Admin) -> None:
    product = await admin.product(stock=10)
    user = await register(http)
    me = bearer(user)
    await http.post("/api/v1/cart/items", headers=me, json={"product_id": product, "quantity": 3})
    body = {"shipping_method": "standard", "shipping_address": ADDRESS}
    replies = await asyncio.gather(
        *(http.post("/api/v1/cart/checkout", headers={**me, "Idempotency-Key": "double"}, json=body) for _ in range(5))
    )
    assert {r.status_code for r in replies} == {201}
    assert len({r.json()["id"] for r in replies}) == 1
    assert int((await http.get(f"/api/v1/products/{product}")).json()["stock"]) == 7


async def test_failed_checkout_leaves_the_cart_untouched(http: httpx.AsyncClient, admin: Admin, stack: Cluster) -> None:
    product = await admin.product(stock=2)
    user = await register(http)
    me = bearer(user)
    await http.post("/api/v1/cart/items", headers=me, json={"product_id": product, "quantity": 2})
    rival = await register(http)
    await http.post("/api/v1/orders", headers=bearer(rival),
                    json={"items": [{"product_id": product, "quantity": 1}], "shipping_address": ADDRESS})  # fmt: skip
    body = {"shipping_method": "standard", "shipping_address": ADDRESS}
    assert_problem(await http.post("/api/v1/cart/checkout", headers=me, json=body), 409)
    assert quantities((await http.get("/api/v1/cart", headers=me)).json()) == {product: 2}

    await http.patch(f"/api/v1/cart/items/{product}", headers=me, json={"quantity": 1})
    stack.stop_service("product_svc")
    try:
        assert_problem(await http.post("/api/v1/cart/checkout", headers=me, json=body), 503)
    finally:
        stack.start_service("product_svc")
        await until_ready(http, "product_svc")
    assert quantities((await http.get("/api/v1/cart", headers=me)).json()) == {product: 1}
    assert (await http.post("/api/v1/cart/checkout", headers=me, json=body)).status_code == 201
