"""The use cases of the feed: listing, read marks, unread counts, the live
stream (and its tickets), announcements, and storing what events ask for."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass

from common.errors import NotFoundError, UnauthenticatedError
from common.paging import page_size
from common.ratelimit import Leases
from notify_svc.domain import FeedItem, Notification, drafts, feed
from notify_svc.events import AnnouncementPublisher
from notify_svc.store import Store
from notify_svc.store.notifications import StoreOutcome
from notify_svc.webhook_delivery import DELIVERED

MAX_TICKET_LENGTH = 128
FOLD_ATTEMPTS = 20


@dataclass
class StreamPolicy:
    heartbeat: float = 15.0
    # How long a stream ticket (CreateStreamTicket) may wait for its one use.
    ticket_seconds: int = 60


@dataclass(frozen=True)
class FeedPage:
    items: list[FeedItem]
    next_page_token: str
    unread_count: int


@dataclass(frozen=True)
class StreamRequest:
    """Where a live stream resumes (the SSE Last-Event-ID), and whose it is: a
    one-use ticket, or else the caller (asked only when there is no ticket)."""

    last_event_id: str
    ticket: str
    caller: Callable[[], str]


class FoldContentionError(RuntimeError):
    """The fold of a comment's likes kept changing under us (the consumer retries)."""


class Notifications:
    def __init__(
        self,
        store: Store,
        publisher: AnnouncementPublisher,
        *,
        policy: StreamPolicy | None = None,
        stopping: asyncio.Event | None = None,
        streams: Leases | None = None,
    ) -> None:
        self.store = store
        self.publisher = publisher
        self.policy = policy or StreamPolicy()
        self.stopping = stopping or asyncio.Event()
        # Live streams held at once per user (leases).
        self.streams = streams

    # -- the feed ---------------------------------------------------------------------------------

    async def page(self, user: str, *, size: int, token: str, unread_only: bool) -> FeedPage:
        limit = page_size(size)
        scope = feed.feed_scope(unread_only=unread_only)
        before = feed.page_position(token, scope)
        with self.store.available():
            items, next_before = await self.store.notifications.page(
                user, before=before, limit=limit, unread_only=unread_only
            )
            unread = await self.store.notifications.unread_count(user)
        return FeedPage(items, feed.page_token(next_before, scope), unread)

    async def mark_read(self, user: str, notification_id: str) -> int:
        """Mark one notification read; the unread count after."""
        notification_id = feed.check_notification_id(notification_id)
        with self.store.available():
            if not await self.store.notifications.mark_read(user, notification_id):
                raise NotFoundError("no such notification in your feed")
            return await self.store.notifications.unread_count(user)

    async def mark_all_read(self, user: str) -> int:
        with self.store.available():
            await self.store.notifications.mark_all_read(user)
        return 0

    async def unread_count(self, user: str) -> int:
        with self.store.available():
            return await self.store.notifications.unread_count(user)

    # -- the live stream --------------------------------------------------------------------------

    async def create_stream_ticket(self, user: str) -> tuple[str, int]:
        """A one-use ticket that opens ``user``'s stream, and when it expires (microseconds)."""
        ticket = secrets.token_urlsafe(32)
        with self.store.available():
            await self.store.streams.issue_ticket(user, ticket, self.policy.ticket_seconds)
        return ticket, (int(time.time()) + self.policy.ticket_seconds) * 1_000_000

    async def subscribe(self, request: StreamRequest) -> AsyncIterator[FeedItem | None]:
        """Live feed: subscribe first, then replay the backlog after ``last_event_id``,
        then live items; positions only increase, so overlap is dropped by position.
        None is a heartbeat (the first one says the subscription is in place)."""
        after = feed.stream_position(request.last_event_id)
        user = await self._redeem(request.ticket) if request.ticket else request.caller()
        # The client resumes with its last event_id after an UNAVAILABLE: nothing is lost.
        with self.store.available():
            async with self._stream_lease(user) as renew, self.store.streams.live(user) as live:
                # The subscription is in place: tell the client at once (the
                # edge answers its HTTP headers on this first message).
                yield None
                last_sent = time.monotonic()
                current = await self.store.streams.position()
                position = current
                if after is not None and after <= current:  # else nothing to replay (or another store's position)
                    position = after
                    for item in await self.store.notifications.since(user, after):
                        yield _delivered(item)
                        position, last_sent = item.position, time.monotonic()
                while not self.stopping.is_set():
                    await renew()
                    wait = min(1.0, max(0.0, last_sent + self.policy.heartbeat - time.monotonic()))
                    live_item = await live.next(wait)
                    if live_item is not None:
                        if live_item.position <= position:
                            continue  # already replayed from the backlog
                        yield _delivered(FeedItem(live_item.position, live_item.notification, False))
                        position, last_sent = live_item.position, time.monotonic()
                    elif time.monotonic() - last_sent >= self.policy.heartbeat:
                        yield None
                        last_sent = time.monotonic()

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
            with self.store.available():
                user = await self.store.streams.redeem_ticket(ticket)
        if user is None:
            raise UnauthenticatedError("the stream ticket is unknown, expired or already used: ask for a new one")
        return user

    # -- announcements ----------------------------------------------------------------------------

    async def publish_announcement(
        self, admin_id: str, *, title: str, body: str, data: Mapping[str, str]
    ) -> tuple[str, int]:
        """Publish an announcement; its id and when it was published (microseconds)."""
        title, body, checked = feed.validate_announcement(title, body, data)
        return await self.publisher.publish(title=title, body=body, data=checked, published_by=admin_id)

    # -- what events ask for (the consumer) -------------------------------------------------------

    async def record(self, event_id: str, draft: drafts.Draft) -> StoreOutcome:
        """Store the notification an event asks for, once per event."""
        if draft.is_announcement:
            return await self.store.notifications.store_announcement(event_id, draft.notification)
        if draft.fold_on is not None and self.store.limits.like_fold_window > 0:
            return await self._fold(event_id, draft)
        return await self.store.notifications.store_personal(event_id, draft.notification)

    async def _fold(self, event_id: str, draft: drafts.Draft) -> StoreOutcome:
        """Fold a like into the comment's open like notification (or start one)."""
        assert draft.fold_on is not None and draft.liker is not None
        user = draft.recipient
        notes = self.store.notifications
        for _ in range(FOLD_ATTEMPTS):
            current_id, document = await notes.folding(user, draft.fold_on)
            if document is None:
                outcome = await notes.store_personal(
                    event_id, draft.notification, fold_on=draft.fold_on, expected_fold=current_id
                )
            else:
                folded = drafts.fold_like(Notification.from_json(document), draft.notification, draft.liker)
                outcome = await notes.store_personal(
                    event_id, folded, fold_on=draft.fold_on, expected_fold=current_id, expected_document=document
                )
            if not outcome.conflict:
                return outcome
        raise FoldContentionError(f"the likes of {draft.fold_on} kept changing while folding")


def _delivered(item: FeedItem) -> FeedItem:
    DELIVERED.labels("stream").inc()
    return item
