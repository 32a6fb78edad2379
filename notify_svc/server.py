"""The NotificationService servicer: proto in → domain rules and store → proto out."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import secrets
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from shop.common.v1 import paging_pb2
from shop.notify.v1 import notify_pb2, notify_pb2_grpc

from common.auth import require_admin, require_user
from common.errors import (
    FieldViolation,
    InvalidArgumentError,
    NotFoundError,
    ResourceExhaustedError,
    UnauthenticatedError,
    UnavailableError,
)
from common.identity import callers
from common.ratelimit import Leases, Limiter, Window
from notify_svc import convert, domain
from notify_svc.events import AnnouncementPublisher
from notify_svc.store import UNAVAILABLE_ERRORS, Store, Webhook, now_us
from notify_svc.webhooks import DELIVERED, check_target

Context = grpc.aio.ServicerContext[Any, Any]
R = TypeVar("R")

FEED_SCOPE = "feed"
UNREAD_SCOPE = "feed:unread"


def _redis_unavailable() -> UnavailableError:
    return UnavailableError(
        "notifications are unavailable right now; try again shortly",
        reason="DEPENDENCY_UNAVAILABLE",
        metadata={"dependency": "redis"},
    )


def guarded(method: Callable[..., Awaitable[R]]) -> Callable[..., Awaitable[R]]:
    """An unreachable Redis answers UNAVAILABLE, not INTERNAL."""

    @functools.wraps(method)
    async def call(self: Any, request: Any, context: Context) -> R:
        try:
            return await method(self, request, context)
        except UNAVAILABLE_ERRORS as exc:
            raise _redis_unavailable() from exc

    return call


@dataclass
class StreamPolicy:
    heartbeat: float = 15.0
    # How long a stream ticket (CreateStreamTicket) may wait for its one use.
    ticket_seconds: int = 60


MAX_TICKET_LENGTH = 128


def _heartbeat() -> notify_pb2.SubscribeResponse:
    stamp = Timestamp()
    stamp.GetCurrentTime()
    return notify_pb2.SubscribeResponse(heartbeat=notify_pb2.Heartbeat(sent_at=stamp))


def _webhook_id(value: str) -> str:
    try:
        return str(uuid.UUID(value))
    except ValueError as exc:
        raise NotFoundError("no such webhook") from exc


class NotificationService(notify_pb2_grpc.NotificationServiceServicer):
    def __init__(
        self,
        store: Store,
        publisher: AnnouncementPublisher,
        *,
        webhooks: domain.WebhookPolicy,
        policy: StreamPolicy | None = None,
        stopping: asyncio.Event | None = None,
        limiter: Limiter | None = None,
        webhook_window: Window | None = None,
        streams: Leases | None = None,
    ) -> None:
        self.store = store
        # Webhook registrations per user (a window) and live streams held at once (leases).
        self.limiter = limiter
        self.webhook_window = webhook_window
        self.streams = streams
        self.publisher = publisher
        self.webhooks = webhooks
        self.policy = policy or StreamPolicy()
        self.stopping = stopping or asyncio.Event()

    # -- the feed ---------------------------------------------------------------------------------

    @guarded
    @callers("edge")
    async def ListNotifications(
        self, request: notify_pb2.ListNotificationsRequest, context: Context
    ) -> notify_pb2.ListNotificationsResponse:
        user = require_user().user_id
        limit = domain.page_size(request.page.page_size)
        scope = UNREAD_SCOPE if request.unread_only else FEED_SCOPE
        before = domain.decode_cursor(request.page.page_token, scope)
        items, next_before = await self.store.page(user, before=before, limit=limit, unread_only=request.unread_only)
        return notify_pb2.ListNotificationsResponse(
            notifications=[convert.notification_to_proto(item.notification, read=item.read) for item in items],
            page=paging_pb2.PageResponse(
                next_page_token=domain.encode_cursor(next_before, scope) if next_before else ""
            ),
            unread_count=await self.store.unread_count(user),
        )

    @guarded
    @callers("edge")
    async def MarkRead(self, request: notify_pb2.MarkReadRequest, context: Context) -> notify_pb2.MarkReadResponse:
        user = require_user().user_id
        if not request.notification_id or len(request.notification_id) > 64:
            raise InvalidArgumentError(
                "notification_id is required",
                [FieldViolation("notification_id", "send the id of a notification in your feed")],
                reason=domain.VALIDATION_FAILED,
            )
        if not await self.store.mark_read(user, request.notification_id):
            raise NotFoundError("no such notification in your feed")
        return notify_pb2.MarkReadResponse(unread_count=await self.store.unread_count(user))

    @guarded
    @callers("edge")
    async def MarkAllRead(
        self, request: notify_pb2.MarkAllReadRequest, context: Context
    ) -> notify_pb2.MarkAllReadResponse:
        await self.store.mark_all_read(require_user().user_id)
        return notify_pb2.MarkAllReadResponse(unread_count=0)

    @guarded
    @callers("edge")
    async def UnreadCount(
        self, request: notify_pb2.UnreadCountRequest, context: Context
    ) -> notify_pb2.UnreadCountResponse:
        return notify_pb2.UnreadCountResponse(unread_count=await self.store.unread_count(require_user().user_id))

    @callers("edge")
    async def Subscribe(
        self, request: notify_pb2.SubscribeRequest, context: Context
    ) -> AsyncIterator[notify_pb2.SubscribeResponse]:
        """Live feed: subscribe first, then replay the backlog after ``last_event_id``,
        then live items; positions only increase, so overlap is dropped by position."""
        after = domain.stream_position(request.last_event_id)
        user = await self._redeem(request.stream_ticket) if request.stream_ticket else require_user().user_id
        try:
            async with self._stream_lease(user) as renew, self.store.live(user) as live:
                # The subscription is in place: tell the client at once (the
                # edge answers its HTTP headers on this first message).
                yield _heartbeat()
                last_sent = time.monotonic()
                current = await self.store.position()
                if after is None or after > current:  # nothing to replay (or a position from another store)
                    position = current
                else:
                    position = after
                    for item in await self.store.since(user, after):
                        yield self._message(item.position, item.notification, item.read)
                        position, last_sent = item.position, time.monotonic()
                while not self.stopping.is_set():
                    await renew()
                    wait = min(1.0, max(0.0, last_sent + self.policy.heartbeat - time.monotonic()))
                    live_item = await live.next(wait)
                    if live_item is not None:
                        if live_item.position <= position:
                            continue  # already replayed from the backlog
                        yield self._message(live_item.position, live_item.notification, False)
                        position, last_sent = live_item.position, time.monotonic()
                    elif time.monotonic() - last_sent >= self.policy.heartbeat:
                        yield _heartbeat()
                        last_sent = time.monotonic()
        except UNAVAILABLE_ERRORS as exc:
            # The client resumes with its last event_id: nothing is lost.
            raise _redis_unavailable() from exc

    @contextlib.asynccontextmanager
    async def _stream_lease(self, user: str) -> AsyncIterator[Callable[[], Awaitable[None]]]:
        """A place among the user's live streams (refused past ``stream_limit``), and
        a function that renews it when a third of its lease has passed."""
        streams = self.streams
        if streams is None:

            async def nothing() -> None:
                return None

            yield nothing
            return
        lease = await streams.take(
            user, f"you have {streams.limit} live streams open already; close one before opening another"
        )
        renewed = time.monotonic()

        async def renew() -> None:
            nonlocal renewed
            if time.monotonic() - renewed >= streams.ttl / 3:
                await streams.renew(lease)
                renewed = time.monotonic()

        try:
            yield renew
        finally:
            await streams.release(lease)

    async def _redeem(self, ticket: str) -> str:
        user = None
        if len(ticket) <= MAX_TICKET_LENGTH:
            try:
                user = await self.store.redeem_stream_ticket(ticket)
            except UNAVAILABLE_ERRORS as exc:
                raise _redis_unavailable() from exc
        if user is None:
            raise UnauthenticatedError("the stream ticket is unknown, expired or already used: ask for a new one")
        return user

    @guarded
    @callers("edge")
    async def CreateStreamTicket(
        self, request: notify_pb2.CreateStreamTicketRequest, context: Context
    ) -> notify_pb2.CreateStreamTicketResponse:
        user = require_user().user_id
        ticket = secrets.token_urlsafe(32)
        await self.store.issue_stream_ticket(user, ticket, self.policy.ticket_seconds)
        expire = Timestamp()
        expire.FromSeconds(int(time.time()) + self.policy.ticket_seconds)
        return notify_pb2.CreateStreamTicketResponse(ticket=ticket, expire_time=expire)

    @staticmethod
    def _message(position: int, note: domain.Notification, read: bool) -> notify_pb2.SubscribeResponse:
        DELIVERED.labels("stream").inc()
        return notify_pb2.SubscribeResponse(
            event_id=str(position), notification=convert.notification_to_proto(note, read=read)
        )

    # -- announcements ----------------------------------------------------------------------------

    @callers("edge")
    async def PublishAnnouncement(
        self, request: notify_pb2.PublishAnnouncementRequest, context: Context
    ) -> notify_pb2.PublishAnnouncementResponse:
        admin = require_admin()
        title, body, data = domain.validate_announcement(request.title, request.body, dict(request.data))
        announcement_id, published_at = await self.publisher.publish(
            title=title, body=body, data=data, published_by=admin.user_id
        )
        return notify_pb2.PublishAnnouncementResponse(announcement_id=announcement_id, published_at=published_at)

    # -- webhooks ------------------------------------------------------------------------------------

    @guarded
    @callers("edge")
    async def RegisterWebhook(
        self, request: notify_pb2.RegisterWebhookRequest, context: Context
    ) -> notify_pb2.RegisterWebhookResponse:
        user = require_user().user_id
        violations = []
        kinds = []
        for index, value in enumerate(request.kinds):
            kind = convert.kind_of_proto(value)
            if kind is None:
                violations.append(FieldViolation(f"kinds[{index}]", "not a notification kind"))
            elif kind not in kinds:
                kinds.append(kind)
        description = request.description.strip()
        if problem := domain.description_problem(description):
            violations.append(FieldViolation("description", problem))
        if violations:
            raise InvalidArgumentError("the webhook has invalid fields", violations, reason=domain.VALIDATION_FAILED)
        if self.limiter is not None and self.webhook_window is not None:
            await self.limiter.hit(
                self.webhook_window, user, "you registered too many webhooks lately; try again later"
            )
        target = (await check_target(request.url, self.webhooks)).target
        secret = "whsec_" + secrets.token_urlsafe(32)
        hook = Webhook(
            id=str(uuid.uuid4()),
            user_id=user,
            url=target.url,
            description=description,
            kinds=kinds,
            secret=secret,
            created_at_us=now_us(),
        )
        if not await self.store.add_webhook(hook):
            limit = self.store.limits.webhook_limit
            raise ResourceExhaustedError(
                f"you have {limit} webhooks already; delete one first",
                reason="LIMIT_REACHED",
                metadata={"limit": str(limit)},
            )
        return notify_pb2.RegisterWebhookResponse(webhook=convert.webhook_to_proto(hook), signing_secret=secret)

    @guarded
    @callers("edge")
    async def ListWebhooks(
        self, request: notify_pb2.ListWebhooksRequest, context: Context
    ) -> notify_pb2.ListWebhooksResponse:
        hooks = await self.store.webhooks_of(require_user().user_id)
        return notify_pb2.ListWebhooksResponse(webhooks=[convert.webhook_to_proto(hook) for hook in hooks])

    @guarded
    @callers("edge")
    async def DeleteWebhook(
        self, request: notify_pb2.DeleteWebhookRequest, context: Context
    ) -> notify_pb2.DeleteWebhookResponse:
        user = require_user().user_id
        if not await self.store.delete_webhook(user, _webhook_id(request.webhook_id)):
            raise NotFoundError("no such webhook")
        return notify_pb2.DeleteWebhookResponse()

    @guarded
    @callers("edge")
    async def ListWebhookDeliveries(
        self, request: notify_pb2.ListWebhookDeliveriesRequest, context: Context
    ) -> notify_pb2.ListWebhookDeliveriesResponse:
        user = require_user().user_id
        webhook_id = _webhook_id(request.webhook_id)
        hook = await self.store.webhook(webhook_id)
        if hook is None or hook.user_id != user:
            raise NotFoundError("no such webhook")
        limit = domain.page_size(request.page.page_size)
        try:
            status = convert.status_of_proto(request.status)
        except ValueError as exc:
            raise InvalidArgumentError(
                "status is not a delivery status",
                [FieldViolation("status", "use a WebhookDeliveryStatus value")],
                reason=domain.VALIDATION_FAILED,
            ) from exc
        scope = f"deliveries:{webhook_id}:{status or ''}"
        before = domain.decode_cursor(request.page.page_token, scope)
        deliveries, next_before = await self.store.deliveries(webhook_id, before=before, limit=limit, status=status)
        return notify_pb2.ListWebhookDeliveriesResponse(
            deliveries=[convert.delivery_to_proto(delivery) for delivery in deliveries],
            page=paging_pb2.PageResponse(
                next_page_token=domain.encode_cursor(next_before, scope) if next_before else ""
            ),
        )
