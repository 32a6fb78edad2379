"""The live side: one-use stream tickets, the newest position, and the pub/sub
subscription a stream reads live notifications from."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis
import redis.exceptions

from notify_svc.domain import Notification
from notify_svc.store.keys import LIVE_ANNOUNCEMENTS, SEQ, live_channel, stream_ticket_key


class Streams:
    def __init__(self, redis: Any) -> None:
        self.redis = redis

    async def issue_ticket(self, user: str, ticket: str, ttl_seconds: int) -> None:
        await self.redis.set(stream_ticket_key(ticket), user.encode(), ex=ttl_seconds, nx=True)

    async def redeem_ticket(self, ticket: str) -> str | None:
        """The ticket's user, once: GETDEL makes a second redemption find nothing."""
        user = await self.redis.getdel(stream_ticket_key(ticket))
        return user.decode() if user else None

    async def position(self) -> int:
        """The newest position handed out so far."""
        return int(await self.redis.get(SEQ) or 0)

    @contextlib.asynccontextmanager
    async def live(self, user: str) -> AsyncIterator[LiveFeed]:
        """The user's live feed, subscribed (confirmed by Redis) on entry."""
        feed = LiveFeed(self.redis, [live_channel(user), LIVE_ANNOUNCEMENTS])
        try:
            await feed.open()
            yield feed
        finally:
            await feed.close()


@dataclass
class LiveItem:
    position: int
    notification: Notification


@dataclass
class LiveFeed:
    """A Redis pub/sub subscription to one user's channel and the announcements'."""

    redis: aioredis.Redis
    channels: list[str]
    _pubsub: Any = None
    _early: list[LiveItem] = field(default_factory=list)

    async def open(self) -> None:
        self._pubsub = self.redis.pubsub()
        await self._pubsub.subscribe(*self.channels)
        # SUBSCRIBE is confirmed per channel; anything published before the
        # last confirmation is kept, so reading the backlog after open() can
        # only overlap the live messages (deduplicated by position), never miss one.
        confirmed = 0
        deadline = time.monotonic() + 10
        while confirmed < len(self.channels):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise redis.exceptions.TimeoutError("Redis did not confirm the subscription")
            message = await self._pubsub.get_message(ignore_subscribe_messages=False, timeout=remaining)
            if message is None:
                continue
            if message["type"] == "subscribe":
                confirmed += 1
            elif message["type"] == "message":
                self._early.append(_live_item(message["data"]))

    async def next(self, timeout: float) -> LiveItem | None:
        """The next live item, or None after ``timeout`` seconds without one."""
        if self._early:
            return self._early.pop(0)
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            message = await self._pubsub.get_message(ignore_subscribe_messages=True, timeout=remaining)
            if message is not None and message["type"] == "message":
                return _live_item(message["data"])

    async def close(self) -> None:
        if self._pubsub is not None:
            with contextlib.suppress(Exception):
                await self._pubsub.aclose()


def _live_item(data: bytes) -> LiveItem:
    position, _, document = data.partition(b" ")
    return LiveItem(int(position), Notification.from_json(document))
