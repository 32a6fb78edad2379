"""The tests' way onto the real Kafka broker: logged in as one of its users (the admin, a
super user, unless a test says otherwise), and reading events back."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

from common.clients import kafka_consumer
from common.settings import KAFKA_ADMIN_USER, KafkaSettings
from devstack.servers import Kafka, Server


def kafka_settings(kafka: Server, user: str = KAFKA_ADMIN_USER, password: str | None = None) -> KafkaSettings:
    """A client's settings for the devstack broker, as ``user`` (with ``password``, if given,
    instead of the user's own)."""
    assert isinstance(kafka, Kafka), kafka
    return kafka.client_settings(user, password)


async def consume(kafka: Server, topic: str, count: int, timeout: float = 30.0) -> list[Any]:
    """The first ``count`` messages of ``topic`` (from the beginning), or fewer at the timeout."""
    consumer = kafka_consumer(kafka_settings(kafka), group_id=f"test-{uuid.uuid4().hex[:8]}")
    consumer.subscribe([topic])
    messages: list[Any] = []
    deadline = time.monotonic() + timeout
    try:
        while len(messages) < count and time.monotonic() < deadline:
            message = await asyncio.to_thread(consumer.poll, 0.5)
            if message is not None and message.error() is None:
                messages.append(message)
    finally:
        consumer.close()
    return messages


async def consume_quietly(kafka: Server, topic: str, seconds: float) -> list[Any]:
    """Everything on ``topic`` within ``seconds`` (to check that nothing more arrives)."""
    return await consume(kafka, topic, count=10**9, timeout=seconds)
