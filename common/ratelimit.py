"""Rate limits in Redis, one mechanism for every process: the ``limits`` library's
moving windows on its async Redis storage (redis-py), sharing the process's
Redis connection pool.

A :class:`Window` is a named budget (``limit`` per ``window`` seconds) per key
(a client address, a user, an account and address pair).  A refusal is
RESOURCE_EXHAUSTED with ``RetryInfo`` (when to try again) and ``QuotaFailure``
(the policy), which the edge answers as 429 with ``Retry-After``,
``RateLimit-Policy`` and ``RateLimit``.  Limits that guard sign-in fail closed
(UNAVAILABLE while Redis is down); the others fail open and log.

:class:`Leases` caps what a user holds at once (live streams): each holder keeps
a lease that it renews, so a holder that vanished frees its place when its lease
runs out.

Both stamp entries with the process's clock (as ``limits`` does), so replicas
need synchronised clocks (NTP); a skew of a second shifts a window by that much.
Keys: ``<prefix>:<policy>/<key>/...`` (each process passes its own prefix,
``shop:user``, ``shop:order``, ``shop:comment``, ``shop:notify``); the library runs
Lua scripts (EVALSHA), which a Redis ACL user must be allowed.
"""

from __future__ import annotations

import hashlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from limits import RateLimitItem, RateLimitItemPerSecond
from limits.aio.storage import RedisStorage
from limits.aio.strategies import MovingWindowRateLimiter
from redis import exceptions as redis_exc

from common.errors import Quota, ResourceExhaustedError, UnavailableError

log = logging.getLogger("shop.ratelimit")

RATE_LIMITED = "RATE_LIMITED"
# Retry-After of a refusal because Redis is unreachable (fail closed).
UNAVAILABLE_RETRY = 5.0


@dataclass(frozen=True)
class Window:
    """``limit`` units per ``window`` seconds (a moving window), named ``name``
    (the policy name clients see in ``RateLimit-Policy``)."""

    name: str
    limit: int
    window: int

    def item(self) -> RateLimitItemPerSecond:
        return RateLimitItemPerSecond(self.limit, self.window, namespace=self.name)


def hashed(value: str) -> str:
    """A key part that keeps personal data (emails) out of Redis."""
    return hashlib.sha256(value.encode()).hexdigest()[:32]


def redis_unavailable(what: str) -> UnavailableError:
    return UnavailableError(
        f"{what} is unavailable right now; try again shortly",
        reason="DEPENDENCY_UNAVAILABLE",
        metadata={"dependency": "redis"},
        retry_after=UNAVAILABLE_RETRY,
    )


class Limiter:
    def __init__(self, redis: aioredis.Redis, *, prefix: str) -> None:
        self._redis = redis
        pool: Any = redis.connection_pool  # limits' options are typed as scalars; a pool is documented
        storage = RedisStorage("async+redis://", implementation="redispy", key_prefix=prefix, connection_pool=pool)
        self._strategy = MovingWindowRateLimiter(storage)

    async def hit(self, window: Window, key: str, message: str, *, fail_closed: str | None = None) -> None:
        """Spend one unit of ``key``'s budget, or raise RESOURCE_EXHAUSTED (nothing spent).
        Redis unreachable: UNAVAILABLE naming ``fail_closed`` when given, else allowed."""
        await self._admit(self._strategy.hit, window, key, message, fail_closed)

    async def check(self, window: Window, key: str, message: str, *, fail_closed: str | None = None) -> None:
        """Raise RESOURCE_EXHAUSTED when ``key``'s budget is spent; spends nothing."""
        await self._admit(self._strategy.test, window, key, message, fail_closed)

    async def _admit(
        self,
        ask: Callable[[RateLimitItem, str], Awaitable[bool]],
        window: Window,
        key: str,
        message: str,
        fail_closed: str | None,
    ) -> None:
        try:
            if await ask(window.item(), key):
                return
            refusal = await self._refusal(window, key, message)
        except redis_exc.RedisError as exc:
            self._failed(window, exc, fail_closed)
            return
        raise refusal

    async def spend(self, window: Window, key: str) -> None:
        """Record one unit (a failure already known); the next check sees it."""
        try:
            await self._strategy.hit(window.item(), key)
        except redis_exc.RedisError as exc:
            log.warning("could not record a rate-limit hit", extra={"policy": window.name}, exc_info=exc)

    async def _refusal(self, window: Window, key: str, message: str) -> ResourceExhaustedError:
        stats = await self._strategy.get_window_stats(window.item(), key)
        wait = max(0.001, stats.reset_time - time.time())
        log.info("rate limited", extra={"policy": window.name, "retry_after": round(wait, 3)})
        return ResourceExhaustedError(
            message,
            reason=RATE_LIMITED,
            retry_after=min(wait, float(window.window)),
            quota=Quota(window.name, window.limit, window.window, max(0, stats.remaining)),
        )

    @staticmethod
    def _failed(window: Window, exc: Exception, fail_closed: str | None) -> None:
        if fail_closed is not None:
            log.warning("rate limiter unavailable: %s", exc.__class__.__name__, extra={"policy": window.name})
            raise redis_unavailable(fail_closed) from exc
        log.warning("rate limiter unavailable, allowing: %s", exc.__class__.__name__, extra={"policy": window.name})


@dataclass(frozen=True)
class Lease:
    key: str
    holder: str


class Leases:
    """At most ``limit`` leases per key at once, each alive ``ttl`` seconds unless renewed.

    Taking one adds it and counts in one MULTI (expired leases dropped first); when
    the count is past the limit the new lease is removed again and refused.  Two
    takers racing for the last place may so both be refused, never both admitted.
    """

    def __init__(self, redis: aioredis.Redis, name: str, limit: int, ttl: float, *, prefix: str) -> None:
        self._redis = redis
        self.name = name
        self.limit = limit
        self.ttl = ttl
        self._prefix = prefix

    async def take(self, owner: str, message: str) -> Lease:
        lease = Lease(f"{self._prefix}:{self.name}:{owner}", uuid.uuid4().hex)
        now = time.time()
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.zremrangebyscore(lease.key, "-inf", now)
            pipe.zadd(lease.key, {lease.holder: now + self.ttl})
            pipe.zcard(lease.key)
            pipe.expire(lease.key, int(self.ttl) + 1)
            _, _, held, _ = await pipe.execute()
        if int(held) <= self.limit:
            return lease
        await self._redis.zrem(lease.key, lease.holder)
        raise ResourceExhaustedError(
            message,
            reason=RATE_LIMITED,
            retry_after=self.ttl,
            quota=Quota(self.name, self.limit, 0, 0),
        )

    async def renew(self, lease: Lease) -> None:
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.zadd(lease.key, {lease.holder: time.time() + self.ttl}, xx=True)
            pipe.expire(lease.key, int(self.ttl) + 1)
            await pipe.execute()

    async def release(self, lease: Lease) -> None:
        try:
            await self._redis.zrem(lease.key, lease.holder)
        except redis_exc.RedisError as exc:  # it runs out by itself
            log.warning("could not release a lease", extra={"policy": self.name}, exc_info=exc)
