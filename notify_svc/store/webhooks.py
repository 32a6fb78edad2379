"""Webhooks as stored: one hash each, indexed per user and overall."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from notify_svc.domain.webhooks import Webhook
from notify_svc.store.keys import ALL_WEBHOOKS, DUE, deliveries_key, delivery_key, user_webhooks_key, webhook_key
from notify_svc.store.limits import Limits

# KEYS: webhook, user webhooks, all webhooks; ARGV: limit, id, field, value, field, value...
REGISTER_WEBHOOK = """
if redis.call('SCARD', KEYS[2]) >= tonumber(ARGV[1]) then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 3))
redis.call('SADD', KEYS[2], ARGV[2])
redis.call('SADD', KEYS[3], ARGV[2])
return 1
"""

# KEYS: webhook, user webhooks, all webhooks; ARGV: id, owner
DELETE_WEBHOOK = """
if redis.call('HGET', KEYS[1], 'user_id') ~= ARGV[2] then return 0 end
redis.call('DEL', KEYS[1])
redis.call('SREM', KEYS[2], ARGV[1])
redis.call('SREM', KEYS[3], ARGV[1])
return 1
"""


class Webhooks:
    def __init__(self, redis: Any, limits: Limits) -> None:
        self.redis = redis
        self.limits = limits
        self._register_webhook = redis.register_script(REGISTER_WEBHOOK)
        self._delete_webhook = redis.register_script(DELETE_WEBHOOK)

    async def add(self, webhook: Webhook) -> bool:
        """Register a webhook unless the user has ``webhook_limit`` already."""
        fields = {
            "id": webhook.id,
            "user_id": webhook.user_id,
            "url": webhook.url,
            "description": webhook.description,
            "kinds": ",".join(webhook.kinds),
            "secret": webhook.secret,
            "created_at_us": webhook.created_at_us,
            "failed_count": 0,
        }
        args: list[Any] = [self.limits.webhook_limit, webhook.id]
        for name, value in fields.items():
            args += [name, value]
        keys = [webhook_key(webhook.id), user_webhooks_key(webhook.user_id), ALL_WEBHOOKS]
        return bool(await self._register_webhook(keys=keys, args=args))

    async def get(self, webhook_id: str) -> Webhook | None:
        raw = await self.redis.hgetall(webhook_key(webhook_id))
        return _webhook(raw) if raw else None

    async def of_user(self, user: str) -> list[Webhook]:
        ids = sorted(member.decode() for member in await self.redis.smembers(user_webhooks_key(user)))
        return await self._several(ids)

    async def every(self) -> list[Webhook]:
        ids = sorted(member.decode() for member in await self.redis.smembers(ALL_WEBHOOKS))
        return await self._several(ids)

    async def _several(self, ids: Sequence[str]) -> list[Webhook]:
        if not ids:
            return []
        async with self.redis.pipeline(transaction=False) as pipe:
            for ident in ids:
                pipe.hgetall(webhook_key(ident))
            found = await pipe.execute()
        hooks = [_webhook(raw) for raw in found if raw]
        return sorted(hooks, key=lambda hook: (hook.created_at_us, hook.id))

    async def delete(self, user: str, webhook_id: str) -> bool:
        keys = [webhook_key(webhook_id), user_webhooks_key(user), ALL_WEBHOOKS]
        if not await self._delete_webhook(keys=keys, args=[webhook_id, user]):
            return False
        # Its history and pending retries go too (a worker that meets a delivery
        # of a deleted webhook drops it, so a crash here leaves nothing behind).
        ids = await self.redis.zrange(deliveries_key(webhook_id), 0, -1)
        async with self.redis.pipeline(transaction=False) as pipe:
            for ident in ids:
                pipe.delete(delivery_key(ident.decode()))
            if ids:
                pipe.zrem(DUE, *ids)
            pipe.delete(deliveries_key(webhook_id))
            await pipe.execute()
        return True


def _webhook(raw: dict[bytes, bytes]) -> Webhook:
    f = {key.decode(): value.decode() for key, value in raw.items()}
    return Webhook(
        id=f["id"],
        user_id=f["user_id"],
        url=f["url"],
        description=f.get("description", ""),
        kinds=[kind for kind in f.get("kinds", "").split(",") if kind],
        secret=f["secret"],
        created_at_us=int(f.get("created_at_us", "0")),
        last_status=f.get("last_status", ""),
        last_delivery_at_us=int(f.get("last_delivery_at_us", "0")),
        last_success_at_us=int(f.get("last_success_at_us", "0")),
        last_failure_at_us=int(f.get("last_failure_at_us", "0")),
        last_error=f.get("last_error", ""),
        failed_count=int(f.get("failed_count", "0")),
    )
