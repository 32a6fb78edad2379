"""A cart checks out once through the edge, whatever the keys of concurrent
checkouts (a client that makes a key per click), and a cart whose order was
written by a checkout that died before emptying it never becomes a second order."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from shop.events.v1 import order_events_pb2

from common import events
from common.clients import pg_engine, redis_client
from common.validation import Address
from devstack.cluster import Cluster
from order_svc.clients import ProductClient
from order_svc.domain import Caller, CartRef, Item, ShippingMethod
from order_svc.orders import Orders, Placement
from order_svc.payments import Processors
from order_svc.payments.testing import TestProcessor
from order_svc.settings import OrderSettings
from order_svc.store import Store
from order_svc.store.carts import CartStore
from tests.e2e.helpers import admin_session, assert_problem, bearer, register
from tests.kafka_helpers import consume

ADDRESS = {"recipient_name": "Ann Buyer", "line1": "1 Main St", "city": "Berlin", "postal_code": "10115",
           "country_code": "DE"}  # fmt: skip
CHECKOUT = {"shipping_method": "standard", "shipping_address": ADDRESS}


@pytest.fixture(scope="module")
def stack(services) -> Cluster:
    return services("user_svc", "product_svc", "order_svc", "edge")


@pytest.fixture
async def http(stack: Cluster) -> AsyncIterator[httpx.AsyncClient]:
    limits = httpx.Limits(max_connections=50)
    async with httpx.AsyncClient(base_url=f"http://{stack.addr('edge')}", timeout=30, limits=limits) as client:
        yield client


async def product(http: httpx.AsyncClient, admin: dict[str, Any], stock: int) -> str:
    category = await http.post("/api/v1/categories", headers=bearer(admin),
                               json={"name": "Once", "slug": f"once-{uuid.uuid4().hex[:8]}"})  # fmt: skip
    created = await http.post(
        "/api/v1/products", headers=bearer(admin),
        json={"name": "Only once", "category_id": category.json()["id"], "stock": stock,
              "price": {"amount_minor": 1200, "currency": "EUR"}},
    )  # fmt: skip
    assert created.status_code == 201, created.text
    return str(created.json()["id"])


async def stock(http: httpx.AsyncClient, product_id: str) -> int:
    return int((await http.get(f"/api/v1/products/{product_id}")).json()["stock"])


async def created_for(cluster: Cluster, user_id: str) -> list[str]:
    """The ids of the orders whose OrderCreated names the user (everything on the topic so far)."""
    messages = await consume(cluster.servers["kafka"], events.ORDERS_TOPIC, 100_000, timeout=4)
    found = []
    for message in messages:
        if (events.header(message.headers(), events.EVENT_TYPE) or "").endswith(".OrderCreated"):
            created = order_events_pb2.OrderCreated.FromString(message.value())
            if created.user_id == user_id:
                found.append(created.order_id)
    return found


async def test_twenty_concurrent_checkouts_with_twenty_keys_make_one_order(
    http: httpx.AsyncClient, stack: Cluster
) -> None:
    admin = await admin_session(http, stack)
    item = await product(http, admin, stock=10)
    buyer = await register(http)
    me = bearer(buyer)
    added = await http.post("/api/v1/cart/items", headers=me, json={"product_id": item, "quantity": 2})
    assert added.status_code == 200, added.text
    replies = await asyncio.gather(
        *(
            http.post("/api/v1/cart/checkout", headers={**me, "Idempotency-Key": f"click-{n}"}, json=CHECKOUT)
            for n in range(20)
        )
    )
    made = [reply for reply in replies if reply.status_code == 201]
    assert len(made) == 1, [reply.text for reply in replies]
    order_id = made[0].json()["id"]
    for refused in (reply for reply in replies if reply.status_code != 201):
        problem = assert_problem(refused, 409)
        assert problem["type"] in (
            "urn:shop:problem:cart_checkout_in_progress",
            "urn:shop:problem:cart_not_checkoutable",
        )
    mine = (await http.get("/api/v1/orders", headers=me)).json()["items"]
    assert [order["id"] for order in mine] == [order_id]
    assert await stock(http, item) == 8  # moved once
    assert (await http.get("/api/v1/cart", headers=me)).json()["lines"] == []
    assert await created_for(stack, buyer["user"]["id"]) == [order_id]


@pytest.fixture
async def in_process(stack: Cluster, postgres, redis_server) -> AsyncIterator[tuple[Orders, CartStore]]:
    """order_svc's use cases and cart store in this process, on the cluster's servers."""
    engine = pg_engine(postgres.url("shop_order"), pool_size=2)
    channel = stack.channel("product_svc", identity="order_svc")
    redis = redis_client(redis_server.url())
    orders = Orders(Store(engine), ProductClient(channel, 5.0), Processors(TestProcessor()),
                    OrderSettings(database_url=postgres.url("shop_order")))  # fmt: skip
    yield orders, CartStore(redis)
    await redis.aclose()
    await channel.close()
    await engine.dispose()


async def test_a_checkout_that_died_after_its_order_cannot_make_a_second(
    http: httpx.AsyncClient, stack: Cluster, in_process: tuple[Orders, CartStore]
) -> None:
    """The first checkout wrote its order (and moved the stock) and died before it
    emptied the cart; the next checkout of the unchanged cart is refused naming
    that order, empties the cart, and moves no stock."""
    orders, carts = in_process
    admin = await admin_session(http, stack)
    item = await product(http, admin, stock=10)
    buyer = await register(http)
    me = bearer(buyer)
    await http.post("/api/v1/cart/items", headers=me, json={"product_id": item, "quantity": 3})
    owner = f"u:{buyer['user']['id']}"
    lines, _, generation = await carts.snapshot(owner)
    assert generation and [(line.product_id, line.quantity) for line in lines] == [(item, 3)]
    dead = await orders.create(Placement(
        Caller(uuid.UUID(buyer["user"]["id"])), [Item(item, 3)], Address(**ADDRESS), ShippingMethod.STANDARD,
        None, lambda _: b"", scope="checkout", cart=CartRef(owner, generation),
    ))  # fmt: skip
    assert not isinstance(dead, bytes)
    assert await stock(http, item) == 7

    again = await http.post("/api/v1/cart/checkout", headers={**me, "Idempotency-Key": "after-the-crash"},
                            json=CHECKOUT)  # fmt: skip
    problem = assert_problem(again, 409)
    assert problem["type"] == "urn:shop:problem:cart_already_checked_out"
    assert problem["order_id"] == str(dead.id)
    assert (await http.get("/api/v1/cart", headers=me)).json()["lines"] == []
    assert await stock(http, item) == 7
    assert [o["id"] for o in (await http.get("/api/v1/orders", headers=me)).json()["items"]] == [str(dead.id)]

    # The cart goes on: what is added next is a new generation, and checks out.
    await http.post("/api/v1/cart/items", headers=me, json={"product_id": item, "quantity": 1})
    next_order = await http.post("/api/v1/cart/checkout", headers=me, json=CHECKOUT)
    assert next_order.status_code == 201, next_order.text
    assert await stock(http, item) == 6
