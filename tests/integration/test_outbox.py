"""The outbox relay against real PostgreSQL and Kafka: in order, once, nothing lost."""

from __future__ import annotations

import asyncio
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator

import psycopg
import pytest
from shop.events.v1 import order_events_pb2
from sqlalchemy import MetaData, func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from common import events
from common.clients import KafkaProducer, pg_engine
from common.outbox import OutboxRelay, add_event, create_outbox, outbox_table
from devstack.servers import Kafka, Postgres
from tests.kafka_helpers import consume, consume_quietly, kafka_settings

OUTBOX = outbox_table(MetaData())


@pytest.fixture
async def engine(postgres: Postgres) -> AsyncIterator[AsyncEngine]:
    name = f"outbox_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(postgres.dsn("postgres"), autocommit=True) as conn:
        conn.execute(f'create database "{name}"')
    engine = pg_engine(postgres.url(name))
    async with engine.begin() as conn:
        await conn.run_sync(create_outbox)
    yield engine
    await engine.dispose()


async def write(engine: AsyncEngine, topic: str, order_id: str, step: int) -> str:
    async with engine.begin() as conn:
        message = order_events_pb2.OrderPaid(order_id=order_id, payment_id=str(step))
        return await add_event(conn, OUTBOX, topic=topic, key=order_id, message=message)


class Relays:
    """Relays running in the background until the test ends."""

    def __init__(self, engine: AsyncEngine, kafka: Kafka) -> None:
        self.engine, self.kafka = engine, kafka
        self.stop = asyncio.Event()
        self.tasks: list[asyncio.Task[None]] = []
        self.producers: list[KafkaProducer] = []

    def start(self, count: int = 1, poll_interval: float = 0.5) -> None:
        for _ in range(count):
            producer = KafkaProducer(kafka_settings(self.kafka), **{"message.timeout.ms": 5000})
            relay = OutboxRelay(self.engine, producer, batch_size=20, poll_interval=poll_interval, delivery_timeout=8)
            self.producers.append(producer)
            self.tasks.append(asyncio.create_task(relay.run(self.stop)))

    async def close(self) -> None:
        self.stop.set()
        await asyncio.gather(*self.tasks)
        for producer in self.producers:
            await producer.close(flush_seconds=2)


@pytest.fixture
async def relays(engine: AsyncEngine, kafka: Kafka) -> AsyncIterator[Relays]:
    running = Relays(engine, kafka)
    yield running
    await running.close()


def event_ids(messages: list) -> list[str]:
    return [events.header(m.headers(), events.EVENT_ID) or "" for m in messages]


def by_key(messages: list) -> dict[str, list[str]]:
    seen: dict[str, list[str]] = defaultdict(list)
    for message in messages:
        _, payload = events.decode(message.headers(), message.value())
        assert isinstance(payload, order_events_pb2.OrderPaid)
        seen[message.key().decode()].append(payload.payment_id)
    return seen


async def unpublished(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        return int((await conn.scalar(select(func.count()).where(OUTBOX.c.published_at.is_(None)))) or 0)


async def test_events_arrive_in_order_with_their_headers(engine, relays, kafka) -> None:
    topic = f"test.outbox.{uuid.uuid4().hex[:8]}"
    relays.start()
    written = [await write(engine, topic, f"order-{n % 3}", n) for n in range(30)]
    messages = await consume(kafka, topic, 30)
    assert [events.header(m.headers(), events.EVENT_ID) for m in messages if m.key() == b"order-0"] == [
        written[n] for n in range(0, 30, 3)
    ]
    assert sorted(event_ids(messages)) == sorted(written)
    assert {events.header(m.headers(), events.EVENT_TYPE) for m in messages} == {"shop.events.v1.OrderPaid"}
    for key, steps in by_key(messages).items():
        assert steps == sorted(steps, key=int), key
    assert await unpublished(engine) == 0


async def test_two_relays_publish_every_event_exactly_once_in_order(engine, relays, kafka) -> None:
    topic = f"test.outbox.{uuid.uuid4().hex[:8]}"
    relays.start(count=2)

    async def writer(order: int) -> list[str]:
        return [await write(engine, topic, f"order-{order}", step) for step in range(25)]

    written = [event_id for ids in await asyncio.gather(*(writer(n) for n in range(8))) for event_id in ids]
    messages = await consume(kafka, topic, len(written))
    messages += await consume_quietly(kafka, topic, 2)  # nothing twice: a fresh group re-reads all
    ids = event_ids(messages)
    assert len(written) == 200
    assert sorted(ids[: len(written)]) == sorted(written)
    assert len(ids) == 2 * len(written)  # the second read is a full re-read by another group, no extra copies
    for key, steps in by_key(messages[: len(written)]).items():
        assert steps == [str(step) for step in range(25)], key


async def test_a_rolled_back_transaction_publishes_nothing(engine, relays, kafka) -> None:
    topic = f"test.outbox.{uuid.uuid4().hex[:8]}"
    relays.start()
    with pytest.raises(RuntimeError):
        async with engine.begin() as conn:
            await add_event(conn, OUTBOX, topic=topic, key="order-x", message=order_events_pb2.OrderPaid())
            raise RuntimeError("the state change failed")
    kept = await write(engine, topic, "order-y", 1)
    messages = await consume(kafka, topic, 2, timeout=10)
    assert event_ids(messages) == [kept]


async def test_kafka_down_loses_nothing(engine, relays, kafka) -> None:
    topic = f"test.outbox.{uuid.uuid4().hex[:8]}"
    relays.start()
    before = await write(engine, topic, "order-1", 1)
    assert len(await consume(kafka, topic, 1)) == 1
    kafka.stop()
    try:
        during = [await write(engine, topic, "order-1", step) for step in range(2, 12)]
        await asyncio.sleep(3)
        assert await unpublished(engine) == 10  # kept, not dropped
    finally:
        kafka.start()
        await asyncio.to_thread(kafka.wait)
    messages = await consume(kafka, topic, 11, timeout=60)
    ids = list(dict.fromkeys(event_ids(messages)))
    assert ids == [before, *during]
    assert await unpublished(engine) == 0


async def test_a_notify_during_a_batch_wakes_the_next_one(engine, relays, kafka, postgres) -> None:
    """An event committed while the relay publishes a batch goes out right after
    it, not at the next poll (a minute here): its NOTIFY is not forgotten."""
    topic = f"test.outbox.{uuid.uuid4().hex[:8]}"
    first = await write(engine, topic, "order-0", 0)
    database = engine.url.database
    assert database is not None
    async with await psycopg.AsyncConnection.connect(postgres.dsn(database)) as holder:
        # Hold the first row's lock: the relay's first batch waits on it, mid-batch.
        await holder.execute("select id from outbox where event_id = %s for update", (first,))
        relays.start(poll_interval=60)
        await asyncio.sleep(1.0)
        second = await write(engine, topic, "order-1", 1)  # its NOTIFY arrives during that batch
        await asyncio.sleep(1.0)
        await holder.rollback()  # the batch goes on with the first row only (its snapshot predates the second)
    messages = await consume(kafka, topic, 2, timeout=15)
    assert sorted(event_ids(messages)) == sorted([first, second])
