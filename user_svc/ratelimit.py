"""Login rate limits in Redis: failed attempts per account, attempts per client address.

Both are sliding windows kept as sorted sets of attempt times (Redis server
time, milliseconds), checked and recorded by one Lua script so concurrent
attempts cannot slip past the limit.  An attempt is counted against the account
when it starts and forgiven when it succeeds, so only failures remain.  An
attempt refused by the limiter is not counted: the limit recovers exactly one
window after the attempts that filled it.
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from dataclasses import dataclass

import redis.asyncio as aioredis
from redis import exceptions as redis_exc

from common.errors import ResourceExhausted, Unavailable

log = logging.getLogger("shop.user.ratelimit")

# KEYS[1] = account attempts, KEYS[2] = address attempts
# ARGV = account limit, account window ms, address limit, address window ms,
#        attempt id, "1" to check the address ("0": account only)
# Returns {0, 0} when allowed (the attempt is recorded), or
# {1 | 2, milliseconds until an attempt is allowed} for account | address.
_ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local function wait(key, limit, window)
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)
  local count = redis.call('ZCARD', key)
  if count < limit then
    return 0
  end
  local oldest = redis.call('ZRANGE', key, count - limit, count - limit, 'WITHSCORES')
  return math.max(1, tonumber(oldest[2]) + window - now)
end
local account_limit, account_window = tonumber(ARGV[1]), tonumber(ARGV[2])
local address_limit, address_window = tonumber(ARGV[3]), tonumber(ARGV[4])
local with_address = ARGV[6] == '1'
local ms = wait(KEYS[1], account_limit, account_window)
if ms > 0 then
  return {1, ms}
end
if with_address then
  ms = wait(KEYS[2], address_limit, address_window)
  if ms > 0 then
    return {2, ms}
  end
end
redis.call('ZADD', KEYS[1], now, ARGV[5])
redis.call('PEXPIRE', KEYS[1], account_window)
if with_address then
  redis.call('ZADD', KEYS[2], now, ARGV[5])
  redis.call('PEXPIRE', KEYS[2], address_window)
end
return {0, 0}
"""


@dataclass(frozen=True)
class Limits:
    account_limit: int
    account_window: float  # seconds
    address_limit: int
    address_window: float


@dataclass(frozen=True)
class Attempt:
    """A login attempt admitted by the limiter; ``succeeded`` forgives it."""

    account_key: str
    attempt_id: str


class LoginLimiter:
    def __init__(self, redis: aioredis.Redis, limits: Limits, *, prefix: str = "shop:user:login") -> None:
        self._redis = redis
        self._limits = limits
        self._prefix = prefix
        self._acquire = redis.register_script(_ACQUIRE)

    def _account_key(self, email: str) -> str:
        # Hashed: no email addresses in Redis.
        return f"{self._prefix}:account:{hashlib.sha256(email.encode()).hexdigest()[:32]}"

    def _address_key(self, address_bucket: str) -> str:
        return f"{self._prefix}:address:{address_bucket}"

    async def begin(self, email: str, address_bucket: str | None) -> Attempt:
        """Admit an attempt (before the password is checked) or raise RESOURCE_EXHAUSTED.

        ``address_bucket`` None checks the account only: for calls that do not
        know the client's own address (behind the edge every peer is the edge).
        """
        limits = self._limits
        attempt = Attempt(self._account_key(email), uuid.uuid4().hex)
        try:
            which, wait_ms = await self._acquire(
                keys=[attempt.account_key, self._address_key(address_bucket or "-")],
                args=[
                    limits.account_limit,
                    round(limits.account_window * 1000),
                    limits.address_limit,
                    round(limits.address_window * 1000),
                    attempt.attempt_id,
                    "1" if address_bucket else "0",
                ],
            )
        except redis_exc.RedisError as exc:
            raise _unavailable(exc) from exc
        if int(which) == 0:
            return attempt
        seconds = int(wait_ms) / 1000
        if int(which) == 1:
            log.info("login limited for an account", extra={"retry_after": seconds})
            message = "too many failed sign-in attempts for this account; try again later"
        else:
            log.info("login limited for an address", extra={"address": address_bucket, "retry_after": seconds})
            message = "too many sign-in attempts from this address; try again later"
        raise ResourceExhausted(message, reason="RATE_LIMITED", retry_after=seconds)

    async def succeeded(self, attempt: Attempt) -> None:
        """The password was right: the attempt does not count as a failure."""
        try:
            await self._redis.zrem(attempt.account_key, attempt.attempt_id)
        except redis_exc.RedisError as exc:  # the login itself succeeded; keep it
            log.warning("could not forgive a successful login attempt", exc_info=exc)


def _unavailable(exc: Exception) -> Unavailable:
    log.warning("rate limiter unavailable: %s", exc.__class__.__name__)
    return Unavailable(
        "sign-in is unavailable right now; try again shortly",
        reason="DEPENDENCY_UNAVAILABLE",
        metadata={"dependency": "redis"},
    )
