"""A store killed (``kill -9``) and restarted under load, on the durable settings
``make up`` runs with: nothing the cluster acknowledged is lost, work in flight
completes when the client retries with its Idempotency-Key, and the services
reconnect by themselves (issue 17)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from devstack.cluster import Cluster
from tests.catalog_helpers import held
from tests.conftest import throwaway_cluster
from tests.tokens import Identities
from tests.waiting import Receiver, eventually

ADDRESS = {"recipient_name": "Ann Buyer", "line1": "1 Main St", "city": "Berlin", "postal_code": "10115",
           "country_code": "DE"}  # fmt: skip
INITIAL_STOCK = 10_000


@pytest.fixture(scope="module")
def durable() -> Iterator[Cluster]:
    """A cluster of its own, with every store on its durable settings."""
    with throwaway_cluster("shop-durable-", unsafe_fast_storage=False) as cluster:
        # Bursts of orders from a few buyers: the per-user order limits are lifted, as in bench/.
        lifted = {"SHOP_ORDER_CREATE_LIMIT": "1000000", "SHOP_UNPAID_ORDERS_LIMIT": "1000000"}
        cluster.overrides["order_svc"] = {**cluster.overrides.get("order_svc", {}), **lifted}
        cluster.start_services(["product_svc", "order_svc", "notify_svc", "edge"])
        yield cluster


@pytest.fixture
async def http(durable: Cluster) -> AsyncIterator[httpx.AsyncClient]:
    limits = httpx.Limits(max_connections=50)
    async with httpx.AsyncClient(base_url=f"http://{durable.addr('edge')}", timeout=20, limits=limits) as client:
        yield client


def auth(metadata: list[tuple[str, str]]) -> dict[str, str]:
    return {"Authorization": metadata[0][1]}


async def new_product(http: httpx.AsyncClient, admin: dict[str, str], stock: int = INITIAL_STOCK) -> str:
    category = await http.post(
        "/api/v1/categories", headers=admin, json={"name": "Durable", "slug": f"durable-{uuid.uuid4().hex[:8]}"}
    )
    assert category.status_code == 201, category.text
    product = await http.post(
        "/api/v1/products", headers=admin,
        json={"name": "Kept", "category_id": category.json()["id"], "stock": stock,
              "price": {"amount_minor": 1200, "currency": "EUR"}},
    )  # fmt: skip
    assert product.status_code == 201, product.text
    return str(product.json()["id"])


def retryable(response: httpx.Response) -> bool:
    """A store is down (5xx), or the key's first request is still being processed (409)."""
    return response.status_code >= 500 or (
        response.status_code == 409 and "still being processed" in response.json().get("detail", "")
    )


async def answered(send: Any, seconds: float = 60, seen: list[httpx.Response] | None = None) -> httpx.Response:
    """Send until the cluster gives a final answer, as a client with a fixed
    Idempotency-Key would: through the outage and after it (every answer into ``seen``)."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            response: httpx.Response = await send()
            if seen is not None:
                seen.append(response)
            if not retryable(response):
                return response
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, "no final answer within the deadline"
        await asyncio.sleep(0.2)


async def place(
    http: httpx.AsyncClient, buyer: dict[str, str], product: str, key: str, quantity: int = 2
) -> httpx.Response:
    return await http.post(
        "/api/v1/orders", headers={**buyer, "Idempotency-Key": key},
        json={"items": [{"product_id": product, "quantity": quantity}], "shipping_address": ADDRESS},
    )  # fmt: skip


async def orders_of(http: httpx.AsyncClient, buyer: dict[str, str]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    token = ""
    while True:
        page = await http.get("/api/v1/orders", headers=buyer, params={"page_size": 100, "page_token": token})
        assert page.status_code == 200, page.text
        found += page.json()["items"]
        token = page.json().get("next_page_token") or ""
        if not token:
            return found


async def feed(http: httpx.AsyncClient, buyer: dict[str, str]) -> list[dict[str, Any]]:
    page = await http.get("/api/v1/notifications", headers=buyer, params={"page_size": 100})
    assert page.status_code == 200, page.text
    return [note for note in page.json()["items"] if note["kind"] != "announcement"]


async def stock(http: httpx.AsyncClient, product: str) -> int:
    return int((await http.get(f"/api/v1/products/{product}")).json()["stock"])


async def test_postgres_killed_during_a_burst_of_orders(durable: Cluster, http: httpx.AsyncClient) -> None:
    ids = Identities(durable)
    product = await new_product(http, auth(ids.admin()))
    buyers = [auth(ids.customer()[1]) for _ in range(10)]
    answers: dict[str, httpx.Response] = {}
    buyer_of: dict[str, dict[str, str]] = {}
    placed = asyncio.Event()

    async def shop(buyer: dict[str, str]) -> None:
        for _ in range(10):
            key = f"burst-{uuid.uuid4()}"
            buyer_of[key] = buyer
            answers[key] = await answered(lambda key=key: place(http, buyer, product, key))
            if len(answers) >= 25:
                placed.set()

    async def crash() -> None:
        await placed.wait()
        postgres = durable.servers["postgres"]
        await asyncio.to_thread(postgres.kill)
        await asyncio.sleep(3)
        await asyncio.to_thread(postgres.restart)

    await asyncio.gather(crash(), *(shop(buyer) for buyer in buyers))

    created = {key: r.json() for key, r in answers.items() if r.status_code == 201}
    refused = [r for r in answers.values() if r.status_code != 201]
    assert len(created) >= 25
    # A request the outage cut short is either completed on retry or refused cleanly.
    assert all(400 <= r.status_code < 500 and r.json()["detail"] for r in refused), [r.text for r in refused]
    # Every order answered 201 exists, and its key answers the same order again.
    by_id: dict[str, dict[str, Any]] = {}
    for buyer in buyers:
        for order in await orders_of(http, buyer):
            by_id[order["id"]] = order
    missing = [order["id"] for order in created.values() if order["id"] not in by_id]
    assert not missing, f"orders answered 201 but gone after the restart: {missing}"
    for key, order in created.items():
        again = await place(http, buyer_of[key], product, key)
        assert again.status_code == 201 and again.json()["id"] == order["id"], again.text

    # Stock + units in live orders = the initial stock (the sweeper gives back what
    # reservations of never-written orders held).
    live_units = sum(
        item["quantity"] for order in by_id.values() if order["status"] != "cancelled" for item in order["lines"]
    )

    async def balanced() -> bool:
        return await stock(http, product) + live_units == INITIAL_STOCK

    await eventually(balanced, 30, "stock + units in live orders = initial stock")

    # Each order's notification arrives exactly once.
    notes: list[dict[str, Any]] = []

    async def all_notified() -> bool:
        notes.clear()
        for buyer in buyers:
            notes.extend(note for note in await feed(http, buyer) if note["kind"] == "order_created")
        return {note["data"]["order_id"] for note in notes} >= set(by_id)

    await eventually(all_notified, 60, "an order_created notification for every order")
    per_order = Counter(note["data"]["order_id"] for note in notes)
    assert set(per_order) == set(by_id)
    assert set(per_order.values()) == {1}, [k for k, n in per_order.items() if n > 1]


async def test_redis_killed_keeps_feeds_webhooks_and_carts(durable: Cluster, http: httpx.AsyncClient) -> None:
    ids = Identities(durable)
    product = await new_product(http, auth(ids.admin()))
    buyers = [auth(ids.customer()[1]) for _ in range(5)]
    async with Receiver(200) as receiver:
        hook = await http.post("/api/v1/webhooks", headers=buyers[0], json={"url": receiver.url, "kinds": []})
        assert hook.status_code == 201, hook.text
        cart = await http.post("/api/v1/cart/items", headers=buyers[1], json={"product_id": product, "quantity": 3})
        assert cart.status_code == 200, cart.text
        for n, buyer in enumerate(buyers):
            for k in range(4):
                created = await place(http, buyer, product, f"redis-{n}-{k}")
                assert created.status_code == 201, created.text

        async def fed() -> list[list[dict[str, Any]]] | None:
            feeds = [await feed(http, buyer) for buyer in buyers]
            return feeds if all(len(f) >= 4 for f in feeds) else None

        before = await eventually(fed, 30, "four notifications in every feed")
        await receiver.wait_for(4)
        read = before[2][0]["id"]
        marked = await http.post(f"/api/v1/notifications/{read}/read", headers=buyers[2])
        assert marked.status_code in (200, 204), marked.text
        await asyncio.sleep(1.1)  # what was there a second before the kill

        redis = durable.servers["redis"]
        await asyncio.to_thread(redis.kill)
        await asyncio.to_thread(redis.restart)

        # Every notification (and the read mark) is still in its feed.
        for buyer, earlier in zip(buyers, before, strict=True):
            reply = await answered(lambda buyer=buyer: feed_response(http, buyer))
            now = {note["id"]: note for note in reply.json()["items"]}
            assert {note["id"] for note in earlier} <= set(now)
        assert {note["id"]: note["read"] for note in await feed(http, buyers[2])}[read] is True
        # The cart survived.
        kept = await http.get("/api/v1/cart", headers=buyers[1])
        assert kept.status_code == 200, kept.text
        assert [(line["product_id"], line["quantity"]) for line in kept.json()["lines"]] == [(product, 3)]
        # The webhook is still registered and still delivers what comes next.
        listed = await http.get("/api/v1/webhooks", headers=buyers[0])
        assert [h["id"] for h in listed.json()["items"]] == [hook.json()["webhook"]["id"]]
        delivered = len(receiver.requests)
        after = await answered(lambda: place(http, buyers[0], product, "redis-after"))
        assert after.status_code == 201, after.text
        await receiver.wait_for(delivered + 1)


async def feed_response(http: httpx.AsyncClient, buyer: dict[str, str]) -> httpx.Response:
    return await http.get("/api/v1/notifications", headers=buyer, params={"page_size": 100})


@pytest.mark.parametrize("store", ["docstore_pg", "mongo"], ids=["document-store-postgres", "ferretdb"])
async def test_the_document_store_killed_during_a_checkout_burst(
    durable: Cluster, http: httpx.AsyncClient, store: str
) -> None:
    """The catalog's PostgreSQL (under FerretDB) or FerretDB itself dies while buyers
    race for the last units: no oversell, no reservation lost, and meanwhile clear
    503s, never an internal error."""
    ids = Identities(durable)
    stock_before = 60
    product = await new_product(http, auth(ids.admin()), stock=stock_before)
    buyers = [auth(ids.customer()[1]) for _ in range(10)]
    answers: dict[str, httpx.Response] = {}
    seen: list[httpx.Response] = []
    placed = asyncio.Event()

    async def shop(buyer: dict[str, str]) -> None:
        for _ in range(10):
            key = f"docstore-{uuid.uuid4()}"
            answers[key] = await answered(lambda key=key: place(http, buyer, product, key, 1), seen=seen)
            if len(answers) >= 20:
                placed.set()

    async def crash() -> None:
        await placed.wait()
        server = durable.servers[store]
        await asyncio.to_thread(server.kill)
        await asyncio.sleep(3)
        await asyncio.to_thread(server.restart)

    await asyncio.gather(crash(), *(shop(buyer) for buyer in buyers))

    # Meanwhile: 503 problems that say what is unavailable (or the 409 of a key in flight).
    for response in seen:
        assert response.status_code in (201, 409, 503), response.text
        if response.status_code == 503:
            assert response.headers["content-type"].startswith("application/problem+json")
            assert "unavailable" in response.json()["detail"], response.text
    # Finally: exactly the stock was sold, and every live order's units are held for it.
    created = [r.json() for r in answers.values() if r.status_code == 201]
    refused = [r for r in answers.values() if r.status_code != 201]
    assert len(created) == stock_before, [r.text for r in refused][:5]
    assert all(r.status_code == 409 and "stock" in r.json()["detail"] for r in refused), [r.text for r in refused][:5]
    live = {order["id"]: order for buyer in buyers for order in await orders_of(http, buyer)}
    assert {order["id"] for order in created} <= set(live)

    async def settled() -> bool:
        holds = await held(durable, product)
        units = {
            oid: sum(line["quantity"] for line in o["lines"]) for oid, o in live.items() if o["status"] != "cancelled"
        }
        return holds == units and await stock(http, product) + sum(units.values()) == stock_before

    await eventually(settled, 30, "holds = units of the live orders, stock + held = the initial stock")
