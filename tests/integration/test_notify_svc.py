"""notify_svc as a real process (``python -m notify_svc``) on real Kafka and Redis.

Events are published to the real topics the way order_svc and comment_svc
publish them (protobuf value, event-id / event-type / trace headers), and the
outcome is read back over gRPC, from Redis, from Kafka (parked messages) and
from webhook receivers listening on loopback.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import hmac
import ipaddress
import json
import signal
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

import grpc
import pytest
import redis.asyncio as aioredis
from google.protobuf.message import Message
from shop.common.v1 import money_pb2, paging_pb2
from shop.events.v1 import comment_events_pb2, order_events_pb2
from shop.notify.v1 import notify_pb2, notify_pb2_grpc

from common import events
from common.auth import TokenSigner
from common.clients import KafkaProducer
from common.errors import problem_from_rpc_error
from devstack.cluster import Cluster
from devstack.paths import REPO
from devstack.process import Process, free_port
from devstack.servers import Redis
from notify_svc.domain.webhooks import Delivery, RetryPolicy, Webhook, WebhookPolicy, parse_ports
from notify_svc.store import Store
from notify_svc.store.limits import now_us
from notify_svc.webhook_delivery import Deliverer
from tests import tokens
from tests.kafka_helpers import consume, kafka_settings
from tests.waiting import Receiver, eventually

if TYPE_CHECKING:
    Stub = notify_pb2_grpc.NotificationServiceAsyncStub
else:
    Stub = notify_pb2_grpc.NotificationServiceStub

N = notify_pb2


# --- fixtures and helpers ------------------------------------------------------------------


@pytest.fixture(scope="module")
def notify(services: Callable[..., Cluster]) -> Cluster:
    return services("notify_svc")


@pytest.fixture(scope="module")
def signer(notify: Cluster) -> TokenSigner:
    return tokens.signer(notify)


@pytest.fixture(scope="module")
async def stub(notify: Cluster) -> AsyncIterator[Stub]:
    async with notify.channel("notify_svc") as channel:
        yield notify_pb2_grpc.NotificationServiceStub(channel)


@pytest.fixture(scope="module")
async def redis(notify: Cluster) -> AsyncIterator[aioredis.Redis]:
    server = notify.servers["redis"]
    assert isinstance(server, Redis)
    client = aioredis.Redis.from_url(server.url())  # devstack's own user: the test changes Redis's config
    yield client
    await client.aclose()


class Shop:
    """Publishes real events to the real topics, as the producing services do."""

    def __init__(self, producer: KafkaProducer) -> None:
        self.producer = producer

    async def publish(self, topic: str, message: Message, *, key: str, event_id: str | None = None) -> str:
        event_id = event_id or events.new_event_id()
        headers = events.headers_for(event_id, message.DESCRIPTOR.full_name, events.trace_headers())
        await self.producer.send(topic, message.SerializeToString(), key=key.encode(), headers=headers)
        return event_id

    async def order_paid(self, user_id: str, *, order_id: str | None = None, step: int = 0) -> str:
        order_id = order_id or str(uuid.uuid4())
        amount = money_pb2.Money(amount_minor=1250 + step, currency_code="EUR")
        event = order_events_pb2.OrderPaid(order_id=order_id, user_id=user_id, payment_id=f"pay-{step}", amount=amount)
        return await self.publish(events.ORDERS_TOPIC, event, key=order_id)


@pytest.fixture(scope="module")
async def shop(notify: Cluster) -> AsyncIterator[Shop]:
    producer = KafkaProducer(kafka_settings(notify.servers["kafka"]))
    yield Shop(producer)
    await producer.close(flush_seconds=5)


class User:
    def __init__(self, signer: TokenSigner, role: str = "customer") -> None:
        self.id = str(uuid.uuid4())
        token, _ = signer.sign(self.id, role)
        self.md = [("authorization", f"Bearer {token}")]


async def feed(stub: Stub, user: User, **page: Any) -> N.ListNotificationsResponse:
    unread_only = page.pop("unread_only", False)
    return await stub.ListNotifications(
        N.ListNotificationsRequest(page=paging_pb2.PageRequest(**page), unread_only=unread_only), metadata=user.md
    )


def personal(items: Any) -> list[N.Notification]:
    """A feed without the announcements (every feed shows every announcement)."""
    return [n for n in items if n.kind != N.NOTIFICATION_KIND_ANNOUNCEMENT]


async def unread(stub: Stub, user: User) -> int:
    return (await stub.UnreadCount(N.UnreadCountRequest(), metadata=user.md)).unread_count


async def feed_of(stub: Stub, user: User, count: int, timeout: float = 30.0) -> list[N.Notification]:
    """The user's own notifications once there are ``count`` of them."""

    async def ready() -> list[N.Notification] | None:
        items = personal((await feed(stub, user, page_size=100)).notifications)
        return items if len(items) >= count else None

    items = await eventually(ready, timeout, f"{count} notifications")
    assert len(items) == count, [n.title for n in items]
    return items


async def fails(call: Awaitable[Any]) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call
    return raised.value


# --- events become notifications -----------------------------------------------------------


async def test_order_events_land_in_the_buyers_feed(stub: Stub, shop: Shop, signer: TokenSigner) -> None:
    buyer, other = User(signer), User(signer)
    announcements = await unread(stub, buyer)  # every feed shows the announcements too
    order_id = str(uuid.uuid4())
    eur = money_pb2.Money(amount_minor=4599, currency_code="EUR")
    published = [
        await shop.publish(events.ORDERS_TOPIC, event, key=order_id)
        for event in (
            order_events_pb2.OrderCreated(order_id=order_id, user_id=buyer.id, total=eur),
            order_events_pb2.OrderPaid(order_id=order_id, user_id=buyer.id, payment_id="p1", amount=eur),
            order_events_pb2.OrderShipped(order_id=order_id, user_id=buyer.id, carrier="DHL", tracking_number="T1"),
            order_events_pb2.OrderDelivered(order_id=order_id, user_id=buyer.id),
        )
    ]
    other_order = str(uuid.uuid4())
    await shop.publish(
        events.ORDERS_TOPIC,
        order_events_pb2.OrderCancelled(
            order_id=other_order, user_id=other.id, reason=order_events_pb2.ORDER_CANCEL_REASON_EXPIRED
        ),
        key=other_order,
    )
    items = await feed_of(stub, buyer, 4)
    assert [n.kind for n in items] == [
        N.NOTIFICATION_KIND_ORDER_DELIVERED,
        N.NOTIFICATION_KIND_ORDER_SHIPPED,
        N.NOTIFICATION_KIND_ORDER_PAID,
        N.NOTIFICATION_KIND_ORDER_CREATED,
    ]
    assert [n.source_event_id for n in items] == published[::-1]
    assert all(n.data["order_id"] == order_id and not n.read for n in items)
    assert "45.99 EUR" in items[3].body and "DHL" in items[1].body
    assert await unread(stub, buyer) == announcements + 4
    cancelled = await feed_of(stub, other, 1)
    assert cancelled[0].kind == N.NOTIFICATION_KIND_ORDER_CANCELLED
    assert "not paid in time" in cancelled[0].body


async def test_a_reply_notifies_the_parents_author(stub: Stub, shop: Shop, signer: TokenSigner) -> None:
    author, replier = User(signer), User(signer)
    reply = comment_events_pb2.CommentReplied(
        comment_id=str(uuid.uuid4()),
        product_id="p-1",
        parent_id="c-parent",
        parent_author_id=author.id,
        author_id=replier.id,
        author_display_name="Bob",
        body_excerpt="Same here, works great",
    )
    await shop.publish(events.COMMENTS_TOPIC, reply, key=reply.comment_id)
    [note] = await feed_of(stub, author, 1)
    assert note.kind == N.NOTIFICATION_KIND_COMMENT_REPLY
    assert note.title == "Bob replied to your comment"
    assert "Same here" in note.body
    assert dict(note.data) == {"comment_id": reply.comment_id, "product_id": "p-1", "parent_id": "c-parent"}
    assert not personal((await feed(stub, replier)).notifications)


async def test_likes_within_the_window_fold_into_one(stub: Stub, shop: Shop, signer: TokenSigner) -> None:
    author = User(signer)
    comment_id, other_comment = str(uuid.uuid4()), str(uuid.uuid4())
    first_like = ""
    for count, name in enumerate(["Ann", "Bob", "Cyd"], start=1):
        like = comment_events_pb2.CommentLiked(
            comment_id=comment_id, product_id="p-2", comment_author_id=author.id, liker_id=f"liker-{name}",
            liker_display_name=name, like_count=count,
        )  # fmt: skip
        event_id = await shop.publish(events.COMMENTS_TOPIC, like, key=comment_id)
        first_like = first_like or event_id
    # A redelivery of the first like folds nothing more.
    first = comment_events_pb2.CommentLiked(
        comment_id=comment_id, product_id="p-2", comment_author_id=author.id, liker_id="liker-Ann",
        liker_display_name="Ann", like_count=1,
    )  # fmt: skip
    await shop.publish(events.COMMENTS_TOPIC, first, key=comment_id, event_id=first_like)
    elsewhere = comment_events_pb2.CommentLiked(
        comment_id=other_comment, comment_author_id=author.id, liker_id="liker-Dan", liker_display_name="Dan"
    )
    await shop.publish(events.COMMENTS_TOPIC, elsewhere, key=other_comment)

    async def folded() -> list[N.Notification] | None:
        items = personal((await feed(stub, author)).notifications)
        by_comment = {n.data["comment_id"]: n for n in items}
        done = len(items) == 2 and by_comment.get(comment_id) and by_comment[comment_id].folded_count == 3
        return items if done else None

    items = await eventually(folded, what="three likes folded")
    note = next(n for n in items if n.data["comment_id"] == comment_id)
    assert note.title == "3 people liked your comment"
    assert note.body == "Cyd, Bob and 1 other liked your comment."
    assert note.source_event_id == first_like
    assert note.data["like_count"] == "3"
    single = next(n for n in items if n.data["comment_id"] == other_comment)
    assert single.title == "Dan liked your comment" and single.folded_count == 1
    await asyncio.sleep(1)  # the redelivered like was applied or ignored by now
    again = next(n for n in personal((await feed(stub, author)).notifications) if n.data["comment_id"] == comment_id)
    assert again.folded_count == 3


async def test_the_same_event_twice_gives_one_notification(stub: Stub, shop: Shop, signer: TokenSigner) -> None:
    buyer = User(signer)
    order_id = str(uuid.uuid4())
    event = order_events_pb2.OrderShipped(order_id=order_id, user_id=buyer.id, carrier="UPS")
    event_id = await shop.publish(events.ORDERS_TOPIC, event, key=order_id)
    await shop.publish(events.ORDERS_TOPIC, event, key=order_id, event_id=event_id)
    marker = await shop.order_paid(buyer.id, order_id=order_id)  # after both copies, same partition
    items = await feed_of(stub, buyer, 2)
    assert [n.source_event_id for n in items] == [marker, event_id]


async def test_an_announcement_reaches_everyone_and_is_stored_once(
    stub: Stub, signer: TokenSigner, redis: aioredis.Redis
) -> None:
    admin, ann, bob = User(signer, "admin"), User(signer), User(signer)
    published = await stub.PublishAnnouncement(
        N.PublishAnnouncementRequest(title="  Spring sale  ", body="Everything -20%", data={"url": "/sale"}),
        metadata=admin.md,
    )
    announcement_id = published.announcement_id
    assert uuid.UUID(announcement_id) and published.published_at.seconds > 0

    async def seen_by(user: User) -> N.Notification | None:
        return next((n for n in (await feed(stub, user)).notifications if n.id == announcement_id), None)

    for user in (ann, bob):
        note = await eventually(functools.partial(seen_by, user), what="the announcement")
        assert note.kind == N.NOTIFICATION_KIND_ANNOUNCEMENT
        assert (note.title, note.body) == ("Spring sale", "Everything -20%")
        assert note.data["url"] == "/sale" and note.data["announcement_id"] == announcement_id
        assert not note.read
    # Stored once: one document in the shared announcements, no copy in any user's feed.
    assert await redis.zscore("notify:announcements", announcement_id) is not None
    assert await redis.hexists("notify:announcements:docs", announcement_id)
    copies = [
        key async for key in redis.scan_iter(match="notify:user:*:docs") if await redis.hexists(key, announcement_id)
    ]
    assert copies == []
    # Read state is per user.
    before = await unread(stub, bob)
    assert await unread(stub, ann) == before
    marked = await stub.MarkRead(N.MarkReadRequest(notification_id=announcement_id), metadata=ann.md)
    assert marked.unread_count == before - 1
    assert (await seen_by(ann)).read  # type: ignore[union-attr]
    assert not (await seen_by(bob)).read  # type: ignore[union-attr]
    assert await unread(stub, bob) == before


async def test_feed_paging_read_state_and_cap(stub: Stub, shop: Shop, signer: TokenSigner) -> None:
    buyer = User(signer)
    announcements = await unread(stub, buyer)
    order_id = str(uuid.uuid4())  # one key: one partition, so the feed order is the publish order
    published = [await shop.order_paid(buyer.id, order_id=order_id, step=step) for step in range(25)]
    await feed_of(stub, buyer, 25)
    seen: list[N.Notification] = []
    token = ""
    for _ in range(5):
        page = await feed(stub, buyer, page_size=10, page_token=token)
        seen += page.notifications
        token = page.page.next_page_token
        if not token:
            break
    assert [n.source_event_id for n in personal(seen)] == published[::-1]
    assert len({n.id for n in seen}) == len(seen) == 25 + announcements
    positions = [n.created_at.ToMicroseconds() for n in personal(seen)]
    assert positions == sorted(positions, reverse=True)

    marked = await stub.MarkRead(N.MarkReadRequest(notification_id=seen[3].id), metadata=buyer.md)
    assert marked.unread_count == announcements + 24
    again = await stub.MarkRead(N.MarkReadRequest(notification_id=seen[3].id), metadata=buyer.md)
    assert again.unread_count == announcements + 24  # idempotent
    only_unread = await feed(stub, buyer, page_size=100, unread_only=True)
    assert len(only_unread.notifications) == announcements + 24
    assert seen[3].id not in {n.id for n in only_unread.notifications}
    missing = await fails(stub.MarkRead(N.MarkReadRequest(notification_id=str(uuid.uuid4())), metadata=buyer.md))
    assert missing.code() == grpc.StatusCode.NOT_FOUND
    cleared = await stub.MarkAllRead(N.MarkAllReadRequest(), metadata=buyer.md)
    assert cleared.unread_count == 0
    assert await unread(stub, buyer) == 0
    assert all(n.read for n in (await feed(stub, buyer, page_size=100)).notifications)

    bad = await fails(feed(stub, buyer, page_token="not-a-token"))
    assert bad.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert problem_from_rpc_error(bad).errors[0].field == "page.page_token"
    other_filter = await fails(feed(stub, buyer, page_size=10, page_token=token or "x", unread_only=True))
    assert other_filter.code() == grpc.StatusCode.INVALID_ARGUMENT

    # The test cluster caps feeds at 40: the oldest fall off.
    more = [await shop.order_paid(buyer.id, order_id=order_id, step=step) for step in range(25, 45)]

    async def capped() -> list[N.Notification] | None:
        items = personal((await feed(stub, buyer, page_size=100)).notifications)
        return items if items and items[0].source_event_id == more[-1] else None

    items = await eventually(capped, what="the newest notification")
    assert [n.source_event_id for n in items] == (published + more)[::-1][:40]
    assert await unread(stub, buyer) == 20


async def test_every_call_needs_a_caller(stub: Stub, signer: TokenSigner) -> None:
    anonymous = await fails(stub.ListNotifications(N.ListNotificationsRequest()))
    assert anonymous.code() == grpc.StatusCode.UNAUTHENTICATED
    stream = stub.Subscribe(N.SubscribeRequest())
    refused = await fails(stream.read())
    assert refused.code() == grpc.StatusCode.UNAUTHENTICATED
    customer = User(signer)
    denied = await fails(
        stub.PublishAnnouncement(N.PublishAnnouncementRequest(title="t", body="b"), metadata=customer.md)
    )
    assert denied.code() == grpc.StatusCode.PERMISSION_DENIED
    admin = User(signer, "admin")
    invalid = await fails(
        stub.PublishAnnouncement(N.PublishAnnouncementRequest(title=" ", body="b"), metadata=admin.md)
    )
    assert invalid.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert [e.field for e in problem_from_rpc_error(invalid).errors] == ["title"]


# --- robustness: redelivery, restarts, poison ----------------------------------------------


async def test_killed_and_restarted_while_events_keep_coming(
    notify: Cluster, stub: Stub, shop: Shop, signer: TokenSigner
) -> None:
    buyers = [User(signer) for _ in range(4)]
    published: dict[str, list[str]] = {buyer.id: [] for buyer in buyers}

    async def keep_publishing() -> None:
        for step in range(120):
            buyer = buyers[step % len(buyers)]
            published[buyer.id].append(await shop.order_paid(buyer.id, step=step))
            await asyncio.sleep(0.03)

    publisher = asyncio.create_task(keep_publishing())
    try:
        await asyncio.sleep(0.8)
        await asyncio.to_thread(notify.stop_service, "notify_svc")  # SIGTERM: a graceful stop
        await asyncio.sleep(0.5)
        await asyncio.to_thread(notify.start_service, "notify_svc")
        await asyncio.sleep(0.8)
        process = notify.services["notify_svc"]  # SIGKILL: no goodbye, uncommitted offsets
        await asyncio.to_thread(process.stop, 5.0, signal.SIGKILL)
        notify.stop_service("notify_svc")
        await asyncio.to_thread(notify.start_service, "notify_svc")
    finally:
        await publisher
    for buyer in buyers:
        items = await feed_of(stub, buyer, 30, timeout=60)
        assert sorted(n.source_event_id for n in items) == sorted(published[buyer.id])
        assert len({n.id for n in items}) == 30
    await asyncio.sleep(2)  # and nothing more trickles in
    for buyer in buyers:
        assert len(personal((await feed(stub, buyer, page_size=100)).notifications)) == 30


async def test_two_instances_share_the_work_without_doubling(
    notify: Cluster, stub: Stub, shop: Shop, signer: TokenSigner
) -> None:
    """A second notify_svc joins the group mid-stream and is killed later: the
    partitions move twice, and still every event gives exactly one notification."""
    buyers = [User(signer) for _ in range(4)]
    published: dict[str, list[str]] = {buyer.id: [] for buyer in buyers}
    env = {**notify.service_env_for("notify_svc"), "SHOP_PORT": str(free_port()), "SHOP_METRICS_PORT": "0"}
    second = Process("notify_svc-2", [sys.executable, "-m", "notify_svc"], notify.root / "logs" / "notify_svc-2.log",
                     env=env, cwd=REPO)  # fmt: skip

    async def keep_publishing() -> None:
        for step in range(120):
            buyer = buyers[step % len(buyers)]
            published[buyer.id].append(await shop.order_paid(buyer.id, step=step))
            await asyncio.sleep(0.03)

    publisher = asyncio.create_task(keep_publishing())
    try:
        await asyncio.sleep(0.5)
        second.start()
        deadline = time.monotonic() + 20
        while "partitions assigned" not in second.log.read_text():  # it took a share of the partitions
            assert time.monotonic() < deadline and second.alive(), second.log.read_text()[-2000:]
            await asyncio.sleep(0.1)
        await asyncio.sleep(1.0)
        await asyncio.to_thread(second.stop, 5.0, signal.SIGKILL)
    finally:
        await publisher
        second.stop()
    for buyer in buyers:
        items = await feed_of(stub, buyer, 30, timeout=60)
        assert sorted(n.source_event_id for n in items) == sorted(published[buyer.id])
    await asyncio.sleep(2)
    for buyer in buyers:
        assert len(personal((await feed(stub, buyer, page_size=100)).notifications)) == 30


async def test_a_store_refusing_writes_delays_events_but_loses_none(
    stub: Stub, shop: Shop, signer: TokenSigner, redis: aioredis.Redis
) -> None:
    """Redis refuses every write for a while (out of memory): the consumer
    retries the event in place, commits nothing, skips nothing."""
    buyer = User(signer)
    order_id = str(uuid.uuid4())
    limit = await redis.config_get("maxmemory")
    policy = await redis.config_get("maxmemory-policy")
    await redis.config_set("maxmemory-policy", "noeviction")
    await redis.config_set("maxmemory", "1")
    try:
        published = [await shop.order_paid(buyer.id, order_id=order_id, step=step) for step in range(5)]
        await asyncio.sleep(2)
        assert not await redis.exists(f"notify:user:{buyer.id}:feed")  # nothing stored, nothing lost yet
        refused = await fails(feed(stub, buyer))
        assert refused.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        await redis.config_set("maxmemory", str(limit["maxmemory"]))
        await redis.config_set("maxmemory-policy", str(policy["maxmemory-policy"]))
    items = await feed_of(stub, buyer, 5)
    assert [n.source_event_id for n in items] == published[::-1]


async def test_garbage_is_parked_and_the_consumer_goes_on(
    notify: Cluster, stub: Stub, shop: Shop, signer: TokenSigner
) -> None:
    buyer = User(signer)
    marker = uuid.uuid4().hex
    producer = shop.producer
    await producer.send(events.ORDERS_TOPIC, b"\x00\xffnot an event", key=f"{marker}-1".encode())
    await producer.send(
        events.ORDERS_TOPIC,
        b"\x08\x01",
        key=f"{marker}-2".encode(),
        headers=events.headers_for(events.new_event_id(), "shop.events.v1.NoSuchEvent", {}),
    )
    no_buyer = order_events_pb2.OrderPaid(order_id="o", payment_id="p")  # decodes, but notifies nobody known
    await shop.publish(events.ORDERS_TOPIC, no_buyer, key=f"{marker}-3")
    for partition_key in ("a", "b", "c", "d"):  # later events on every partition still arrive
        await shop.order_paid(buyer.id, order_id=f"{marker}-{partition_key}")
    await feed_of(stub, buyer, 4)

    wanted = {f"{marker}-{n}".encode() for n in (1, 2, 3)}
    parked: dict[bytes, Any] = {}
    deadline = time.monotonic() + 30
    while set(parked) != wanted and time.monotonic() < deadline:
        for message in await consume(notify.servers["kafka"], events.ORDERS_TOPIC + ".parked", 10**6, timeout=3):
            if message.key() in wanted:
                parked[message.key()] = message
    assert set(parked) == wanted
    garbage = parked[f"{marker}-1".encode()]
    assert garbage.value() == b"\x00\xffnot an event"
    assert "missing event-id" in (events.header(garbage.headers(), "parked-reason") or "")
    assert (events.header(garbage.headers(), "parked-from") or "").startswith(events.ORDERS_TOPIC + "/")
    assert "unknown event type" in (events.header(parked[f"{marker}-2".encode()].headers(), "parked-reason") or "")
    assert "user_id" in (events.header(parked[f"{marker}-3".encode()].headers(), "parked-reason") or "")


# --- live delivery ----------------------------------------------------------------------------


async def read(call: Any, timeout: float) -> N.SubscribeResponse:
    message = await asyncio.wait_for(call.read(), timeout)
    assert isinstance(message, N.SubscribeResponse), message
    return message


async def next_notification(call: Any, timeout: float = 20.0) -> N.SubscribeResponse:
    """The next non-heartbeat message of a Subscribe stream."""
    deadline = time.monotonic() + timeout
    while True:
        message = await read(call, max(0.1, deadline - time.monotonic()))
        if message.WhichOneof("payload") == "notification":
            return message


async def test_subscribe_streams_and_resumes_without_gaps(stub: Stub, shop: Shop, signer: TokenSigner) -> None:
    buyer = User(signer)
    order_id = str(uuid.uuid4())
    call = stub.Subscribe(N.SubscribeRequest(), metadata=buyer.md)
    first = await read(call, 10)
    assert first.WhichOneof("payload") == "heartbeat" and first.event_id == ""  # subscribed
    live = await shop.order_paid(buyer.id, order_id=order_id, step=1)
    received = await next_notification(call)
    assert received.notification.source_event_id == live
    heartbeat = await read(call, 5)  # the test cluster beats every second
    assert heartbeat.WhichOneof("payload") == "heartbeat"
    call.cancel()

    missed = [await shop.order_paid(buyer.id, order_id=order_id, step=step) for step in (2, 3)]
    await feed_of(stub, buyer, 3)  # stored while nobody listened
    resumed = stub.Subscribe(N.SubscribeRequest(last_event_id=received.event_id), metadata=buyer.md)
    replayed = [await next_notification(resumed) for _ in missed]
    assert [m.notification.source_event_id for m in replayed] == missed
    later = await shop.order_paid(buyer.id, order_id=order_id, step=4)
    after = await next_notification(resumed)
    assert after.notification.source_event_id == later
    positions = [int(m.event_id) for m in [received, *replayed, after]]
    assert positions == sorted(set(positions))
    resumed.cancel()

    bad = stub.Subscribe(N.SubscribeRequest(last_event_id="yesterday"), metadata=buyer.md)
    assert (await fails(bad.read())).code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_subscribe_resume_overlapping_live_delivery_has_no_duplicates(
    stub: Stub, shop: Shop, signer: TokenSigner
) -> None:
    buyer = User(signer)
    order_id = str(uuid.uuid4())
    sent = [await shop.order_paid(buyer.id, order_id=order_id, step=0)]
    await feed_of(stub, buyer, 1)
    call = stub.Subscribe(N.SubscribeRequest(last_event_id="0"), metadata=buyer.md)  # everything, then live

    async def publish_more() -> list[str]:  # while the backlog is being replayed
        return list(await asyncio.gather(*[shop.order_paid(buyer.id, order_id=order_id, step=n) for n in range(1, 20)]))

    publishing = asyncio.create_task(publish_more())
    got: list[N.SubscribeResponse] = []
    while len(personal(m.notification for m in got)) < 20:
        got.append(await next_notification(call))
    sent += await publishing
    assert [n.source_event_id for n in personal(m.notification for m in got)] == sent
    assert len({m.event_id for m in got}) == len(got)  # the announcements came once too
    call.cancel()


async def test_subscribers_get_announcements(stub: Stub, signer: TokenSigner) -> None:
    admin, reader = User(signer, "admin"), User(signer)
    call = stub.Subscribe(N.SubscribeRequest(), metadata=reader.md)
    await asyncio.wait_for(call.read(), 10)
    published = await stub.PublishAnnouncement(
        N.PublishAnnouncementRequest(title="Maintenance", body="Tonight 2-3 am"), metadata=admin.md
    )
    message = await next_notification(call)
    assert message.notification.id == published.announcement_id
    assert message.notification.kind == N.NOTIFICATION_KIND_ANNOUNCEMENT
    call.cancel()


# --- webhooks -----------------------------------------------------------------------------------


# A URL the tests' allowance takes (loopback, a port past 1024: tests/conftest.py) and nobody answers;
# the tests have no DNS, so no public name would resolve.
NOBODY = "http://127.0.0.1:65000"


async def register(stub: Stub, user: User, url: str, *kinds: N.NotificationKind.ValueType) -> N.RegisterWebhookResponse:
    return await stub.RegisterWebhook(
        N.RegisterWebhookRequest(url=url, description="test", kinds=kinds), metadata=user.md
    )


async def deliveries_of(stub: Stub, user: User, webhook_id: str) -> list[N.WebhookDelivery]:
    reply = await stub.ListWebhookDeliveries(N.ListWebhookDeliveriesRequest(webhook_id=webhook_id), metadata=user.md)
    return list(reply.deliveries)


async def final_delivery(stub: Stub, user: User, webhook_id: str) -> N.WebhookDelivery:
    async def finished() -> N.WebhookDelivery | None:
        found = await deliveries_of(stub, user, webhook_id)
        done = [d for d in found if d.status in (N.WEBHOOK_DELIVERY_STATUS_SUCCEEDED, N.WEBHOOK_DELIVERY_STATUS_FAILED)]
        return done[0] if done else None

    return await eventually(finished, what="a finished delivery")


async def test_a_webhook_gets_the_notification_signed(stub: Stub, shop: Shop, signer: TokenSigner) -> None:
    user = User(signer)
    async with Receiver(200) as receiver:
        registered = await register(stub, user, receiver.url)
        secret = registered.signing_secret
        assert secret and registered.webhook.url == receiver.url
        event_id = await shop.order_paid(user.id)
        await receiver.wait_for(1)
        headers, body = receiver.requests[0]
        stamp = headers["x-shop-timestamp"]
        assert abs(int(stamp) - time.time()) < 60
        expected = hmac.new(secret.encode(), f"{stamp}.".encode() + body, hashlib.sha256).hexdigest()
        assert hmac.compare_digest(headers["x-shop-signature"], f"sha256={expected}")
        assert headers["content-type"] == "application/json"
        document = json.loads(body)
        assert document["sourceEventId"] == event_id
        assert document["kind"] == "NOTIFICATION_KIND_ORDER_PAID"
        [note] = await feed_of(stub, user, 1)
        assert document["id"] == note.id
        delivery = await final_delivery(stub, user, registered.webhook.id)
        assert delivery.status == N.WEBHOOK_DELIVERY_STATUS_SUCCEEDED
        assert (delivery.attempt_count, delivery.last_http_status) == (1, 200)
        assert delivery.id == headers["x-shop-delivery"] and delivery.notification_id == note.id
        [hook] = (await stub.ListWebhooks(N.ListWebhooksRequest(), metadata=user.md)).webhooks
        assert hook.last_delivery_status == N.WEBHOOK_DELIVERY_STATUS_SUCCEEDED
        assert hook.last_success_at.seconds > 0 and hook.failed_delivery_count == 0


async def test_a_webhook_failing_twice_gets_it_on_the_third_try(stub: Stub, shop: Shop, signer: TokenSigner) -> None:
    user = User(signer)
    async with Receiver(500, 503, 200) as receiver:
        registered = await register(stub, user, receiver.url)
        await shop.order_paid(user.id)
        await receiver.wait_for(3)
        bodies = {body for _, body in receiver.requests}
        assert len(bodies) == 1  # the same notification each time
        assert len({headers["x-shop-delivery"] for headers, _ in receiver.requests}) == 1
        assert [headers["x-shop-attempt"] for headers, _ in receiver.requests] == ["1", "2", "3"]
        delivery = await final_delivery(stub, user, registered.webhook.id)
        assert delivery.status == N.WEBHOOK_DELIVERY_STATUS_SUCCEEDED
        assert delivery.attempt_count == 3
        await asyncio.sleep(1)
        assert len(receiver.requests) == 3


async def test_a_webhook_always_failing_is_recorded_as_failed(stub: Stub, shop: Shop, signer: TokenSigner) -> None:
    user = User(signer)
    async with Receiver(500) as receiver:
        registered = await register(stub, user, receiver.url)
        await shop.order_paid(user.id)
        delivery = await final_delivery(stub, user, registered.webhook.id)
        assert delivery.status == N.WEBHOOK_DELIVERY_STATUS_FAILED
        assert (delivery.attempt_count, delivery.last_http_status, delivery.last_error) == (3, 500, "HTTP 500")
        assert len(receiver.requests) == 3  # the test cluster's max attempts
        [hook] = (await stub.ListWebhooks(N.ListWebhooksRequest(), metadata=user.md)).webhooks
        assert hook.failed_delivery_count == 1
        assert hook.last_delivery_status == N.WEBHOOK_DELIVERY_STATUS_FAILED
        assert hook.last_error == "HTTP 500"
        failed = await stub.ListWebhookDeliveries(
            N.ListWebhookDeliveriesRequest(webhook_id=registered.webhook.id, status=N.WEBHOOK_DELIVERY_STATUS_FAILED),
            metadata=user.md,
        )
        assert [d.id for d in failed.deliveries] == [delivery.id]


async def test_an_unreachable_webhook_fails_with_the_error(stub: Stub, shop: Shop, signer: TokenSigner) -> None:
    user = User(signer)
    async with Receiver() as receiver:
        url = receiver.url
    registered = await register(stub, user, url)  # nobody listens there any more
    await shop.order_paid(user.id)
    delivery = await final_delivery(stub, user, registered.webhook.id)
    assert delivery.status == N.WEBHOOK_DELIVERY_STATUS_FAILED
    assert delivery.last_http_status == 0 and delivery.last_error.startswith("ConnectError")


async def test_webhook_kinds_registration_rules_and_deletion(stub: Stub, shop: Shop, signer: TokenSigner) -> None:
    user, stranger = User(signer), User(signer)
    async with Receiver(200) as shipped_only, Receiver(200) as everything:
        narrow = await register(stub, user, shipped_only.url, N.NOTIFICATION_KIND_ORDER_SHIPPED)
        await register(stub, user, everything.url)
        assert list(narrow.webhook.kinds) == [N.NOTIFICATION_KIND_ORDER_SHIPPED]
        order_id = str(uuid.uuid4())
        await shop.order_paid(user.id, order_id=order_id)
        shipped = order_events_pb2.OrderShipped(order_id=order_id, user_id=user.id)
        await shop.publish(events.ORDERS_TOPIC, shipped, key=order_id)
        await everything.wait_for(2)
        await shipped_only.wait_for(1)
        await asyncio.sleep(0.5)
        assert len(shipped_only.requests) == 1
        assert json.loads(shipped_only.requests[0][1])["kind"] == "NOTIFICATION_KIND_ORDER_SHIPPED"

    for url in ("ftp://example.com/x", "not a url", "http://user:pw@example.com/", ""):
        refused = await fails(register(stub, user, url))
        assert refused.code() == grpc.StatusCode.INVALID_ARGUMENT, url
        assert problem_from_rpc_error(refused).errors[0].field == "url"
    bad_kind = await fails(register(stub, user, f"{NOBODY}/h", N.NotificationKind.ValueType(99)))
    assert problem_from_rpc_error(bad_kind).errors[0].field == "kinds[0]"

    for n in range(8):  # two registered above; the limit is 10
        await register(stub, user, f"{NOBODY}/hook/{n}")
    full = await fails(register(stub, user, f"{NOBODY}/one-too-many"))
    assert full.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert problem_from_rpc_error(full).reason == "LIMIT_REACHED"

    hooks = (await stub.ListWebhooks(N.ListWebhooksRequest(), metadata=user.md)).webhooks
    assert len(hooks) == 10
    theirs = await fails(stub.DeleteWebhook(N.DeleteWebhookRequest(webhook_id=hooks[0].id), metadata=stranger.md))
    assert theirs.code() == grpc.StatusCode.NOT_FOUND
    unknown = await fails(
        stub.ListWebhookDeliveries(N.ListWebhookDeliveriesRequest(webhook_id=hooks[0].id), metadata=stranger.md)
    )
    assert unknown.code() == grpc.StatusCode.NOT_FOUND
    await stub.DeleteWebhook(N.DeleteWebhookRequest(webhook_id=hooks[0].id), metadata=user.md)
    gone = await fails(stub.DeleteWebhook(N.DeleteWebhookRequest(webhook_id=hooks[0].id), metadata=user.md))
    assert gone.code() == grpc.StatusCode.NOT_FOUND
    left = (await stub.ListWebhooks(N.ListWebhooksRequest(), metadata=user.md)).webhooks
    assert hooks[0].id not in {hook.id for hook in left} and len(left) == 9
    await register(stub, user, f"{NOBODY}/room-again")


async def test_private_addresses_and_other_ports_are_refused_at_registration(stub: Stub, signer: TokenSigner) -> None:
    user = User(signer)
    for url, wanted in (
        ("http://10.0.0.7:8080/hook", "10.0.0.7 resolves to an address that is not public"),
        ("http://169.254.169.254/latest/meta-data", "169.254.169.254 resolves to an address that is not public"),
        ("http://[::1]:8080/hook", "::1 resolves to an address that is not public"),  # only 127.0.0.0/8 is allowed
        ("http://127.0.0.1:22/hook", "port 22 is not allowed for webhooks (allowed: 80, 443, 1024-65535)"),
    ):
        refused = await fails(register(stub, user, url))
        assert refused.code() == grpc.StatusCode.INVALID_ARGUMENT, url
        problem = problem_from_rpc_error(refused)
        assert [(v.field, v.description) for v in problem.errors] == [("url", wanted)], url
    assert (await stub.ListWebhooks(N.ListWebhooksRequest(), metadata=user.md)).webhooks == []


TEST_PORTS = parse_ports("80,443,1024-65535")


@pytest.fixture
async def own_store(notify: Cluster) -> AsyncIterator[Store]:
    """A notify_svc store on a Redis database of its own: the cluster's notify_svc never sees its deliveries."""
    redis = notify.servers["redis"]
    assert isinstance(redis, Redis)
    client = aioredis.Redis.from_url(redis.url(7))  # devstack's own user: it flushes its database
    await client.flushdb()
    yield Store(client)
    await client.flushdb()
    await client.aclose()


async def deliver_once(store: Store, policy: WebhookPolicy, url: str) -> Delivery:
    """One delivery to ``url`` by a deliverer of this process with ``policy``; its finished record."""
    hook = Webhook(id=str(uuid.uuid4()), user_id=str(uuid.uuid4()), url=url, description="", kinds=[],
                   secret="whsec_x", created_at_us=now_us())  # fmt: skip
    assert await store.webhooks.add(hook)
    delivery_id = str(uuid.uuid4())
    assert await store.deliveries.create(delivery_id, hook.id, str(uuid.uuid4()), b"{}")
    stop = asyncio.Event()
    retry = RetryPolicy(max_attempts=1, base=0.1, cap=0.1)
    deliverer = Deliverer(store, wake=asyncio.Event(), policy=policy, retry=retry, timeout=2, concurrency=2)
    running = asyncio.create_task(deliverer.run(stop))

    async def finished() -> Delivery | None:
        found = await store.deliveries.get(delivery_id)
        return found if found is not None and found.status in ("FAILED", "SUCCEEDED") else None

    try:
        delivery: Delivery = await eventually(finished, what="the delivery's outcome")
    finally:
        stop.set()
        await running
    return delivery


async def test_a_name_resolving_to_a_blocked_address_is_refused_at_delivery(own_store: Store) -> None:
    """A webhook stored while its name pointed elsewhere: a deliverer without the
    tests' loopback allowance (the default policy) resolves the name again before
    the POST, finds a loopback address, and records the refusal; the receiver
    there gets nothing."""
    async with Receiver(204) as receiver:
        port = receiver.url.split(":")[2].split("/")[0]
        delivery = await deliver_once(own_store, WebhookPolicy(https_only=False, ports=TEST_PORTS),
                                      f"http://localhost:{port}/hooks/shop")  # fmt: skip
        assert delivery.status == "FAILED"
        assert delivery.error == "localhost resolves to an address that is not public"
        assert receiver.requests == []


async def test_deliveries_ignore_proxy_variables_and_keep_the_name_as_host(
    own_store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With every proxy variable pointing at a listening proxy, the POST still goes
    straight to the checked address, with the URL's own name in Host."""
    allowed = WebhookPolicy(https_only=False, ports=TEST_PORTS, allowed_networks=(ipaddress.ip_network("127.0.0.0/8"),))
    async with Receiver(204) as receiver, Receiver(200) as proxy:
        proxy_url = proxy.url.rsplit("/hooks/shop", 1)[0]
        for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
            monkeypatch.setenv(name, proxy_url)
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        port = receiver.url.split(":")[2].split("/")[0]
        delivery = await deliver_once(own_store, allowed, f"http://localhost:{port}/hooks/shop")
        assert (delivery.status, delivery.http_status) == ("SUCCEEDED", 204)
        assert proxy.requests == []
        [(headers, _)] = receiver.requests
        assert headers["host"] == f"localhost:{port}"
