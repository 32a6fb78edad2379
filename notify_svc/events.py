"""What notify_svc consumes (order, comment and platform events) and publishes
(AnnouncementPublished on ``shop.platform.v1``)."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Mapping

import confluent_kafka
from google.protobuf.timestamp_pb2 import Timestamp
from opentelemetry import trace
from prometheus_client import Counter
from shop.events.v1 import platform_events_pb2

from common import events
from common.clients import KafkaProducer
from common.consumer import ConsumedEvent
from common.errors import UnavailableError
from notify_svc import domain
from notify_svc.store import Store, StoreOutcome, now_us

log = logging.getLogger("shop.notify.events")
tracer = trace.get_tracer("shop.notify")

TOPICS = (events.ORDERS_TOPIC, events.COMMENTS_TOPIC, events.PLATFORM_TOPIC)

STORED = Counter("notify_notifications_stored_total", "Notifications stored (folded likes count each time)", ["kind"])
DUPLICATES = Counter("notify_events_duplicate_total", "Events seen again and ignored (already applied)")
IGNORED = Counter("notify_events_ignored_total", "Events that notify nobody", ["type"])

FOLD_ATTEMPTS = 20


class FoldContentionError(RuntimeError):
    """The fold of a comment's likes kept changing under us (the consumer retries)."""


class NotificationHandler:
    """The consumer's handler: one event in, at most one notification stored."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def __call__(self, event: ConsumedEvent) -> None:
        try:
            draft = domain.from_event(event.event_id, event.payload, now_us())
        except domain.InvalidEventError as exc:
            raise events.UndecodableEventError(f"{event.event_type}: {exc}") from exc
        if draft is None:
            IGNORED.labels(event.event_type).inc()
            return
        with tracer.start_as_current_span("notify store") as span:
            span.set_attribute("shop.notification.kind", draft.notification.kind)
            span.set_attribute("shop.notification.id", draft.notification.id)
            if draft.is_announcement:
                outcome = await self.store.store_announcement(event.event_id, draft.notification)
            elif draft.fold_on is not None and self.store.limits.like_fold_window > 0:
                outcome = await self._fold(event.event_id, draft)
            else:
                outcome = await self.store.store_personal(event.event_id, draft.notification)
            span.set_attribute("shop.notification.stored", outcome.stored)
        if outcome.stored:
            STORED.labels(draft.notification.kind).inc()
        else:
            DUPLICATES.inc()
            log.info("event already applied", extra={"event_id": event.event_id, "type": event.event_type})

    async def _fold(self, event_id: str, draft: domain.Draft) -> StoreOutcome:
        """Fold a like into the comment's open like notification (or start one)."""
        assert draft.fold_on is not None and draft.liker is not None
        user = draft.recipient
        for _ in range(FOLD_ATTEMPTS):
            current_id, document = await self.store.folding(user, draft.fold_on)
            if document is None:
                outcome = await self.store.store_personal(
                    event_id, draft.notification, fold_on=draft.fold_on, expected_fold=current_id
                )
            else:
                folded = domain.fold_like(domain.Notification.from_json(document), draft.notification, draft.liker)
                outcome = await self.store.store_personal(
                    event_id, folded, fold_on=draft.fold_on, expected_fold=current_id, expected_document=document
                )
            if not outcome.conflict:
                return outcome
        raise FoldContentionError(f"the likes of {draft.fold_on} kept changing while folding")


class AnnouncementPublisher:
    """Publishes AnnouncementPublished straight to Kafka (Redis has no transaction
    with Kafka, so there is no outbox: the call answers after Kafka acknowledged,
    and the event id makes a redelivery harmless)."""

    def __init__(self, producer: KafkaProducer, *, timeout: float = 10.0) -> None:
        self.producer = producer
        self.timeout = timeout

    async def publish(
        self, *, title: str, body: str, data: Mapping[str, str], published_by: str
    ) -> tuple[str, Timestamp]:
        announcement_id = str(uuid.uuid4())
        now = Timestamp()
        now.GetCurrentTime()
        message = platform_events_pb2.AnnouncementPublished(
            announcement_id=announcement_id,
            title=title,
            body=body,
            data=dict(data),
            published_by=published_by,
            occurred_at=now,
            committed_at=now,
        )
        event_id = events.new_event_id()
        topic = events.PLATFORM_TOPIC
        with tracer.start_as_current_span(f"{topic} publish", kind=trace.SpanKind.PRODUCER) as span:
            span.set_attribute("messaging.system", "kafka")
            span.set_attribute("messaging.destination.name", topic)
            span.set_attribute("messaging.message.id", event_id)
            headers = events.headers_for(event_id, message.DESCRIPTOR.full_name, events.trace_headers())
            try:
                value = message.SerializeToString()
                sent = self.producer.send(topic, value, key=announcement_id.encode(), headers=headers)
                await asyncio.wait_for(sent, self.timeout)
            except (confluent_kafka.KafkaException, BufferError, TimeoutError) as exc:
                log.warning("publishing an announcement failed", exc_info=exc)
                raise UnavailableError(
                    "the announcement could not be published; try again shortly",
                    reason="DEPENDENCY_UNAVAILABLE",
                    metadata={"dependency": "kafka"},
                ) from exc
        log.info("announcement published", extra={"announcement_id": announcement_id, "event_id": event_id})
        return announcement_id, now
