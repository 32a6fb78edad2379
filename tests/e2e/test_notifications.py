"""Notifications through the REST edge: feeds, the live stream (server-sent
events, resumed with Last-Event-ID), announcements, webhooks, and an order's
events arriving in its buyer's feed, against the real services, Kafka and Redis."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import time
import uuid
from typing import Any

import httpx
import pytest

from devstack.cluster import Cluster
from tests.e2e.helpers import assert_problem, bearer, register
from tests.waiting import Receiver

ADDRESS = {"recipient_name": "Ann Buyer", "line1": "1 Main St", "city": "Berlin", "postal_code": "10115",
           "country_code": "DE"}  # fmt: skip


@pytest.fixture(scope="module")
def stack(services) -> Cluster:
    return services("user_svc", "notify_svc", "edge")


class Stream:
    """An open ``/api/v1/notifications/stream`` response, read in the background."""

    def __init__(self, http: httpx.AsyncClient, session: dict[str, Any], last_event_id: str = "") -> None:
        headers = {**bearer(session), **({"Last-Event-ID": last_event_id} if last_event_id else {})}
        self._opening = http.stream("GET", "/api/v1/notifications/stream", headers=headers)
        self.items: asyncio.Queue[dict[str, str]] = asyncio.Queue()
        self.comments: list[str] = []
        self.response: httpx.Response | None = None
        self._reader: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Stream:
        self.response = await self._opening.__aenter__()
        assert self.response.status_code == 200, await self.response.aread()
        assert self.response.headers["content-type"].startswith("text/event-stream")
        self._reader = asyncio.create_task(self._read())
        return self

    async def __aexit__(self, *exc: Any) -> None:
        assert self._reader is not None
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader
        await self._opening.__aexit__(None, None, None)

    async def _read(self) -> None:
        assert self.response is not None
        event: dict[str, str] = {}
        async for line in self.response.aiter_lines():
            if not line:
                if "data" in event:
                    await self.items.put(event)
                event = {}
            elif line.startswith(":"):
                self.comments.append(line[1:].strip())
            else:
                name, _, value = line.partition(":")
                value = value.removeprefix(" ")
                event[name] = event[name] + "\n" + value if name in event else value

    async def next(self, timeout: float = 20.0) -> dict[str, Any]:
        """The next notification event: its id, event type and decoded data."""
        event = await asyncio.wait_for(self.items.get(), timeout)
        return {"id": event.get("id", ""), "event": event.get("event", ""), "data": json.loads(event["data"])}

    async def heartbeat(self, timeout: float = 10.0) -> None:
        """Wait for a heartbeat comment (the first one means: subscribed)."""
        seen = len(self.comments)
        deadline = time.monotonic() + timeout
        while len(self.comments) == seen:
            assert time.monotonic() < deadline, "no heartbeat"
            await asyncio.sleep(0.02)
        assert self.comments[-1] == "heartbeat"


async def announce(http: httpx.AsyncClient, admin: dict[str, Any], title: str) -> str:
    published = await http.post(
        "/api/v1/admin/announcements", headers=bearer(admin), json={"title": title, "body": f"About {title}"}
    )
    assert published.status_code == 201, published.text
    return str(published.json()["announcement_id"])


async def feed(http: httpx.AsyncClient, session: dict[str, Any], **params: Any) -> dict[str, Any]:
    response = await http.get("/api/v1/notifications", headers=bearer(session), params=params)
    assert response.status_code == 200, response.text
    page: dict[str, Any] = response.json()
    return page


async def in_feed(http: httpx.AsyncClient, session: dict[str, Any], notification_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 30
    while True:
        items = (await feed(http, session, page_size=100))["items"]
        found = [item for item in items if item["id"] == notification_id]
        if found:
            return found[0]
        assert time.monotonic() < deadline, f"{notification_id} never reached the feed"
        await asyncio.sleep(0.1)


async def test_an_announcement_reaches_two_feeds_and_an_open_stream(
    http: httpx.AsyncClient, admin: dict[str, Any]
) -> None:
    ann, bob = await register(http), await register(http)
    async with Stream(http, ann) as stream:
        await stream.heartbeat()  # subscribed
        announcement_id = await announce(http, admin, "Spring sale")
        event = await stream.next()
    assert event["event"] == "notification" and int(event["id"]) > 0
    assert event["data"]["id"] == announcement_id
    assert event["data"]["kind"] == "announcement" and event["data"]["title"] == "Spring sale"
    for session in (ann, bob):
        item = await in_feed(http, session, announcement_id)
        assert item["kind"] == "announcement" and item["body"] == "About Spring sale" and not item["read"]

    before = (await http.get("/api/v1/notifications/unread-count", headers=bearer(bob))).json()["unread_count"]
    marked = await http.post(f"/api/v1/notifications/{announcement_id}/read", headers=bearer(ann))
    assert marked.status_code == 200, marked.text
    assert (await in_feed(http, ann, announcement_id))["read"]
    assert not (await in_feed(http, bob, announcement_id))["read"]
    assert (await http.get("/api/v1/notifications/unread-count", headers=bearer(bob))).json()["unread_count"] == before
    cleared = await http.post("/api/v1/notifications/read-all", headers=bearer(bob))
    assert cleared.json() == {"unread_count": 0}
    assert (await feed(http, bob, unread_only="true"))["items"] == []
    assert_problem(await http.post(f"/api/v1/notifications/{uuid.uuid4()}/read", headers=bearer(ann)), 404)


async def test_the_stream_resumes_from_last_event_id(http: httpx.AsyncClient, admin: dict[str, Any]) -> None:
    reader = await register(http)
    async with Stream(http, reader) as stream:
        await stream.heartbeat()
        first = await announce(http, admin, "First")
        seen = await stream.next()
        assert seen["data"]["id"] == first
        await stream.heartbeat()  # the test cluster beats every second
    missed = [await announce(http, admin, "Second"), await announce(http, admin, "Third")]
    for announcement_id in missed:
        await in_feed(http, reader, announcement_id)  # published while nobody listened
    async with Stream(http, reader, last_event_id=seen["id"]) as resumed:
        replayed = [await resumed.next(), await resumed.next()]
        assert [event["data"]["id"] for event in replayed] == missed
        live = await announce(http, admin, "Fourth")
        after = await resumed.next()
        assert after["data"]["id"] == live
    ids = [int(event["id"]) for event in [seen, *replayed, after]]
    assert ids == sorted(set(ids))
    assert_problem(
        await http.get("/api/v1/notifications/stream", headers={**bearer(reader), "Last-Event-ID": "yesterday"}), 400
    )


async def test_feeds_and_streams_need_a_token_and_announcements_an_admin(
    http: httpx.AsyncClient, admin: dict[str, Any]
) -> None:
    for path in ("/api/v1/notifications", "/api/v1/notifications/stream", "/api/v1/notifications/unread-count",
                 "/api/v1/webhooks"):  # fmt: skip
        assert_problem(await http.get(path), 401)
    bad = {"Authorization": "Bearer not.a.token"}
    assert_problem(await http.get("/api/v1/notifications/stream", headers=bad), 401)
    customer = await register(http)
    forbidden = await http.post(
        "/api/v1/admin/announcements", headers=bearer(customer), json={"title": "Hi", "body": "there"}
    )
    assert_problem(forbidden, 403)
    invalid = await http.post("/api/v1/admin/announcements", headers=bearer(admin), json={"title": "", "body": "x"})
    assert assert_problem(invalid, 400)["errors"][0]["field"] == "title"
    assert_problem(await http.get("/api/v1/notifications", headers=bearer(customer), params={"page_token": "x"}), 400)


async def test_webhooks_through_the_edge(http: httpx.AsyncClient, admin: dict[str, Any]) -> None:
    user = await register(http)
    async with Receiver(204) as receiver:
        created = await http.post(
            "/api/v1/webhooks", headers=bearer(user),
            json={"url": receiver.url, "description": "mine", "kinds": ["announcement"]},
        )  # fmt: skip
        assert created.status_code == 201, created.text
        webhook, secret = created.json()["webhook"], created.json()["signing_secret"]
        assert webhook["kinds"] == ["announcement"] and webhook["last_delivery_status"] is None
        announcement_id = await announce(http, admin, "Hooked")
        deadline = time.monotonic() + 30
        while not any(json.loads(body)["id"] == announcement_id for _, body in receiver.requests):
            assert time.monotonic() < deadline, "the webhook got nothing"
            await asyncio.sleep(0.1)
        headers, body = next((h, b) for h, b in receiver.requests if json.loads(b)["id"] == announcement_id)
        signed = hmac.new(secret.encode(), f"{headers['x-shop-timestamp']}.".encode() + body, hashlib.sha256)
        assert headers["x-shop-signature"] == f"sha256={signed.hexdigest()}"

    listed = (await http.get("/api/v1/webhooks", headers=bearer(user))).json()["items"]
    assert [hook["id"] for hook in listed] == [webhook["id"]]
    assert "signing_secret" not in listed[0] and "secret" not in listed[0]  # shown once only
    deliveries = await http.get(f"/api/v1/webhooks/{webhook['id']}/deliveries", headers=bearer(user))
    assert deliveries.status_code == 200, deliveries.text
    mine = [d for d in deliveries.json()["items"] if d["notification_id"] == announcement_id]
    assert mine and mine[0]["status"] == "succeeded" and mine[0]["last_http_status"] == 204

    refused = await http.post("/api/v1/webhooks", headers=bearer(user), json={"url": "ftp://example.com/x"})
    assert assert_problem(refused, 400)["errors"][0]["field"] == "url"
    assert_problem(await http.post("/api/v1/webhooks", headers=bearer(user), json={"url": "https://x.example",
                                                                                  "kinds": ["nope"]}), 400)  # fmt: skip
    stranger = await register(http)
    assert_problem(await http.delete(f"/api/v1/webhooks/{webhook['id']}", headers=bearer(stranger)), 404)
    assert (await http.delete(f"/api/v1/webhooks/{webhook['id']}", headers=bearer(user))).status_code == 204
    assert_problem(await http.delete(f"/api/v1/webhooks/{webhook['id']}", headers=bearer(user)), 404)
    assert (await http.get("/api/v1/webhooks", headers=bearer(user))).json()["items"] == []


async def test_webhooks_to_private_addresses_or_other_ports_are_refused_at_the_edge(http: httpx.AsyncClient) -> None:
    user = await register(http)
    for url, wanted in (
        ("http://192.168.1.20:8080/hook", "192.168.1.20 resolves to an address that is not public"),
        ("http://169.254.169.254/latest/meta-data/", "169.254.169.254 resolves to an address that is not public"),
        ("http://127.0.0.1:25/hook", "port 25 is not allowed for webhooks (allowed: 80, 443, 1024-65535)"),
    ):
        refused = await http.post("/api/v1/webhooks", headers=bearer(user), json={"url": url})
        assert assert_problem(refused, 400)["errors"] == [{"field": "url", "message": wanted}], url
    assert (await http.get("/api/v1/webhooks", headers=bearer(user))).json()["items"] == []


# --- an order's events reach its buyer ----------------------------------------------------------------


@pytest.fixture(scope="module")
def shop(services) -> Cluster:
    return services("user_svc", "product_svc", "order_svc", "notify_svc", "edge")


async def test_an_order_placed_and_paid_reaches_the_buyers_feed_and_stream(
    http: httpx.AsyncClient, shop: Cluster, admin: dict[str, Any]
) -> None:
    category = await http.post(
        "/api/v1/categories", headers=bearer(admin), json={"name": "Bells", "slug": f"bells-{uuid.uuid4().hex[:8]}"}
    )
    assert category.status_code == 201, category.text
    product = await http.post("/api/v1/products", headers=bearer(admin), json={
        "name": "Brass bell", "category_id": category.json()["id"], "stock": 5,
        "price": {"amount_minor": 1999, "currency": "EUR"},
    })  # fmt: skip
    assert product.status_code == 201, product.text
    buyer = await register(http)
    async with Stream(http, buyer) as stream:
        await stream.heartbeat()
        placed = await http.post("/api/v1/orders", headers=bearer(buyer), json={
            "items": [{"product_id": product.json()["id"], "quantity": 1}], "shipping_address": ADDRESS,
        })  # fmt: skip
        assert placed.status_code == 201, placed.text
        order_id = placed.json()["id"]
        paid = await http.post(
            f"/api/v1/orders/{order_id}/pay", headers=bearer(buyer), json={"payment_method_token": "tok_approve"}
        )
        assert paid.status_code == 200, paid.text
        events = [await stream.next(30), await stream.next(30)]
    kinds = [event["data"]["kind"] for event in events if event["data"]["kind"] != "announcement"]
    assert kinds == ["order_created", "order_paid"]
    assert all(event["data"]["data"]["order_id"] == order_id for event in events)
    items = [item for item in (await feed(http, buyer))["items"] if item["kind"] != "announcement"]
    assert [item["kind"] for item in items] == ["order_paid", "order_created"]
    assert items[0]["source_committed_at"] is not None
