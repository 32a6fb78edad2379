"""Notifications (``/api/v1/notifications``, a live stream as server-sent events),
webhooks (``/api/v1/webhooks``) and platform announcements (admin)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Annotated, Any, Literal
from urllib.parse import urlencode

import grpc
from pydantic import BaseModel, ConfigDict, Field
from shop.notify.v1 import notify_pb2
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from common.convert import optional_datetime_of
from edge.api import Api, Contract
from edge.clients import call_options, clients
from edge.problems import HttpProblemError
from edge.routes.models import PageQuery, Strict, Uuid

api = Api(upstreams=["notify_svc"])

Kind = Literal[
    "order_created", "order_paid", "order_cancelled", "order_shipped", "order_delivered", "comment_reply",
    "comment_liked", "announcement",
]  # fmt: skip
DeliveryStatus = Literal["pending", "succeeded", "retrying", "failed"]

KIND_PREFIX = "NOTIFICATION_KIND_"
STATUS_PREFIX = "WEBHOOK_DELIVERY_STATUS_"
# Tells an EventSource how long to wait before reconnecting (it sends Last-Event-ID then).
SSE_RETRY_MS = 3000


def kind_of(value: int) -> str:
    name = notify_pb2.NotificationKind.Name(value)  # type: ignore[arg-type]
    return name.removeprefix(KIND_PREFIX).lower()


def kind_to_proto(kind: Kind) -> notify_pb2.NotificationKind.ValueType:
    return notify_pb2.NotificationKind.Value(KIND_PREFIX + kind.upper())


def status_of(value: int) -> DeliveryStatus | None:
    if value == notify_pb2.WEBHOOK_DELIVERY_STATUS_UNSPECIFIED:
        return None
    name = notify_pb2.WebhookDeliveryStatus.Name(value).removeprefix(STATUS_PREFIX).lower()  # type: ignore[arg-type]
    return name  # type: ignore[return-value]


# --- shapes -----------------------------------------------------------------------------------------


class Notification(BaseModel):
    id: Uuid
    kind: Kind
    title: str
    body: str
    data: dict[str, str] = Field(
        description="ids for deep links: order_id; comment_id, product_id, parent_id; announcement_id; like_count"
    )
    read: bool
    created_at: datetime | None
    source_event_id: Uuid = Field(description="the event this notification came from")
    source_committed_at: datetime | None = Field(description="when that event was committed by its producer")
    folded_count: int = Field(description="events folded into this notification (likes); 1 otherwise")

    @classmethod
    def of(cls, message: notify_pb2.Notification) -> Notification:
        return cls(
            id=message.id,
            kind=kind_of(message.kind),
            title=message.title,
            body=message.body,
            data=dict(message.data),
            read=message.read,
            created_at=optional_datetime_of(message.created_at),
            source_event_id=message.source_event_id,
            source_committed_at=optional_datetime_of(message.source_committed_at),
            folded_count=message.folded_count,
        )


class NotificationPage(BaseModel):
    items: list[Notification]
    next_page_token: str
    unread_count: int


class UnreadCount(BaseModel):
    unread_count: int


class NotificationsQuery(PageQuery):
    unread_only: bool = False


class StreamQuery(BaseModel):
    model_config = ConfigDict(extra="ignore")

    last_event_id: Annotated[
        str, Field(max_length=32, description="resume point for clients that cannot send the Last-Event-ID header")
    ] = ""
    ticket: Annotated[
        str,
        Field(
            max_length=128,
            description="a stream ticket (POST /api/v1/notifications/stream-tickets), instead of the "
            "Authorization header: a browser's EventSource cannot send one",
        ),
    ] = ""


class StreamTicket(BaseModel):
    ticket: str = Field(description="single-use: opens the stream once, as `?ticket=`")
    expires_at: datetime | None
    stream_url: str = Field(description="the stream's URL with this ticket, for `new EventSource(stream_url)`")


class Webhook(BaseModel):
    id: Uuid
    url: str
    description: str
    kinds: list[Kind] = Field(description="only these kinds are delivered; empty for all")
    created_at: datetime | None
    last_delivery_status: DeliveryStatus | None
    last_delivery_at: datetime | None
    last_success_at: datetime | None
    last_failure_at: datetime | None
    last_error: str
    failed_delivery_count: int

    @classmethod
    def of(cls, message: notify_pb2.Webhook) -> Webhook:
        return cls(
            id=message.id,
            url=message.url,
            description=message.description,
            kinds=[kind_of(kind) for kind in message.kinds],
            created_at=optional_datetime_of(message.created_at),
            last_delivery_status=status_of(message.last_delivery_status),
            last_delivery_at=optional_datetime_of(message.last_delivery_at),
            last_success_at=optional_datetime_of(message.last_success_at),
            last_failure_at=optional_datetime_of(message.last_failure_at),
            last_error=message.last_error,
            failed_delivery_count=message.failed_delivery_count,
        )


class WebhookBody(Strict):
    url: Annotated[str, Field(min_length=1, max_length=2048, description="https (http in development)")]
    description: Annotated[str, Field(max_length=500)] = ""
    kinds: Annotated[list[Kind], Field(max_length=8)] = Field(default_factory=list)


class RegisteredWebhook(BaseModel):
    webhook: Webhook
    signing_secret: str = Field(
        description="HMAC-SHA256 key: X-Shop-Signature is sha256=hex(HMAC(secret, '<X-Shop-Timestamp>.<body>')). "
        "Shown only once."
    )


class WebhookList(BaseModel):
    items: list[Webhook]


class Delivery(BaseModel):
    id: Uuid
    webhook_id: Uuid
    notification_id: Uuid
    status: DeliveryStatus | None
    attempt_count: int
    last_http_status: int = Field(description="0 when there was no response (network error, timeout)")
    last_error: str
    next_attempt_at: datetime | None
    created_at: datetime | None
    updated_at: datetime | None

    @classmethod
    def of(cls, message: notify_pb2.WebhookDelivery) -> Delivery:
        return cls(
            id=message.id,
            webhook_id=message.webhook_id,
            notification_id=message.notification_id,
            status=status_of(message.status),
            attempt_count=message.attempt_count,
            last_http_status=message.last_http_status,
            last_error=message.last_error,
            next_attempt_at=optional_datetime_of(message.next_attempt_at),
            created_at=optional_datetime_of(message.created_at),
            updated_at=optional_datetime_of(message.updated_at),
        )


class DeliveryPage(BaseModel):
    items: list[Delivery]
    next_page_token: str


class DeliveriesQuery(PageQuery):
    status: DeliveryStatus | None = None


class AnnouncementBody(Strict):
    title: Annotated[str, Field(min_length=1, max_length=200)]
    body: Annotated[str, Field(min_length=1, max_length=5000)]
    data: Annotated[dict[str, str], Field(max_length=20)] = Field(default_factory=dict)


class Announcement(BaseModel):
    announcement_id: Uuid
    published_at: datetime | None


# --- /api/v1/notifications ---------------------------------------------------------------------------


@api.operation("GET", "/api/v1/notifications", Contract(
    summary="The caller's notifications, newest first", tag="notifications",
    query=NotificationsQuery, response=NotificationPage, auth=True,
))  # fmt: skip
async def list_notifications(request: Request, query: NotificationsQuery) -> NotificationPage:
    """The feed holds the caller's own notifications and every platform announcement,
    each with its own read state; it is capped in length (the oldest fall off)."""
    reply = await clients(request).notify.ListNotifications(
        notify_pb2.ListNotificationsRequest(page=query.page(), unread_only=query.unread_only),
        **call_options(request),
    )
    return NotificationPage(
        items=[Notification.of(n) for n in reply.notifications],
        next_page_token=reply.page.next_page_token,
        unread_count=reply.unread_count,
    )


@api.operation("GET", "/api/v1/notifications/unread-count", Contract(
    summary="How many notifications are unread", tag="notifications",
    response=UnreadCount, auth=True,
))  # fmt: skip
async def unread_count(request: Request) -> UnreadCount:
    reply = await clients(request).notify.UnreadCount(notify_pb2.UnreadCountRequest(), **call_options(request))
    return UnreadCount(unread_count=reply.unread_count)


@api.operation("POST", "/api/v1/notifications/read-all", Contract(
    summary="Mark every notification read", tag="notifications",
    response=UnreadCount, auth=True,
))  # fmt: skip
async def mark_all_read(request: Request) -> UnreadCount:
    reply = await clients(request).notify.MarkAllRead(notify_pb2.MarkAllReadRequest(), **call_options(request))
    return UnreadCount(unread_count=reply.unread_count)


@api.operation("POST", "/api/v1/notifications/{notification_id}/read", Contract(
    summary="Mark one notification read",
    tag="notifications", response=UnreadCount, auth=True, errors=(404,),
))  # fmt: skip
async def mark_read(request: Request) -> UnreadCount:
    """Idempotent; answers the unread count after the change."""
    reply = await clients(request).notify.MarkRead(
        notify_pb2.MarkReadRequest(notification_id=request.path_params["notification_id"]), **call_options(request)
    )
    return UnreadCount(unread_count=reply.unread_count)


@api.operation("POST", "/api/v1/notifications/stream-tickets", Contract(
    summary="A single-use ticket that opens the live stream",
    tag="notifications", response=StreamTicket, status=201, auth=True,
))  # fmt: skip
async def create_stream_ticket(request: Request) -> StreamTicket:
    """For a browser: `new EventSource(stream_url)` opens the caller's live stream
    without an Authorization header. The ticket is valid once, for about a minute;
    an EventSource reconnecting after it was used needs a new one."""
    reply = await clients(request).notify.CreateStreamTicket(
        notify_pb2.CreateStreamTicketRequest(), **call_options(request)
    )
    return StreamTicket(
        ticket=reply.ticket,
        expires_at=optional_datetime_of(reply.expire_time),
        stream_url=f"/api/v1/notifications/stream?{urlencode({'ticket': reply.ticket})}",
    )


@api.operation("GET", "/api/v1/notifications/stream", Contract(
    summary="Live notifications as server-sent events", tag="notifications",
    query=StreamQuery, response=Notification, response_type="text/event-stream", errors=(401,),
    security=[{"bearerAuth": []}, {"streamTicket": []}],
    headers=("Last-Event-ID",), limits=("streams",),
))  # fmt: skip
async def stream_notifications(request: Request, query: StreamQuery) -> Response:
    """A `text/event-stream`: each notification is an event `notification` with
    `id:` its stream position and `data:` the Notification as JSON; a `:` comment
    line is sent as a heartbeat every few seconds. Reconnecting with the
    `Last-Event-ID` header (browsers' EventSource does it by itself) first replays
    what arrived since that event, then continues live: nothing lost, nothing twice.
    Signed in by `Authorization: Bearer`, or by `?ticket=` (single-use, from
    `POST /api/v1/notifications/stream-tickets`) from a browser's EventSource.
    A user holds a few streams open at once (policy `streams`): one more gets 429
    with `Retry-After`, `RateLimit-Policy` and `RateLimit`."""
    if not query.ticket and "authorization" not in request.headers:
        raise HttpProblemError(
            401,
            "sign in first: send 'Authorization: Bearer <access token>', or '?ticket=' from "
            "POST /api/v1/notifications/stream-tickets",
        )
    last_event_id = request.headers.get("last-event-id", "").strip() or query.last_event_id
    if len(last_event_id) > 32:
        raise HttpProblemError(400, "Last-Event-ID is not an event id of this stream")
    options = call_options(request)
    call = clients(request).notify.Subscribe(
        notify_pb2.SubscribeRequest(last_event_id=last_event_id, stream_ticket=query.ticket),
        metadata=options["metadata"],
    )
    try:
        # The service answers at once with a heartbeat once subscribed, or with
        # its error (401, 400): only then do we commit to a 200 stream.
        first = await asyncio.wait_for(call.read(), options["timeout"])
    except BaseException:
        call.cancel()
        raise
    if first is grpc.aio.EOF:
        raise HttpProblemError(503, "the notification stream ended before it started; try again shortly")
    return StreamingResponse(
        _events(call, first),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


def _sse(message: notify_pb2.SubscribeResponse) -> str:
    if message.WhichOneof("payload") != "notification":
        return ": heartbeat\n\n"
    data = json.dumps(Notification.of(message.notification).model_dump(mode="json"), separators=(",", ":"))
    return f"id: {message.event_id}\nevent: notification\ndata: {data}\n\n"


async def _events(call: Any, first: Any) -> AsyncIterator[str]:
    try:
        yield f"retry: {SSE_RETRY_MS}\n\n"
        message = first
        while message is not grpc.aio.EOF:
            yield _sse(message)
            message = await call.read()
    except grpc.aio.AioRpcError:
        # notify_svc went away mid-stream: end the response; the client reconnects
        # with its Last-Event-ID and misses nothing.
        return
    finally:
        call.cancel()


# --- /api/v1/webhooks -----------------------------------------------------------------------------------


@api.operation("GET", "/api/v1/webhooks", Contract(
    summary="The caller's webhooks and their delivery health", tag="webhooks",
    response=WebhookList, auth=True,
))  # fmt: skip
async def list_webhooks(request: Request) -> WebhookList:
    reply = await clients(request).notify.ListWebhooks(notify_pb2.ListWebhooksRequest(), **call_options(request))
    return WebhookList(items=[Webhook.of(hook) for hook in reply.webhooks])


@api.operation("POST", "/api/v1/webhooks", Contract(
    summary="Register a URL that receives the caller's notifications", tag="webhooks",
    body=WebhookBody, response=RegisteredWebhook, status=201, auth=True, errors=(429,), limits=("webhooks",),
))  # fmt: skip
async def register_webhook(request: Request, body: WebhookBody) -> RegisteredWebhook:
    """Each notification is POSTed as JSON with `X-Shop-Timestamp` and
    `X-Shop-Signature: sha256=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>`,
    retried with exponential backoff, and recorded as failed after the last
    attempt. Outside development, addresses that are private, loopback or
    link-local are refused (400, `webhook_address_forbidden`). A user has at most a
    number of webhooks (429 `limit_reached`) and registers at most so many per window
    (429 `rate_limited`, policy `webhooks`, with `RateLimit-Policy` and `RateLimit`)."""
    reply = await clients(request).notify.RegisterWebhook(
        notify_pb2.RegisterWebhookRequest(
            url=body.url, description=body.description, kinds=[kind_to_proto(kind) for kind in body.kinds]
        ),
        **call_options(request),
    )
    return RegisteredWebhook(webhook=Webhook.of(reply.webhook), signing_secret=reply.signing_secret)


@api.operation("DELETE", "/api/v1/webhooks/{webhook_id}", Contract(
    summary="Delete a webhook; pending retries are dropped",
    tag="webhooks", status=204, auth=True, errors=(404,),
))  # fmt: skip
async def delete_webhook(request: Request) -> None:
    await clients(request).notify.DeleteWebhook(
        notify_pb2.DeleteWebhookRequest(webhook_id=request.path_params["webhook_id"]), **call_options(request)
    )


@api.operation("GET", "/api/v1/webhooks/{webhook_id}/deliveries", Contract(
    summary="A webhook's deliveries, newest first",
    tag="webhooks", query=DeliveriesQuery, response=DeliveryPage, auth=True, errors=(404,),
))  # fmt: skip
async def list_deliveries(request: Request, query: DeliveriesQuery) -> DeliveryPage:
    status = (
        notify_pb2.WebhookDeliveryStatus.Value(STATUS_PREFIX + query.status.upper())
        if query.status
        else notify_pb2.WEBHOOK_DELIVERY_STATUS_UNSPECIFIED
    )
    reply = await clients(request).notify.ListWebhookDeliveries(
        notify_pb2.ListWebhookDeliveriesRequest(
            webhook_id=request.path_params["webhook_id"], page=query.page(), status=status
        ),
        **call_options(request),
    )
    return DeliveryPage(items=[Delivery.of(d) for d in reply.deliveries], next_page_token=reply.page.next_page_token)


# --- /api/v1/admin/announcements -----------------------------------------------------------------------


@api.operation("POST", "/api/v1/admin/announcements", Contract(
    summary="Publish an announcement to every user (admin)", tag="admin",
    body=AnnouncementBody, response=Announcement, status=201, auth=True, errors=(403, 503),
))  # fmt: skip
async def publish_announcement(request: Request, body: AnnouncementBody) -> Announcement:
    """Published on Kafka (`shop.platform.v1`); it reaches every feed and open
    stream within moments."""
    reply = await clients(request).notify.PublishAnnouncement(
        notify_pb2.PublishAnnouncementRequest(title=body.title, body=body.body, data=body.data),
        **call_options(request),
    )
    return Announcement(announcement_id=reply.announcement_id, published_at=optional_datetime_of(reply.published_at))
