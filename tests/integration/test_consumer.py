"""The shared consumer loop (common/consumer.py) against the real Kafka broker:
order, commits after the handler, retries without skipping, parking, stops,
trace context and lag."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import REGISTRY
from shop.events.v1 import order_events_pb2

from common import events
from common.clients import KafkaProducer
from common.consumer import PARKED_FROM, PARKED_REASON, ConsumedEvent, EventConsumer
from devstack.servers import Kafka
from tests.kafka_helpers import consume, kafka_settings


@pytest.fixture
async def producer(kafka: Kafka) -> AsyncIterator[KafkaProducer]:
    client = KafkaProducer(kafka_settings(kafka))
    yield client
    await client.close(flush_seconds=5)


def names() -> tuple[str, str]:
    suffix = uuid.uuid4().hex[:8]
    return f"test.consumer.{suffix}", f"test-group-{suffix}"


async def publish(producer: KafkaProducer, topic: str, key: str, step: int, event_id: str | None = None) -> str:
    event_id = event_id or events.new_event_id()
    message = order_events_pb2.OrderPaid(order_id=key, payment_id=str(step))
    headers = events.headers_for(event_id, message.DESCRIPTOR.full_name, events.trace_headers())
    await producer.send(topic, message.SerializeToString(), key=key.encode(), headers=headers)
    return event_id


class Running:
    """An EventConsumer running in the background, with what it handled."""

    def __init__(self, kafka: Kafka, topic: str, group: str, handler: Callable[[ConsumedEvent], Awaitable[None]] | None,
                 **options: Any) -> None:  # fmt: skip
        self.handled: list[ConsumedEvent] = []
        self.stop = asyncio.Event()

        async def record(event: ConsumedEvent) -> None:
            if handler is not None:
                await handler(event)
            self.handled.append(event)

        self.consumer = EventConsumer(
            kafka_settings(kafka), group_id=group, topics=[topic], handler=record,
            retry_base=0.05, **{"session.timeout.ms": 6000, **options},
        )  # fmt: skip
        self.task = asyncio.create_task(self.consumer.run(self.stop))

    async def until(self, count: int, timeout: float = 30.0) -> list[ConsumedEvent]:
        deadline = time.monotonic() + timeout
        while len(self.handled) < count:
            assert not self.task.done(), self.task
            assert time.monotonic() < deadline, f"handled {len(self.handled)} of {count}"
            await asyncio.sleep(0.05)
        return self.handled

    async def close(self) -> None:
        self.stop.set()
        await asyncio.wait_for(self.task, 30)


@pytest.fixture
async def consumers(kafka: Kafka) -> AsyncIterator[Callable[..., Running]]:
    started: list[Running] = []

    def start(topic: str, group: str, handler: Any = None, **options: Any) -> Running:
        running = Running(kafka, topic, group, handler, **options)
        started.append(running)
        return running

    yield start
    for running in started:
        if not running.task.done():
            await running.close()


def steps(handled: list[ConsumedEvent], key: str) -> list[int]:
    return [int(e.payload.payment_id) for e in handled if e.key == key.encode()]  # type: ignore[attr-defined]


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_events_are_handled_in_order_and_committed_after_the_handler(
    producer: KafkaProducer, consumers: Callable[..., Running]
) -> None:
    topic, group = names()
    first = consumers(topic, group)
    for step in range(30):
        await publish(producer, topic, f"order-{step % 3}", step)
    handled = await first.until(30)
    for key in ("order-0", "order-1", "order-2"):
        assert steps(handled, key) == sorted(steps(handled, key)) and len(steps(handled, key)) == 10
    assert {e.event_type for e in handled} == {"shop.events.v1.OrderPaid"}
    await first.close()

    later = [await publish(producer, topic, f"order-{step % 3}", step) for step in range(30, 40)]
    second = consumers(topic, group)
    await second.until(10)
    await asyncio.sleep(1.5)  # nothing old comes back: the first consumer's offsets were committed
    assert sorted(e.event_id for e in second.handled) == sorted(later)


async def test_transient_failures_are_retried_in_place_without_skipping(
    producer: KafkaProducer, consumers: Callable[..., Running]
) -> None:
    topic, group = names()
    failures = {"left": 3}
    flaky = await publish(producer, topic, "order-x", 0)
    for step in range(1, 6):
        await publish(producer, topic, "order-x", step)

    async def handler(event: ConsumedEvent) -> None:
        if event.event_id == flaky and failures["left"]:
            failures["left"] -= 1
            raise ConnectionError("the store is down")

    retries_before = metric("kafka_consumer_retries_total", group=group, topic=topic)
    running = consumers(topic, group, handler)
    handled = await running.until(6)
    assert steps(handled, "order-x") == [0, 1, 2, 3, 4, 5]
    assert failures["left"] == 0
    assert metric("kafka_consumer_retries_total", group=group, topic=topic) - retries_before == 3
    assert metric("kafka_consumer_messages_total", group=group, topic=topic, outcome="processed") == 6


async def test_a_stop_while_retrying_leaves_the_event_for_the_next_consumer(
    producer: KafkaProducer, consumers: Callable[..., Running]
) -> None:
    topic, group = names()
    ok = await publish(producer, topic, "order-y", 0)
    stuck = await publish(producer, topic, "order-y", 1)
    after = await publish(producer, topic, "order-y", 2)

    async def broken(event: ConsumedEvent) -> None:
        if event.event_id == stuck:
            raise ConnectionError("down for good")

    first = consumers(topic, group, broken)
    await first.until(1)
    await asyncio.sleep(0.5)  # retrying the stuck one
    await first.close()
    assert [e.event_id for e in first.handled] == [ok]
    second = consumers(topic, group)
    await second.until(2)
    assert [e.event_id for e in second.handled] == [stuck, after]


async def test_poison_is_parked_with_its_origin_and_never_redelivered(
    kafka: Kafka, producer: KafkaProducer, consumers: Callable[..., Running]
) -> None:
    topic, group = names()
    await producer.send(topic, b"\x01garbage", key=b"order-z")
    good = await publish(producer, topic, "order-z", 1)
    invalid = order_events_pb2.OrderPaid(order_id="order-z")

    async def picky(event: ConsumedEvent) -> None:
        if event.event_id == bad:
            raise events.UndecodableEventError("no buyer")

    bad = events.new_event_id()
    headers = events.headers_for(bad, invalid.DESCRIPTOR.full_name, {})
    await producer.send(topic, invalid.SerializeToString(), key=b"order-z", headers=headers)
    last = await publish(producer, topic, "order-z", 3)
    first = consumers(topic, group, picky)
    await first.until(2)
    assert [e.event_id for e in first.handled] == [good, last]
    assert metric("kafka_consumer_messages_total", group=group, topic=topic, outcome="parked") == 2
    await first.close()

    parked = await consume(kafka, topic + ".parked", 2)
    assert [m.value() for m in parked] == [b"\x01garbage", invalid.SerializeToString()]
    reasons = [events.header(m.headers(), PARKED_REASON) or "" for m in parked]
    assert "missing event-id" in reasons[0] and reasons[1] == "no buyer"
    origins = [events.header(m.headers(), PARKED_FROM) or "" for m in parked]
    partition = origins[0].split("/")[1]
    assert origins == [f"{topic}/{partition}/0", f"{topic}/{partition}/2"]
    assert events.header(parked[1].headers(), events.EVENT_ID) == bad

    second = consumers(topic, group)
    await asyncio.sleep(2)  # committed: neither the poison nor the others come back
    assert second.handled == []
    assert len(await consume(kafka, topic + ".parked", 3, timeout=3)) == 2


async def test_the_consumer_span_continues_the_producers_trace(
    producer: KafkaProducer, consumers: Callable[..., Running]
) -> None:
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    topic, group = names()
    with trace.get_tracer("test").start_as_current_span("checkout") as parent:
        event_id = await publish(producer, topic, "order-t", 1)
    running = consumers(topic, group)
    await running.until(1)
    [span] = [s for s in exporter.get_finished_spans() if s.name == f"{topic} process"]
    assert span.kind == trace.SpanKind.CONSUMER
    assert span.parent is not None
    assert span.parent.span_id == parent.get_span_context().span_id
    assert span.context.trace_id == parent.get_span_context().trace_id
    assert span.attributes is not None and span.attributes["messaging.message.id"] == event_id


async def test_lag_per_partition_is_measured_from_the_watermarks(
    producer: KafkaProducer, consumers: Callable[..., Running]
) -> None:
    topic, group = names()
    for step in range(20):
        await publish(producer, topic, "order-l", step)

    async def slow(event: ConsumedEvent) -> None:
        await asyncio.sleep(0.05)

    running = consumers(topic, group, slow, batch_size=1, lag_interval=0.0)
    seen: list[float] = []
    while len(running.handled) < 20:
        seen.append(sum(metric("kafka_consumer_lag", group=group, topic=topic, partition=str(p)) for p in range(3)))
        await asyncio.sleep(0.05)
    assert max(seen) >= 5  # a backlog was visible while catching up
    await asyncio.sleep(0.3)
    total = sum(metric("kafka_consumer_lag", group=group, topic=topic, partition=str(p)) for p in range(3))
    assert total == 0
