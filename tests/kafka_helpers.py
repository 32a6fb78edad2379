"""Reading events back from the real Kafka broker in tests."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

from common.clients import kafka_consumer
from common.settings import KafkaSettings


async def consume(bootstrap: str, topic: str, count: int, timeout: float = 30.0) -> list[Any]:
    """The first ``count`` messages of ``topic`` (from the beginning), or fewer at the timeout."""
    consumer = kafka_consumer(KafkaSettings(kafka_bootstrap=bootstrap), group_id=f"test-{uuid.uuid4().hex[:8]}")
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


async def consume_quietly(bootstrap: str, topic: str, seconds: float) -> list[Any]:
    """Everything on ``topic`` within ``seconds`` (to check that nothing more arrives)."""
    return await consume(bootstrap, topic, count=10**9, timeout=seconds)
