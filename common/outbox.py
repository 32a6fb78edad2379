"""The transactional outbox: events are written in the same transaction as the
state change, and a relay publishes them to Kafka.

* :func:`outbox_table` is the table every producing service has (its Alembic
  migration creates it with :func:`create_outbox`).
* :func:`add_event` inserts an event inside the caller's transaction and wakes
  the relay with ``NOTIFY`` (delivered only if the transaction commits).
* :class:`OutboxRelay` publishes unpublished rows in id order.  It locks the
  rows it publishes (``SELECT … FOR UPDATE``), so two relays never publish the
  same row, and a relay that waits on the other's lock sees those rows as
  published when it gets them; one aggregate's events therefore reach Kafka in
  the order they were written.  Rows are marked published only after Kafka
  acknowledged every message of the batch; when Kafka is down the rows stay
  and are retried, so nothing is lost (a retry may publish a row twice:
  consumers are idempotent by event id).
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from google.protobuf.message import Message
from opentelemetry import context as otel_context, trace
from prometheus_client import Counter, Gauge, Histogram
from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Identity,
    Index,
    LargeBinary,
    MetaData,
    Table,
    Text,
    Uuid,
    delete,
    func,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from common import convert, events
from common.clients import KafkaProducer
from common.waits import wait_for_either, wait_or_stop

log = logging.getLogger("shop.outbox")
tracer = trace.get_tracer("shop.outbox")

NOTIFY_CHANNEL = "shop_outbox"

PUBLISHED = Counter("outbox_published_total", "Events published to Kafka by the relay", ["topic"])
BACKLOG = Gauge("outbox_backlog", "Events written but not yet published")
OLDEST = Gauge("outbox_oldest_unpublished_seconds", "Age of the oldest unpublished event")
RELAY_LAG = Histogram(
    "outbox_relay_lag_seconds",
    "Time from an event's commit to Kafka's acknowledgement",
    buckets=(0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5, 30, 120),
)


def outbox_table(metadata: MetaData) -> Table:
    table = Table(
        "outbox",
        metadata,
        Column("id", BigInteger, Identity(), primary_key=True),
        Column("event_id", Uuid, nullable=False, unique=True),
        Column("topic", Text, nullable=False),
        Column("key", Text, nullable=False),
        Column("event_type", Text, nullable=False),
        Column("payload", LargeBinary, nullable=False),
        Column("headers", JSONB, nullable=False),
        Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
        Column("published_at", DateTime(timezone=True)),
    )
    Index("outbox_unpublished", table.c.id, postgresql_where=table.c.published_at.is_(None))
    return table


def create_outbox(connection: Any) -> None:
    """Create the outbox table (from an Alembic migration: ``create_outbox(op.get_bind())``)."""
    outbox_table(MetaData()).create(connection)


def drop_outbox(connection: Any) -> None:
    outbox_table(MetaData()).drop(connection)


async def add_event(conn: AsyncConnection, outbox: Table, *, topic: str, key: str, message: Message) -> str:
    """Write an event in the caller's transaction; returns its event id."""
    if "committed_at" in message.DESCRIPTOR.fields_by_name:
        message.committed_at.CopyFrom(convert.now())  # type: ignore[attr-defined]
    event_id = events.new_event_id()
    inserted = (
        outbox.insert()
        .values(
            event_id=event_id,
            topic=topic,
            key=key,
            event_type=message.DESCRIPTOR.full_name,
            payload=message.SerializeToString(),
            headers=events.trace_headers(),
        )
        .returning(outbox.c.id)
        .cte("inserted")
    )
    # One statement: the row and the wake-up of the relays.
    await conn.execute(select(func.pg_notify(NOTIFY_CHANNEL, "")).select_from(inserted))
    return event_id


class OutboxRelay:
    def __init__(
        self,
        engine: AsyncEngine,
        producer: KafkaProducer,
        *,
        batch_size: int = 500,
        poll_interval: float = 1.0,
        delivery_timeout: float = 15.0,
        retention: timedelta = timedelta(hours=24),
    ) -> None:
        self.engine = engine
        self.producer = producer
        self.table = outbox_table(MetaData())
        self.batch_size = batch_size
        self.poll_interval = poll_interval
        self.delivery_timeout = delivery_timeout
        self.retention = retention
        self._wake = asyncio.Event()
        self._last_stats = 0.0

    async def run(self, stop: asyncio.Event) -> None:
        """Publish until ``stop`` is set; never gives up on an unpublished row."""
        listener = asyncio.create_task(self._listen(stop))
        backoff = 0.2
        try:
            while not stop.is_set():
                # Cleared before the batch, not after it: a NOTIFY that arrives while
                # the batch runs must wake the next round at once.
                self._wake.clear()
                try:
                    published = await self.publish_batch()
                    backoff = 0.2
                    await self._maybe_stats()
                except Exception:
                    log.warning("outbox relay could not publish; retrying in %.1fs", backoff, exc_info=True)
                    await wait_or_stop(stop, backoff)
                    backoff = min(backoff * 2, 5.0)
                    continue
                if published < self.batch_size:
                    await wait_for_either(stop, self._wake, self.poll_interval)
        finally:
            listener.cancel()

    async def publish_batch(self) -> int:
        """Publish the oldest unpublished rows (up to one batch); return how many."""
        t = self.table
        async with self.engine.begin() as conn:
            rows = (
                await conn.execute(
                    select(
                        t.c.id,
                        t.c.event_id,
                        t.c.topic,
                        t.c.key,
                        t.c.event_type,
                        t.c.payload,
                        t.c.headers,
                        t.c.created_at,
                    )
                    .where(t.c.published_at.is_(None))
                    .order_by(t.c.id)
                    .limit(self.batch_size)
                    .with_for_update()
                )
            ).all()
            if not rows:
                return 0
            deliveries = [self._produce(row) for row in rows]
            await asyncio.wait_for(asyncio.gather(*deliveries), self.delivery_timeout)
            now = datetime.now(UTC)
            await conn.execute(update(t).where(t.c.id.in_([row.id for row in rows])).values(published_at=now))
        for row in rows:
            PUBLISHED.labels(row.topic).inc()
            RELAY_LAG.observe(max(0.0, (now - row.created_at).total_seconds()))
        return len(rows)

    def _produce(self, row: Any) -> asyncio.Future[Any]:
        parent = events.extract_context(list(row.headers.items()))
        token = otel_context.attach(parent)  # type: ignore[arg-type]
        try:
            with tracer.start_as_current_span(f"{row.topic} publish", kind=trace.SpanKind.PRODUCER) as span:
                span.set_attribute("messaging.system", "kafka")
                span.set_attribute("messaging.destination.name", row.topic)
                span.set_attribute("messaging.message.id", str(row.event_id))
                headers = events.headers_for(str(row.event_id), row.event_type, events.trace_headers())
                return self.producer.produce(row.topic, row.payload, key=row.key.encode(), headers=headers)
        finally:
            otel_context.detach(token)

    async def _maybe_stats(self) -> None:
        """Backlog gauges and pruning of old published rows, at most every few seconds."""
        if time.monotonic() - self._last_stats < 5:
            return
        self._last_stats = time.monotonic()
        t = self.table
        async with self.engine.begin() as conn:
            count, oldest = (
                await conn.execute(select(func.count(), func.min(t.c.created_at)).where(t.c.published_at.is_(None)))
            ).one()
            cutoff = datetime.now(UTC) - self.retention
            await conn.execute(delete(t).where(t.c.published_at < cutoff))
        BACKLOG.set(count)
        OLDEST.set((datetime.now(UTC) - oldest).total_seconds() if oldest else 0)

    async def _listen(self, stop: asyncio.Event) -> None:
        """Wake the relay on NOTIFY, so an event goes out milliseconds after its commit."""
        dsn = self.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        while not stop.is_set():
            try:
                async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
                    await conn.execute(f"listen {NOTIFY_CHANNEL}")
                    self._wake.set()  # catch up on anything written while we were not listening
                    async for _ in conn.notifies():
                        self._wake.set()
            except (psycopg.Error, OSError):
                log.warning("outbox listener lost its connection; polling until it is back", exc_info=True)
                await wait_or_stop(stop, 1.0)
