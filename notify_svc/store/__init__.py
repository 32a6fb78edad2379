"""Everything notify_svc keeps, in Redis: persistence only, by concept.

* :mod:`.keys`: the key layout (the one place that names keys);
* :mod:`.notifications`: the feeds, the announcements and the read marks;
* :mod:`.streams`: stream tickets and the live subscription;
* :mod:`.webhooks`: registered webhooks;
* :mod:`.deliveries`: the fan-out stream, deliveries and their schedule.

Redis spans no transaction across calls: each method is atomic on its own (a
Lua script or a MULTI pipeline), and the use cases compose them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import redis.asyncio as aioredis
import redis.exceptions

from common.errors import UnavailableError
from notify_svc.store.deliveries import Deliveries
from notify_svc.store.limits import Limits
from notify_svc.store.notifications import Notifications
from notify_svc.store.streams import Streams
from notify_svc.store.webhooks import Webhooks

# Errors of a Redis that cannot serve now (down, out of memory, a read-only
# replica after a failover): UNAVAILABLE for callers, a retry for the consumer.
UNAVAILABLE_ERRORS: tuple[type[Exception], ...] = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    redis.exceptions.OutOfMemoryError,
    redis.exceptions.ReadOnlyError,
)


class Store:
    def __init__(self, redis: aioredis.Redis, limits: Limits | None = None) -> None:
        # Untyped on purpose: redis-py's annotations cannot tell bytes replies
        # (decode_responses=False, as here) from str ones.
        self.redis: Any = redis
        self.limits = limits or Limits()
        self.notifications = Notifications(self.redis, self.limits)
        self.streams = Streams(self.redis)
        self.webhooks = Webhooks(self.redis, self.limits)
        self.deliveries = Deliveries(self.redis, self.limits)

    @contextlib.contextmanager
    def available(self) -> Iterator[None]:
        """A scope in which a Redis that cannot serve now is UNAVAILABLE (retry
        shortly), not INTERNAL: the use cases run their store calls in it."""
        try:
            yield
        except UNAVAILABLE_ERRORS as exc:
            raise UnavailableError(
                "notifications are unavailable right now; try again shortly",
                reason="DEPENDENCY_UNAVAILABLE",
                metadata={"dependency": "redis"},
            ) from exc

    async def ping(self) -> None:
        await self.redis.ping()

    async def close(self) -> None:
        await self.redis.aclose()
