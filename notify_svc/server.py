"""The NotificationService servicer: proto in → convert → one use-case call → convert → proto out."""

from __future__ import annotations

from collections.abc import AsyncIterator

from shop.common.v1 import paging_pb2
from shop.notify.v1 import notify_pb2, notify_pb2_grpc

from common import convert as common_convert
from common.auth import require_admin, require_user
from common.grpc_server import Context
from common.identity import callers
from notify_svc import convert
from notify_svc.notifications import Notifications, StreamRequest
from notify_svc.webhooks import Registration, Webhooks


def _caller() -> str:
    return require_user().user_id


class NotificationService(notify_pb2_grpc.NotificationServiceServicer):
    def __init__(self, notifications: Notifications, webhooks: Webhooks) -> None:
        self.notifications = notifications
        self.webhooks = webhooks

    # -- the feed ---------------------------------------------------------------------------------

    @callers("edge")
    async def ListNotifications(
        self, request: notify_pb2.ListNotificationsRequest, context: Context
    ) -> notify_pb2.ListNotificationsResponse:
        page = await self.notifications.page(
            _caller(), size=request.page.page_size, token=request.page.page_token, unread_only=request.unread_only
        )
        return notify_pb2.ListNotificationsResponse(
            notifications=[convert.feed_item_to_proto(item) for item in page.items],
            page=paging_pb2.PageResponse(next_page_token=page.next_page_token),
            unread_count=page.unread_count,
        )

    @callers("edge")
    async def MarkRead(self, request: notify_pb2.MarkReadRequest, context: Context) -> notify_pb2.MarkReadResponse:
        unread = await self.notifications.mark_read(_caller(), request.notification_id)
        return notify_pb2.MarkReadResponse(unread_count=unread)

    @callers("edge")
    async def MarkAllRead(
        self, request: notify_pb2.MarkAllReadRequest, context: Context
    ) -> notify_pb2.MarkAllReadResponse:
        return notify_pb2.MarkAllReadResponse(unread_count=await self.notifications.mark_all_read(_caller()))

    @callers("edge")
    async def UnreadCount(
        self, request: notify_pb2.UnreadCountRequest, context: Context
    ) -> notify_pb2.UnreadCountResponse:
        return notify_pb2.UnreadCountResponse(unread_count=await self.notifications.unread_count(_caller()))

    @callers("edge")
    async def Subscribe(
        self, request: notify_pb2.SubscribeRequest, context: Context
    ) -> AsyncIterator[notify_pb2.SubscribeResponse]:
        stream = StreamRequest(last_event_id=request.last_event_id, ticket=request.stream_ticket, caller=_caller)
        async for item in self.notifications.subscribe(stream):
            if item is None:
                yield notify_pb2.SubscribeResponse(heartbeat=notify_pb2.Heartbeat(sent_at=common_convert.now()))
            else:
                yield notify_pb2.SubscribeResponse(
                    event_id=str(item.position), notification=convert.feed_item_to_proto(item)
                )

    @callers("edge")
    async def CreateStreamTicket(
        self, request: notify_pb2.CreateStreamTicketRequest, context: Context
    ) -> notify_pb2.CreateStreamTicketResponse:
        ticket, expires_us = await self.notifications.create_stream_ticket(_caller())
        return notify_pb2.CreateStreamTicketResponse(
            ticket=ticket, expire_time=common_convert.timestamp_from_micros(expires_us)
        )

    # -- announcements ----------------------------------------------------------------------------

    @callers("edge")
    async def PublishAnnouncement(
        self, request: notify_pb2.PublishAnnouncementRequest, context: Context
    ) -> notify_pb2.PublishAnnouncementResponse:
        announcement_id, published_us = await self.notifications.publish_announcement(
            require_admin().user_id, title=request.title, body=request.body, data=dict(request.data)
        )
        return notify_pb2.PublishAnnouncementResponse(
            announcement_id=announcement_id, published_at=common_convert.timestamp_from_micros(published_us)
        )

    # -- webhooks ------------------------------------------------------------------------------------

    @callers("edge")
    async def RegisterWebhook(
        self, request: notify_pb2.RegisterWebhookRequest, context: Context
    ) -> notify_pb2.RegisterWebhookResponse:
        registration = Registration(
            url=request.url, description=request.description, kinds=convert.kinds_of_proto(request.kinds)
        )
        hook = await self.webhooks.register(_caller(), registration)
        return notify_pb2.RegisterWebhookResponse(webhook=convert.webhook_to_proto(hook), signing_secret=hook.secret)

    @callers("edge")
    async def ListWebhooks(
        self, request: notify_pb2.ListWebhooksRequest, context: Context
    ) -> notify_pb2.ListWebhooksResponse:
        hooks = await self.webhooks.of_user(_caller())
        return notify_pb2.ListWebhooksResponse(webhooks=[convert.webhook_to_proto(hook) for hook in hooks])

    @callers("edge")
    async def DeleteWebhook(
        self, request: notify_pb2.DeleteWebhookRequest, context: Context
    ) -> notify_pb2.DeleteWebhookResponse:
        await self.webhooks.delete(_caller(), request.webhook_id)
        return notify_pb2.DeleteWebhookResponse()

    @callers("edge")
    async def ListWebhookDeliveries(
        self, request: notify_pb2.ListWebhookDeliveriesRequest, context: Context
    ) -> notify_pb2.ListWebhookDeliveriesResponse:
        page = await self.webhooks.deliveries(
            _caller(),
            request.webhook_id,
            size=request.page.page_size,
            token=request.page.page_token,
            status=convert.status_filter_of_proto(request.status),
        )
        return notify_pb2.ListWebhookDeliveriesResponse(
            deliveries=[convert.delivery_to_proto(delivery) for delivery in page.deliveries],
            page=paging_pb2.PageResponse(next_page_token=page.next_page_token),
        )
