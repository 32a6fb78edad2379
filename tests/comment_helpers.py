"""What the comment tests share: tokens signed with the cluster's key, products
made through product_svc as an admin, a delivered order through order_svc, and
comment events read back from Kafka."""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from google.protobuf.message import Message
from shop.common.v1 import address_pb2, money_pb2
from shop.order.v1 import order_pb2, order_pb2_grpc
from shop.product.v1 import product_pb2, product_pb2_grpc

from common import events
from common.auth import TokenSigner
from common.clients import kafka_consumer
from devstack.cluster import Cluster
from devstack.servers import Server
from tests.kafka_helpers import kafka_settings


@dataclass(frozen=True)
class Caller:
    """A signed-in user: their id and the metadata of their calls."""

    user_id: str
    token: str

    @property
    def metadata(self) -> list[tuple[str, str]]:
        return [("authorization", f"Bearer {self.token}")]


def signer(cluster: Cluster) -> TokenSigner:
    key = serialization.load_pem_private_key((cluster.keys / "jwt_private.pem").read_bytes(), None)
    assert isinstance(key, ed25519.Ed25519PrivateKey)
    return TokenSigner(key, issuer="shop", audience="shop", ttl=3600)


def caller(cluster: Cluster, role: str = "customer", user_id: str | None = None) -> Caller:
    user_id = user_id or str(uuid.uuid4())
    token, _ = signer(cluster).sign(user_id, role)
    return Caller(user_id, token)


async def create_product(cluster: Cluster, admin: Caller, *, stock: int = 100, name: str = "Kettle") -> str:
    """A new product in a new category, made through product_svc's API; its id."""
    async with cluster.channel("product_svc") as channel:
        stub = product_pb2_grpc.ProductServiceStub(channel)
        slug = f"cat-{uuid.uuid4().hex[:10]}"
        category = await stub.CreateCategory(
            product_pb2.CreateCategoryRequest(name=f"Category {slug}", slug=slug), metadata=admin.metadata
        )
        created = await stub.CreateProduct(
            product_pb2.CreateProductRequest(
                name=f"{name} {uuid.uuid4().hex[:6]}",
                description="for comment tests",
                category_id=category.category.id,
                price=money_pb2.Money(amount_minor=2499, currency_code="EUR"),
                stock=stock,
                weight_grams=800,
            ),
            metadata=admin.metadata,
        )
    return str(created.product.id)


ADDRESS = address_pb2.Address(
    recipient_name="Ann Buyer", line1="1 Main St", city="Berlin", postal_code="10115", country_code="DE"
)


async def order_and_deliver(cluster: Cluster, buyer: Caller, admin: Caller, product_id: str) -> str:
    """An order of the product placed and paid by the buyer, shipped and delivered
    by an admin, through order_svc's API; the order id."""
    async with cluster.channel("order_svc") as channel:
        stub = order_pb2_grpc.OrderServiceStub(channel)
        created = await stub.CreateOrder(
            order_pb2.CreateOrderRequest(
                items=[order_pb2.OrderItem(product_id=product_id, quantity=1)],
                shipping_address=ADDRESS,
                shipping_method=order_pb2.SHIPPING_METHOD_STANDARD,
                idempotency_key=uuid.uuid4().hex,
            ),
            metadata=buyer.metadata,
        )
        order_id = created.order.id
        await stub.PayOrder(
            order_pb2.PayOrderRequest(
                order_id=order_id, payment_method_token="tok_approve", idempotency_key=uuid.uuid4().hex
            ),
            metadata=buyer.metadata,
        )
        await stub.ShipOrder(
            order_pb2.ShipOrderRequest(order_id=order_id, carrier="DHL", tracking_number="JD0001"),
            metadata=admin.metadata,
        )
        await stub.DeliverOrder(order_pb2.DeliverOrderRequest(order_id=order_id), metadata=admin.metadata)
    return str(order_id)


@dataclass(frozen=True)
class Event:
    key: str
    event_id: str
    event_type: str
    payload: Any


def _wait_for_topic(consumer: Any, topic: str, deadline: float) -> None:
    while time.monotonic() < deadline:
        metadata = consumer.list_topics(topic, timeout=5)
        found = metadata.topics.get(topic)
        if found is not None and found.error is None and found.partitions:
            return
        time.sleep(0.2)


async def comment_events(
    kafka: Server, keys: set[str], count: int, *, timeout: float = 30, settle: float = 2
) -> list[Event]:
    """The events on shop.comments.v1 keyed by one of ``keys``: read from the
    beginning until ``count`` arrived, then ``settle`` seconds more (so a test
    also sees any extra one)."""
    consumer = kafka_consumer(kafka_settings(kafka), group_id=f"test-{uuid.uuid4().hex[:8]}")
    found: list[Event] = []
    deadline = time.monotonic() + timeout
    try:
        await asyncio.to_thread(_wait_for_topic, consumer, events.COMMENTS_TOPIC, deadline)
        consumer.subscribe([events.COMMENTS_TOPIC])
        while time.monotonic() < deadline:
            message = await asyncio.to_thread(consumer.poll, 0.5)
            if message is None or message.error() is not None:
                continue
            key = (message.key() or b"").decode()
            if key not in keys:
                continue
            headers = message.headers()
            assert not isinstance(headers, dict)
            event_id, payload = events.decode(headers, message.value())
            assert isinstance(payload, Message)
            found.append(Event(key, event_id, payload.DESCRIPTOR.name, payload))
            if len(found) == count:
                deadline = min(deadline, time.monotonic() + settle)
    finally:
        consumer.close()
    return found
