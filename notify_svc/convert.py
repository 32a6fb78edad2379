"""Proto ⇄ domain for notify_svc (used by the servicer and by the webhook worker)."""

from __future__ import annotations

import json
from collections.abc import Iterable

from google.protobuf import json_format
from shop.notify.v1 import notify_pb2

from common.convert import timestamp_from_micros
from notify_svc import domain
from notify_svc.domain.webhooks import RETRYING, Delivery, StatusFilter, Webhook

KIND_PREFIX = "NOTIFICATION_KIND_"
STATUS_PREFIX = "WEBHOOK_DELIVERY_STATUS_"


def kind_to_proto(kind: str) -> notify_pb2.NotificationKind.ValueType:
    try:
        return notify_pb2.NotificationKind.Value(KIND_PREFIX + kind)
    except ValueError:
        return notify_pb2.NOTIFICATION_KIND_UNSPECIFIED


def kind_of_proto(value: int) -> str | None:
    """The domain kind of an enum value; None for UNSPECIFIED or unknown values."""
    try:
        name = notify_pb2.NotificationKind.Name(value)  # type: ignore[arg-type]
    except ValueError:
        return None
    kind = name.removeprefix(KIND_PREFIX)
    return kind if kind in domain.KINDS else None


def kinds_of_proto(values: Iterable[int]) -> list[str | None]:
    return [kind_of_proto(value) for value in values]


def status_to_proto(status: str) -> notify_pb2.WebhookDeliveryStatus.ValueType:
    try:
        return notify_pb2.WebhookDeliveryStatus.Value(STATUS_PREFIX + status)
    except ValueError:
        return notify_pb2.WEBHOOK_DELIVERY_STATUS_UNSPECIFIED


def status_of_proto(value: int) -> str | None:
    """The stored status of an enum value; None for UNSPECIFIED; ValueError for unknown values."""
    if value == notify_pb2.WEBHOOK_DELIVERY_STATUS_UNSPECIFIED:
        return None
    return notify_pb2.WebhookDeliveryStatus.Name(value).removeprefix(STATUS_PREFIX)  # type: ignore[arg-type]


def status_filter_of_proto(value: int) -> StatusFilter:
    try:
        return StatusFilter(status_of_proto(value))
    except ValueError:
        return StatusFilter(None, known=False)


def notification_to_proto(note: domain.Notification, *, read: bool) -> notify_pb2.Notification:
    return notify_pb2.Notification(
        id=note.id,
        kind=kind_to_proto(note.kind),
        title=note.title,
        body=note.body,
        data=note.data,
        read=read,
        created_at=timestamp_from_micros(note.created_at_us),
        source_event_id=note.source_event_id,
        source_committed_at=timestamp_from_micros(note.source_committed_at_us),
        folded_count=note.folded_count,
    )


def feed_item_to_proto(item: domain.FeedItem) -> notify_pb2.Notification:
    return notification_to_proto(item.notification, read=item.read)


def webhook_body(note: domain.Notification) -> bytes:
    """What a webhook receives: the Notification in proto3 JSON."""
    document = json_format.MessageToDict(notification_to_proto(note, read=False))
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False, sort_keys=True).encode()


def webhook_to_proto(hook: Webhook) -> notify_pb2.Webhook:
    return notify_pb2.Webhook(
        id=hook.id,
        url=hook.url,
        description=hook.description,
        kinds=[kind_to_proto(kind) for kind in hook.kinds],
        created_at=timestamp_from_micros(hook.created_at_us),
        last_delivery_status=status_to_proto(hook.last_status),
        last_delivery_at=timestamp_from_micros(hook.last_delivery_at_us),
        last_success_at=timestamp_from_micros(hook.last_success_at_us),
        last_failure_at=timestamp_from_micros(hook.last_failure_at_us),
        last_error=hook.last_error,
        failed_delivery_count=hook.failed_count,
    )


def delivery_to_proto(delivery: Delivery) -> notify_pb2.WebhookDelivery:
    return notify_pb2.WebhookDelivery(
        id=delivery.id,
        webhook_id=delivery.webhook_id,
        notification_id=delivery.notification_id,
        status=status_to_proto(delivery.status),
        attempt_count=delivery.attempts,
        last_http_status=delivery.http_status,
        last_error=delivery.error,
        next_attempt_at=timestamp_from_micros(delivery.next_at_us) if delivery.status == RETRYING else None,
        created_at=timestamp_from_micros(delivery.created_at_us),
        updated_at=timestamp_from_micros(delivery.updated_at_us),
    )
