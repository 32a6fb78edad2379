"""Two order_svc and two notify_svc processes at once under a burst of orders:
no event lost, none published twice, no notification doubled (issue 8)."""

from __future__ import annotations

import asyncio
import functools
import sys
import uuid
from collections import Counter
from collections.abc import Iterator

import pytest
from shop.common.v1 import address_pb2, money_pb2, paging_pb2
from shop.notify.v1 import notify_pb2, notify_pb2_grpc
from shop.order.v1 import order_pb2, order_pb2_grpc
from shop.product.v1 import product_pb2, product_pb2_grpc

from common import events
from devstack.cluster import Cluster
from devstack.paths import REPO
from devstack.process import Process, free_port
from tests.kafka_helpers import consume
from tests.tokens import Identities

ADDRESS = address_pb2.Address(
    recipient_name="Ann Buyer", line1="1 Main St", city="Berlin", postal_code="10115", country_code="DE"
)


@pytest.fixture(scope="module")
def stack(services) -> Iterator[tuple[Cluster, dict[str, list[str]]]]:
    """The cluster's instances plus a second order_svc and notify_svc."""
    cluster = services("product_svc", "order_svc", "notify_svc")
    extra: list[Process] = []
    addresses = {name: [cluster.addr(name)] for name in ("order_svc", "notify_svc")}
    for name in ("order_svc", "notify_svc"):
        port = free_port()
        env = {**cluster.service_env_for(name), "SHOP_PORT": str(port), "SHOP_METRICS_PORT": "0"}
        process = Process(f"{name}-2", [sys.executable, "-m", name], cluster.root / "logs" / f"{name}-2.log",
                          env=env, cwd=REPO).start()  # fmt: skip
        extra.append(process)
        process.wait_ready(functools.partial(cluster.grpc_serving, f"127.0.0.1:{port}"), 30)
        addresses[name].append(f"127.0.0.1:{port}")
    yield cluster, addresses
    for process in extra:
        process.stop()


async def test_a_burst_through_two_order_and_two_notify_instances(stack) -> None:
    cluster, addresses = stack
    ids = Identities(cluster)
    admin = ids.admin()
    channels = [cluster.channel(a) for a in ["product_svc", *addresses["order_svc"], *addresses["notify_svc"]]]
    products = product_pb2_grpc.ProductServiceStub(channels[0])
    orders = [order_pb2_grpc.OrderServiceStub(c) for c in channels[1:3]]
    feeds = [notify_pb2_grpc.NotificationServiceStub(c) for c in channels[3:5]]
    try:
        category = await products.CreateCategory(
            product_pb2.CreateCategoryRequest(name="Burst", slug=f"burst-{uuid.uuid4().hex[:8]}"), metadata=admin
        )
        product = await products.CreateProduct(
            product_pb2.CreateProductRequest(
                name="Burst item", category_id=category.category.id, stock=1000,
                price=money_pb2.Money(amount_minor=500, currency_code="EUR"),
            ),
            metadata=admin,
        )  # fmt: skip
        buyers = [ids.customer() for _ in range(8)]

        async def shop(n: int, buyer: tuple[str, list[tuple[str, str]]]) -> list[str]:
            placed = []
            for k in range(3):
                stub = orders[(n + k) % 2]  # both instances take orders
                created = await stub.CreateOrder(
                    order_pb2.CreateOrderRequest(
                        items=[order_pb2.OrderItem(product_id=product.product.id, quantity=1)],
                        shipping_address=ADDRESS,
                    ),
                    metadata=buyer[1],
                )
                await orders[(n + k + 1) % 2].PayOrder(
                    order_pb2.PayOrderRequest(order_id=created.order.id, payment_method_token="tok_approve"),
                    metadata=buyer[1],
                )
                placed.append(created.order.id)
            return placed

        placed = await asyncio.gather(*(shop(n, buyer) for n, buyer in enumerate(buyers)))
        order_ids = {order_id for batch in placed for order_id in batch}
        assert len(order_ids) == 24

        # Kafka: every order's two events, each published exactly once, in order.
        ours: list = []
        for _ in range(30):
            messages = await consume(cluster.servers["kafka"], events.ORDERS_TOPIC, 1_000_000, timeout=3)
            ours = [m for m in messages if (m.key() or b"").decode() in order_ids]
            if len(ours) >= 48:
                break
        event_ids = [events.header(m.headers(), events.EVENT_ID) for m in ours]
        assert len(event_ids) == 48 and len(set(event_ids)) == 48
        per_order = Counter(m.key().decode() for m in ours)
        assert set(per_order.values()) == {2}
        for order_id in order_ids:
            types = [events.header(m.headers(), events.EVENT_TYPE) for m in ours if m.key().decode() == order_id]
            assert types == ["shop.events.v1.OrderCreated", "shop.events.v1.OrderPaid"]

        # Feeds: each buyer sees one notification per event, read through either instance.
        for n, (_, metadata) in enumerate(buyers):
            seen: list[notify_pb2.Notification] = []
            for _ in range(100):
                reply = await feeds[n % 2].ListNotifications(
                    notify_pb2.ListNotificationsRequest(page=paging_pb2.PageRequest(page_size=100)), metadata=metadata
                )
                # Announcements of other tests are in every feed too: count the order notifications.
                seen = [note for note in reply.notifications if note.source_event_id in event_ids]
                if len(seen) >= 6:
                    break
                await asyncio.sleep(0.2)
            sources = [note.source_event_id for note in seen]
            assert len(sources) == 6, sources
            assert len(set(sources)) == 6
    finally:
        for channel in channels:
            await channel.close()
