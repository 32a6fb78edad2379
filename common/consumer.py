"""The Kafka consumer loop every consuming service uses.

:class:`EventConsumer` reads a consumer group's topics with confluent-kafka,
polled on one dedicated thread so the event loop never blocks, and hands each
decoded event to an async handler.  The rules that make at-least-once delivery
give exactly-once effects (together with a handler that is idempotent by event
id):

* **Commit after the effect.**  Offsets are committed only for messages whose
  handler returned, after each polled batch (and on a rebalance or a stop), so
  a crash at any point redelivers what was not stored, never skips it.
* **Transient failures are retried in place** with exponential backoff (capped),
  without committing and without moving on: one partition's events stay in
  order and none is skipped.  A stop while retrying leaves the message
  uncommitted for the next owner.
* **Poison messages are parked, not retried forever.**  A message that is not
  one of our events (:class:`~common.events.UndecodableEventError`, raised by
  :func:`~common.events.decode` or by the handler) is logged with its topic,
  partition and offset, copied to ``<topic>.parked`` with the reason in its
  headers, and then committed.
* **Rebalance-safe.**  Messages are handled one at a time between polls, so
  when partitions are revoked (inside a poll) nothing is in flight; the
  processed offsets of the revoked partitions are committed synchronously in
  the callback before the new owner starts.  A commit that fails (e.g. after
  the group moved on) only means a redelivery, which the handler absorbs.

Every message gets a CONSUMER span whose parent is the producer's trace
context from the headers.  Prometheus metrics: messages by outcome
(processed, parked), handler retries, handling latency, and the lag per
partition (high watermark minus the next offset to process), refreshed every
few seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar, cast

import confluent_kafka
from confluent_kafka.cimpl import NewTopic
from google.protobuf.message import Message
from opentelemetry import context as otel_context, trace
from prometheus_client import Counter, Gauge, Histogram

from common import events
from common.clients import KafkaProducer, kafka_admin, kafka_consumer
from common.settings import KafkaSettings
from common.waits import wait_or_stop

log = logging.getLogger("shop.consumer")
tracer = trace.get_tracer("shop.consumer")

T = TypeVar("T")

MESSAGES = Counter(
    "kafka_consumer_messages_total", "Messages consumed, by outcome (processed, parked)", ["group", "topic", "outcome"]
)
RETRIES = Counter("kafka_consumer_retries_total", "Handler failures retried (transient errors)", ["group", "topic"])
HANDLING = Histogram(
    "kafka_consumer_handle_seconds",
    "Time to handle one message, retries included",
    ["group", "topic"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5, 30),
)
LAG = Gauge("kafka_consumer_lag", "Messages not processed yet, per partition", ["group", "topic", "partition"])

TOPIC_EXISTS = confluent_kafka.KafkaError.TOPIC_ALREADY_EXISTS
PARKED_SUFFIX = ".parked"
PARKED_REASON = "parked-reason"
PARKED_FROM = "parked-from"


@dataclass(frozen=True)
class ConsumedEvent:
    """One decoded event and where it came from."""

    event_id: str
    payload: Message
    topic: str
    partition: int
    offset: int
    key: bytes | None
    headers: Sequence[tuple[str, bytes]]

    @property
    def event_type(self) -> str:
        return str(self.payload.DESCRIPTOR.full_name)


Handler = Callable[[ConsumedEvent], Awaitable[None]]


class EventConsumer:
    """A consumer group member: ``await EventConsumer(...).run(stop)``.

    One instance runs once; build a new one to run again.
    """

    # Seconds one poll waits for the first message.
    poll_timeout = 0.5
    # Seconds a poison message being copied to ``<topic>.parked`` may take to be delivered.
    park_timeout = 10.0

    def __init__(
        self,
        settings: KafkaSettings,
        *,
        group_id: str,
        topics: Sequence[str],
        handler: Handler,
        batch_size: int = 200,
        retry_base: float = 0.2,
        retry_max: float = 30.0,
        lag_interval: float = 5.0,
        **config: Any,
    ) -> None:
        self.settings = settings
        self.group_id = group_id
        self.topics = list(topics)
        self.handler = handler
        self.batch_size = batch_size
        self.retry_base = retry_base
        self.retry_max = retry_max
        self.lag_interval = lag_interval
        self._consumer = kafka_consumer(settings, group_id, **config)
        # Every call into librdkafka (and so every rebalance callback) runs on this one thread.
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"kafka-{group_id}")
        # Next offset to commit per (topic, partition): processed, not committed yet.
        self._pending: dict[tuple[str, int], int] = {}
        self._assigned: set[tuple[str, int]] = set()
        # Next offset to process per partition (for the lag), kept across commits.
        self._next: dict[tuple[str, int], int] = {}
        self._last_lag = 0.0
        self._parker: KafkaProducer | None = None

    # -- running -------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until ``stop`` is set; then commit what was processed and leave the group."""
        await self._call(self._ensure_topics)
        await self._call(
            self._consumer.subscribe,
            self.topics,
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_lost,
        )
        log.info("consuming", extra={"group": self.group_id, "topics": ",".join(self.topics)})
        try:
            while not stop.is_set():
                messages = await self._call(self._fetch)
                for message in messages:
                    error = message.error()
                    if error is not None:
                        self._on_error(error)
                        continue
                    if not await self._handle(message, stop):
                        break  # stopped while retrying: that message stays uncommitted
                    where = (str(message.topic()), int(message.partition() or 0))
                    self._pending[where] = self._next[where] = int(message.offset() or 0) + 1
                await self._commit()
                await self._maybe_update_lag()
        finally:
            with contextlib.suppress(Exception):
                await self._commit()
            with contextlib.suppress(Exception):
                await self._call(self._consumer.close)
            if self._parker is not None:
                await self._parker.close(flush_seconds=2)
            self._thread.shutdown(wait=False)
            for topic, partition in self._assigned:
                with contextlib.suppress(KeyError):
                    LAG.remove(self.group_id, topic, str(partition))
            log.info("consumer stopped", extra={"group": self.group_id})

    def _fetch(self) -> list[Any]:
        """Wait (up to ``poll_timeout``) for one message, then take what else is
        already there, up to a batch: ``consume(n, timeout)`` alone would wait the
        whole timeout for a full batch, adding that much latency when it is quiet."""
        first = self._consumer.poll(self.poll_timeout)
        if first is None:
            return []
        more = self._consumer.consume(self.batch_size - 1, 0) if self.batch_size > 1 else []
        return [first, *more]

    async def _call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._thread, functools.partial(fn, *args, **kwargs))

    def _ensure_topics(self) -> None:
        """Create missing topics and their parking topics (broker defaults), so a
        consumer that starts before the first producer still sees them: a
        subscription to a topic that does not exist yet would only notice it at
        the next metadata refresh, minutes later.  Only the missing ones: a user
        that may read a topic need not be allowed to create it."""
        admin = kafka_admin(self.settings)
        names = [name for topic in self.topics for name in (topic, topic + PARKED_SUFFIX)]
        existing = admin.list_topics(timeout=10).topics
        wanted = [NewTopic(name) for name in names if name not in existing]
        if not wanted:
            return
        for topic, created in admin.create_topics(wanted).items():
            try:
                created.result(timeout=10)
                log.info("created topic %s", topic)
            except confluent_kafka.KafkaException as exc:
                error = exc.args[0] if exc.args else None
                if not (isinstance(error, confluent_kafka.KafkaError) and error.code() == TOPIC_EXISTS):
                    log.warning("could not create topic %s: %s", topic, exc)

    def _on_error(self, error: confluent_kafka.KafkaError) -> None:
        if error.fatal():
            raise confluent_kafka.KafkaException(error)
        log.warning("consumer error: %s", error.str(), extra={"group": self.group_id, "code": error.name()})

    # -- one message -----------------------------------------------------------------

    async def _handle(self, message: Any, stop: asyncio.Event) -> bool:
        """Handle (or park) one message; False when stopped before it was done."""
        topic, partition, offset = message.topic(), message.partition(), message.offset()
        headers: list[tuple[str, bytes]] = list(message.headers() or [])
        parent = cast(otel_context.Context, events.extract_context(headers))
        started = time.perf_counter()
        with tracer.start_as_current_span(f"{topic} process", context=parent, kind=trace.SpanKind.CONSUMER) as span:
            span.set_attribute("messaging.system", "kafka")
            span.set_attribute("messaging.operation.type", "process")
            span.set_attribute("messaging.destination.name", topic)
            span.set_attribute("messaging.consumer.group.name", self.group_id)
            span.set_attribute("messaging.destination.partition.id", str(partition))
            span.set_attribute("messaging.kafka.offset", offset)
            try:
                event_id, payload = events.decode(headers, message.value())
            except events.UndecodableEventError as exc:
                return await self._park(message, str(exc), stop)
            span.set_attribute("messaging.message.id", event_id)
            span.set_attribute("shop.event.type", str(payload.DESCRIPTOR.full_name))
            event = ConsumedEvent(event_id, payload, topic, partition, offset, message.key(), headers)
            attempt = 0
            while True:
                try:
                    await self.handler(event)
                except events.UndecodableEventError as exc:
                    return await self._park(message, str(exc), stop)
                except Exception as exc:
                    attempt += 1
                    delay = min(self.retry_base * 2 ** (attempt - 1), self.retry_max)
                    RETRIES.labels(self.group_id, topic).inc()
                    log.warning(
                        "handling an event failed; retrying in %.1fs",
                        delay,
                        exc_info=exc,
                        extra={"topic": topic, "partition": partition, "offset": offset, "event_id": event_id,
                               "attempt": attempt},
                    )  # fmt: skip
                    if await wait_or_stop(stop, delay):
                        return False
                    continue
                MESSAGES.labels(self.group_id, topic, "processed").inc()
                HANDLING.labels(self.group_id, topic).observe(time.perf_counter() - started)
                return True

    async def _park(self, message: Any, reason: str, stop: asyncio.Event) -> bool:
        """Copy a poison message to ``<topic>.parked`` (retrying until Kafka takes it)."""
        topic, partition, offset = message.topic(), message.partition(), message.offset()
        log.error(
            "parking an undecodable message: %s",
            reason,
            extra={"topic": topic, "partition": partition, "offset": offset, "parked_to": topic + PARKED_SUFFIX},
        )
        if self._parker is None:
            self._parker = KafkaProducer(self.settings, **{"message.timeout.ms": int(self.park_timeout * 1000)})
        headers = [
            *list(message.headers() or []),
            (PARKED_REASON, reason.encode()[:1000]),
            (PARKED_FROM, f"{topic}/{partition}/{offset}".encode()),
        ]
        attempt = 0
        while True:
            try:
                await asyncio.wait_for(
                    self._parker.send(
                        topic + PARKED_SUFFIX, message.value() or b"", key=message.key(), headers=headers
                    ),
                    self.park_timeout + 1,
                )
                break
            except Exception as exc:
                attempt += 1
                delay = min(self.retry_base * 2 ** (attempt - 1), self.retry_max)
                log.warning("parking failed; retrying in %.1fs", delay, exc_info=exc, extra={"topic": topic})
                if await wait_or_stop(stop, delay):
                    return False
        MESSAGES.labels(self.group_id, topic, "parked").inc()
        return True

    # -- offsets -------------------------------------------------------------------------

    async def _commit(self) -> None:
        if not self._pending:
            return
        offsets = [confluent_kafka.TopicPartition(t, p, o) for (t, p), o in self._pending.items()]
        self._pending.clear()
        try:
            await self._call(self._consumer.commit, offsets=offsets, asynchronous=False)
        except confluent_kafka.KafkaException as exc:
            # Not fatal: those messages are redelivered and the handler sees them again.
            log.warning("committing offsets failed: %s", exc, extra={"group": self.group_id})

    # Rebalance callbacks: called on the consumer thread, inside a poll, while
    # the loop waits for that poll (so nothing else touches _pending).
    def _on_assign(self, consumer: Any, partitions: list[confluent_kafka.TopicPartition]) -> None:
        self._assigned.update((tp.topic, tp.partition) for tp in partitions)
        log.info(
            "partitions assigned",
            extra={"group": self.group_id, "partitions": ",".join(f"{tp.topic}/{tp.partition}" for tp in partitions)},
        )

    def _on_revoke(self, consumer: Any, partitions: list[confluent_kafka.TopicPartition]) -> None:
        revoked = {(tp.topic, tp.partition) for tp in partitions}
        offsets = [confluent_kafka.TopicPartition(t, p, o) for (t, p), o in self._pending.items() if (t, p) in revoked]
        if offsets:
            try:
                consumer.commit(offsets=offsets, asynchronous=False)
            except confluent_kafka.KafkaException as exc:
                log.warning("committing revoked partitions failed: %s", exc, extra={"group": self.group_id})
        self._forget(revoked)
        log.info("partitions revoked", extra={"group": self.group_id, "count": len(revoked)})

    def _on_lost(self, consumer: Any, partitions: list[confluent_kafka.TopicPartition]) -> None:
        # Another member may own them already: committing could move its offsets.
        self._forget({(tp.topic, tp.partition) for tp in partitions})
        log.warning("partitions lost", extra={"group": self.group_id, "count": len(partitions)})

    def _forget(self, partitions: set[tuple[str, int]]) -> None:
        for key in partitions:
            self._pending.pop(key, None)
            self._next.pop(key, None)
            self._assigned.discard(key)
            with contextlib.suppress(KeyError):
                LAG.remove(self.group_id, key[0], str(key[1]))

    # -- lag -------------------------------------------------------------------------------

    async def _maybe_update_lag(self) -> None:
        if time.monotonic() - self._last_lag < self.lag_interval:
            return
        self._last_lag = time.monotonic()
        try:
            lags = await self._call(self._lags)
        except confluent_kafka.KafkaException as exc:
            log.debug("consumer lag unavailable: %s", exc)
            return
        for (topic, partition), lag in lags.items():
            LAG.labels(self.group_id, topic, str(partition)).set(lag)

    def _lags(self) -> dict[tuple[str, int], int]:
        """High watermark minus the next offset to process, per assigned partition.

        The high watermarks are the ones the fetcher last saw (``cached``): asking
        the broker would queue behind the fetch long-poll on the same connection.
        """
        assignment = self._consumer.assignment()
        if not assignment:
            return {}
        positions = {(tp.topic, tp.partition): self._next.get((tp.topic, tp.partition), -1) for tp in assignment}
        unknown = [tp for tp in assignment if positions[(tp.topic, tp.partition)] < 0]
        if unknown:  # nothing processed yet in this session: the committed offset is the position
            for tp in self._consumer.committed(unknown, timeout=2):
                positions[(tp.topic, tp.partition)] = tp.offset
        lags = {}
        for tp in assignment:
            low, high = self._consumer.get_watermark_offsets(tp, cached=True)
            position = positions[(tp.topic, tp.partition)]
            if high < 0 or (position < 0 and low < 0):
                continue  # nothing fetched from it yet
            lags[(tp.topic, tp.partition)] = max(0, high - (position if position >= 0 else low))
        return lags
