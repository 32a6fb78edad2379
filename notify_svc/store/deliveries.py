"""Webhook deliveries as stored: the fan-out stream of stored notifications, one
hash per delivery with its history per webhook, and the schedule of due attempts."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import redis.exceptions

from notify_svc.domain.webhooks import Attempt, Delivery
from notify_svc.store.keys import (
    DELIVERY_SEQ,
    DUE,
    FANOUT,
    FANOUT_GROUP,
    deliveries_key,
    delivery_key,
    webhook_key,
)
from notify_svc.store.limits import Limits, now_us

# KEYS: delivery, webhook deliveries, due, delivery seq, webhook
# ARGV: id, webhook id, notification id, body, now us, due ms, history cap
CREATE_DELIVERY = """
if redis.call('EXISTS', KEYS[1]) == 1 or redis.call('EXISTS', KEYS[5]) == 0 then return 0 end
local seq = redis.call('INCR', KEYS[4])
redis.call('HSET', KEYS[1], 'id', ARGV[1], 'webhook_id', ARGV[2], 'notification_id', ARGV[3], 'body', ARGV[4],
           'status', 'PENDING', 'attempts', 0, 'http_status', 0, 'error', '', 'next_at_us', ARGV[5],
           'created_at_us', ARGV[5], 'updated_at_us', ARGV[5], 'position', seq)
redis.call('ZADD', KEYS[2], seq, ARGV[1])
redis.call('ZADD', KEYS[3], ARGV[6], ARGV[1])
local over = redis.call('ZCARD', KEYS[2]) - tonumber(ARGV[7])
if over > 0 then redis.call('ZREMRANGEBYRANK', KEYS[2], 0, over - 1) end
return 1
"""

# KEYS: due; ARGV: now ms, lease ms, limit.  Claims due deliveries by pushing
# their due time past the lease (a crashed worker's claims come back then).
CLAIM_DUE = """
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
for _, id in ipairs(ids) do redis.call('ZADD', KEYS[1], tonumber(ARGV[1]) + tonumber(ARGV[2]), id) end
return ids
"""

# KEYS: delivery, webhook, due
# ARGV: id, status, attempts, http status, error, now us, next attempt us (retry), due ms (retry), retention s
RECORD_ATTEMPT = """
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('ZREM', KEYS[3], ARGV[1])
  return 0
end
redis.call('HSET', KEYS[1], 'status', ARGV[2], 'attempts', ARGV[3], 'http_status', ARGV[4], 'error', ARGV[5],
           'updated_at_us', ARGV[6], 'next_at_us', ARGV[7])
if ARGV[2] == 'RETRYING' then
  redis.call('ZADD', KEYS[3], ARGV[8], ARGV[1])
else
  redis.call('ZREM', KEYS[3], ARGV[1])
  redis.call('EXPIRE', KEYS[1], ARGV[9])
end
if redis.call('EXISTS', KEYS[2]) == 1 then
  redis.call('HSET', KEYS[2], 'last_status', ARGV[2], 'last_delivery_at_us', ARGV[6])
  if ARGV[2] == 'SUCCEEDED' then
    redis.call('HSET', KEYS[2], 'last_success_at_us', ARGV[6])
  else
    redis.call('HSET', KEYS[2], 'last_failure_at_us', ARGV[6], 'last_error', ARGV[5])
  end
  if ARGV[2] == 'FAILED' then redis.call('HINCRBY', KEYS[2], 'failed_count', 1) end
end
return 1
"""


@dataclass(frozen=True)
class FanoutEntry:
    entry_id: bytes
    notification_id: str
    user_id: str  # "" for an announcement
    position: int
    kind: str


class Deliveries:
    def __init__(self, redis: Any, limits: Limits) -> None:
        self.redis = redis
        self.limits = limits
        self._create_delivery = redis.register_script(CREATE_DELIVERY)
        self._claim_due = redis.register_script(CLAIM_DUE)
        self._record_attempt = redis.register_script(RECORD_ATTEMPT)

    async def page(
        self, webhook_id: str, *, before: int | None, limit: int, status: str | None
    ) -> tuple[list[Delivery], int | None]:
        """A webhook's deliveries, newest first, below position ``before``."""
        found: list[Delivery] = []
        top = f"({before}" if before else "+inf"
        while len(found) <= limit:
            batch = await self.redis.zrevrangebyscore(
                deliveries_key(webhook_id), top, "-inf", start=0, num=max(limit + 1, 50), withscores=True
            )
            if not batch:
                break
            async with self.redis.pipeline(transaction=False) as pipe:
                for member, _ in batch:
                    pipe.hgetall(delivery_key(member.decode()))
                raws = await pipe.execute()
            for raw in raws:
                if raw:
                    delivery = _delivery(raw)
                    if status is None or delivery.status == status:
                        found.append(delivery)
            top = f"({int(batch[-1][1])}"
        more = len(found) > limit
        found = found[:limit]
        return found, (found[-1].position if more and found else None)

    # -- the webhook queues -----------------------------------------------------------------------

    async def ensure_fanout_group(self) -> None:
        with contextlib.suppress(redis.exceptions.ResponseError):  # BUSYGROUP: it exists
            await self.redis.xgroup_create(FANOUT, FANOUT_GROUP, id="0", mkstream=True)

    async def read_fanout(self, consumer: str, *, count: int, block_ms: int) -> list[FanoutEntry]:
        reply = await self.redis.xreadgroup(FANOUT_GROUP, consumer, {FANOUT: ">"}, count=count, block=block_ms)
        return [_fanout_entry(entry_id, fields) for _, entries in reply or [] for entry_id, fields in entries]

    async def reclaim_fanout(self, consumer: str, *, min_idle_ms: int, count: int) -> list[FanoutEntry]:
        """Entries another (crashed) worker read but never acknowledged."""
        reply = await self.redis.xautoclaim(FANOUT, FANOUT_GROUP, consumer, min_idle_ms, "0-0", count=count)
        return [_fanout_entry(entry_id, fields) for entry_id, fields in reply[1] if fields]

    async def ack_fanout(self, entry_ids: Sequence[bytes]) -> None:
        if entry_ids:
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.xack(FANOUT, FANOUT_GROUP, *entry_ids)
                pipe.xdel(FANOUT, *entry_ids)
                await pipe.execute()

    async def create(self, delivery_id: str, webhook_id: str, notification_id: str, body: bytes) -> bool:
        now = now_us()
        keys = [delivery_key(delivery_id), deliveries_key(webhook_id), DUE, DELIVERY_SEQ, webhook_key(webhook_id)]
        args: list[str | bytes | int] = [
            delivery_id,
            webhook_id,
            notification_id,
            body,
            now,
            now // 1000,
            self.limits.webhook_history,
        ]
        return bool(await self._create_delivery(keys=keys, args=args))

    async def claim_due(self, *, lease: float, limit: int) -> list[str]:
        ids = await self._claim_due(keys=[DUE], args=[int(time.time() * 1000), int(lease * 1000), limit])
        return [ident.decode() for ident in ids]

    async def next_due_in(self) -> float | None:
        """Seconds until the earliest scheduled attempt (None when nothing is queued)."""
        first = await self.redis.zrange(DUE, 0, 0, withscores=True)
        if not first:
            return None
        return max(0.0, float(first[0][1]) / 1000 - time.time())

    async def get(self, delivery_id: str) -> Delivery | None:
        raw = await self.redis.hgetall(delivery_key(delivery_id))
        return _delivery(raw) if raw else None

    async def unschedule(self, delivery_id: str) -> None:
        await self.redis.zrem(DUE, delivery_id)

    async def drop(self, delivery_id: str) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.zrem(DUE, delivery_id)
            pipe.delete(delivery_key(delivery_id))
            await pipe.execute()

    async def record_attempt(self, delivery: Delivery, attempt: Attempt) -> None:
        keys = [delivery_key(delivery.id), webhook_key(delivery.webhook_id), DUE]
        args: list[str | int] = [
            delivery.id,
            attempt.status,
            attempt.attempts,
            attempt.http_status,
            attempt.error,
            now_us(),
            attempt.next_attempt_us,
            attempt.next_attempt_us // 1000,
            int(self.limits.delivery_retention),
        ]
        await self._record_attempt(keys=keys, args=args)


def _fanout_entry(entry_id: bytes, fields: dict[bytes, bytes]) -> FanoutEntry:
    return FanoutEntry(
        entry_id=entry_id,
        notification_id=fields.get(b"id", b"").decode(),
        user_id=fields.get(b"user", b"").decode(),
        position=int(fields.get(b"seq", b"0")),
        kind=fields.get(b"kind", b"").decode(),
    )


def _delivery(raw: dict[bytes, bytes]) -> Delivery:
    f = {key.decode(): value for key, value in raw.items()}

    def text(name: str) -> str:
        return f.get(name, b"").decode()

    return Delivery(
        id=text("id"),
        webhook_id=text("webhook_id"),
        notification_id=text("notification_id"),
        body=f.get("body", b""),
        status=text("status"),
        attempts=int(text("attempts") or 0),
        http_status=int(text("http_status") or 0),
        error=text("error"),
        next_at_us=int(text("next_at_us") or 0),
        created_at_us=int(text("created_at_us") or 0),
        updated_at_us=int(text("updated_at_us") or 0),
        position=int(text("position") or 0),
    )
