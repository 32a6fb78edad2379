"""What notify_svc consumes (order, comment and platform events) and publishes
(AnnouncementPublished on ``shop.platform.v1``).

The consumed events are read here (:func:`draft_of`: the message's values in,
the domain's rules in ``domain/drafts.py`` decide the notification); the
handler hands the draft to the feed's use case, which stores it."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import confluent_kafka
from google.protobuf.message import Message
from opentelemetry import trace
from prometheus_client import Counter
from shop.events.v1 import comment_events_pb2, order_events_pb2, platform_events_pb2

from common import events
from common.clients import KafkaProducer
from common.consumer import ConsumedEvent
from common.convert import micros_of, money_parts, timestamp_from_micros
from common.errors import UnavailableError
from notify_svc.domain import drafts
from notify_svc.domain.drafts import CommentRef, Draft, Source
from notify_svc.store.limits import now_us

if TYPE_CHECKING:
    from notify_svc.notifications import Notifications

log = logging.getLogger("shop.notify.events")
tracer = trace.get_tracer("shop.notify")

TOPICS = (events.ORDERS_TOPIC, events.COMMENTS_TOPIC, events.PLATFORM_TOPIC)

STORED = Counter("notify_notifications_stored_total", "Notifications stored (folded likes count each time)", ["kind"])
DUPLICATES = Counter("notify_events_duplicate_total", "Events seen again and ignored (already applied)")
IGNORED = Counter("notify_events_ignored_total", "Events that notify nobody", ["type"])


class NotificationHandler:
    """The consumer's handler: one event in, at most one notification stored."""

    def __init__(self, notifications: Notifications) -> None:
        self.notifications = notifications

    async def __call__(self, event: ConsumedEvent) -> None:
        try:
            draft = draft_of(event.event_id, event.payload, now_us())
        except drafts.InvalidEventError as exc:
            raise events.UndecodableEventError(f"{event.event_type}: {exc}") from exc
        if draft is None:
            IGNORED.labels(event.event_type).inc()
            return
        with tracer.start_as_current_span("notify store") as span:
            span.set_attribute("shop.notification.kind", draft.notification.kind)
            span.set_attribute("shop.notification.id", draft.notification.id)
            outcome = await self.notifications.record(event.event_id, draft)
            span.set_attribute("shop.notification.stored", outcome.stored)
        if outcome.stored:
            STORED.labels(draft.notification.kind).inc()
        else:
            DUPLICATES.inc()
            log.info("event already applied", extra={"event_id": event.event_id, "type": event.event_type})


# --- reading the consumed events ------------------------------------------------------------


def draft_of(event_id: str, event: Message, now: int) -> Draft | None:
    """The notification an event asks for; None for events nobody is notified of
    (e.g. CommentCreated); InvalidEventError for an event without its recipient."""
    reader = _READERS.get(type(event))
    if reader is None:
        return None
    stamped: Any = event  # every event these readers know carries both times
    source = Source(
        event_id=event_id,
        occurred_us=micros_of(stamped.occurred_at),
        committed_us=micros_of(stamped.committed_at),
        now_us=now,
    )
    return reader(source, event)


def _order_created(source: Source, event: order_events_pb2.OrderCreated) -> Draft:
    buyer = drafts.recipient(event.user_id, "user_id")
    return drafts.order_created(source, buyer=buyer, order_id=event.order_id, total=money_parts(event.total))


def _order_paid(source: Source, event: order_events_pb2.OrderPaid) -> Draft:
    buyer = drafts.recipient(event.user_id, "user_id")
    return drafts.order_paid(
        source, buyer=buyer, order_id=event.order_id, amount=money_parts(event.amount), payment_id=event.payment_id
    )


def _order_shipped(source: Source, event: order_events_pb2.OrderShipped) -> Draft:
    buyer = drafts.recipient(event.user_id, "user_id")
    return drafts.order_shipped(
        source, buyer=buyer, order_id=event.order_id, carrier=event.carrier, tracking_number=event.tracking_number
    )


def _order_delivered(source: Source, event: order_events_pb2.OrderDelivered) -> Draft:
    buyer = drafts.recipient(event.user_id, "user_id")
    return drafts.order_delivered(source, buyer=buyer, order_id=event.order_id)


CANCEL_REASONS = {
    order_events_pb2.ORDER_CANCEL_REASON_CUSTOMER: "CUSTOMER",
    order_events_pb2.ORDER_CANCEL_REASON_ADMIN: "ADMIN",
    order_events_pb2.ORDER_CANCEL_REASON_EXPIRED: "EXPIRED",
}


def _order_cancelled(source: Source, event: order_events_pb2.OrderCancelled) -> Draft:
    buyer = drafts.recipient(event.user_id, "user_id")
    return drafts.order_cancelled(
        source,
        buyer=buyer,
        order_id=event.order_id,
        reason=CANCEL_REASONS.get(event.reason, ""),
        refunded=event.refunded,
        refund=money_parts(event.refund_amount) if event.HasField("refund_amount") else None,
    )


def _comment_replied(source: Source, event: comment_events_pb2.CommentReplied) -> Draft | None:
    return drafts.comment_replied(
        source,
        parent_author=drafts.recipient(event.parent_author_id, "parent_author_id"),
        author=(event.author_id, event.author_display_name),
        comment=CommentRef(event.comment_id, event.product_id, event.parent_id),
        excerpt=event.body_excerpt,
    )


def _comment_liked(source: Source, event: comment_events_pb2.CommentLiked) -> Draft | None:
    return drafts.comment_liked(
        source,
        comment_author=drafts.recipient(event.comment_author_id, "comment_author_id"),
        liker=(event.liker_id, event.liker_display_name),
        comment=CommentRef(event.comment_id, event.product_id),
        like_count=event.like_count,
    )


def _announcement_published(source: Source, event: platform_events_pb2.AnnouncementPublished) -> Draft:
    return drafts.announcement(
        source, announcement_id=event.announcement_id, title=event.title, body=event.body, data=dict(event.data)
    )


_READERS: dict[type[Message], Callable[[Source, Any], Draft | None]] = {
    order_events_pb2.OrderCreated: _order_created,
    order_events_pb2.OrderPaid: _order_paid,
    order_events_pb2.OrderShipped: _order_shipped,
    order_events_pb2.OrderDelivered: _order_delivered,
    order_events_pb2.OrderCancelled: _order_cancelled,
    comment_events_pb2.CommentReplied: _comment_replied,
    comment_events_pb2.CommentLiked: _comment_liked,
    platform_events_pb2.AnnouncementPublished: _announcement_published,
}


# --- publishing -------------------------------------------------------------------------------


class AnnouncementPublisher:
    """Publishes AnnouncementPublished straight to Kafka (Redis has no transaction
    with Kafka, so there is no outbox: the call answers after Kafka acknowledged,
    and the event id makes a redelivery harmless)."""

    def __init__(self, producer: KafkaProducer, *, timeout: float = 10.0) -> None:
        self.producer = producer
        self.timeout = timeout

    async def publish(self, *, title: str, body: str, data: Mapping[str, str], published_by: str) -> tuple[str, int]:
        """Publish; the announcement's id and when it was published (microseconds)."""
        announcement_id = str(uuid.uuid4())
        published_us = now_us()
        now = timestamp_from_micros(published_us)
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
        return announcement_id, published_us
