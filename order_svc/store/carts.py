"""Carts in Redis: the only module that knows their keys.

A cart is two hashes, ``cart:{owner}:q`` (product id -> quantity) and
``cart:{owner}:t`` (product id -> when it was first added, ms), and its
generation ``cart:{owner}:g``, a fresh random value on every change: checkout
records the generation it ordered (order_svc's ``cart_checkouts``), so one
generation never becomes two orders.  The owner is ``u:<user id>`` or
``g:<guest cart id>``.  Every change refreshes the TTL of the keys and runs as
one Lua script, so concurrent changes never lose a unit.

``cart:{owner}:checkout`` is held (SET NX with a lease) while a checkout of the
cart runs: another checkout of it meanwhile is refused at once.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

import redis.asyncio as aioredis

from order_svc.domain import CheckoutLock, StoredLine

# KEYS: q, t, g.  ARGV: product, delta, cap, now_ms, ttl_s, generation.  -> new quantity, or -1 over the cap.
_ADD = """
local current = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')
local wanted = current + tonumber(ARGV[2])
if wanted > tonumber(ARGV[3]) then return -1 end
redis.call('HSET', KEYS[1], ARGV[1], wanted)
redis.call('HSETNX', KEYS[2], ARGV[1], ARGV[4])
redis.call('EXPIRE', KEYS[1], ARGV[5])
redis.call('EXPIRE', KEYS[2], ARGV[5])
redis.call('SET', KEYS[3], ARGV[6], 'EX', ARGV[5])
return wanted
"""

# KEYS: q, t, g.  ARGV: product, quantity, ttl_s, generation.  -> 1 when the line existed, else 0.
_SET = """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[3])
redis.call('EXPIRE', KEYS[2], ARGV[3])
redis.call('SET', KEYS[3], ARGV[4], 'EX', ARGV[3])
return 1
"""

# KEYS: q, t, g.  ARGV: product, generation.
_REMOVE = """
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
if redis.call('HLEN', KEYS[1]) == 0 then
  redis.call('DEL', KEYS[3])
elseif redis.call('EXISTS', KEYS[3]) == 1 then
  redis.call('SET', KEYS[3], ARGV[2], 'KEEPTTL')
end
return 1
"""

# KEYS: q, t, g.  ARGV: expected generation ('' for any), ttl_s, new generation, then product,
# quantity pairs.  Takes the ordered units out of the cart (lines added meanwhile stay); with an
# expected generation, only from the cart as it was then (0 when it changed since).
_SUBTRACT = """
if ARGV[1] ~= '' and redis.call('GET', KEYS[3]) ~= ARGV[1] then return 0 end
for i = 4, #ARGV, 2 do
  local left = tonumber(redis.call('HGET', KEYS[1], ARGV[i]) or '0') - tonumber(ARGV[i + 1])
  if left > 0 then
    redis.call('HSET', KEYS[1], ARGV[i], left)
  else
    redis.call('HDEL', KEYS[1], ARGV[i])
    redis.call('HDEL', KEYS[2], ARGV[i])
  end
end
if redis.call('HLEN', KEYS[1]) > 0 then
  redis.call('EXPIRE', KEYS[1], ARGV[2])
  redis.call('EXPIRE', KEYS[2], ARGV[2])
  redis.call('SET', KEYS[3], ARGV[3], 'EX', ARGV[2])
else
  redis.call('DEL', KEYS[3])
end
return 1
"""

# KEYS: q, g.  ARGV: generation.  A cart with lines but no generation (written before
# generations existed) gets one, expiring with the cart.
_ENSURE_GENERATION = """
if redis.call('EXISTS', KEYS[2]) == 0 and redis.call('EXISTS', KEYS[1]) == 1 then
  local ttl = redis.call('TTL', KEYS[1])
  if ttl > 0 then redis.call('SET', KEYS[2], ARGV[1], 'EX', ttl) else redis.call('SET', KEYS[2], ARGV[1]) end
end
return 1
"""

# KEYS: lock.  ARGV: holder.  Frees the checkout lock only for the request holding it.
_UNLOCK = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def _generation() -> str:
    return uuid.uuid4().hex


class CartStore:
    def __init__(self, redis: aioredis.Redis) -> None:
        self.redis = redis
        self._add = redis.register_script(_ADD)
        self._set = redis.register_script(_SET)
        self._remove = redis.register_script(_REMOVE)
        self._subtract = redis.register_script(_SUBTRACT)
        self._ensure_generation = redis.register_script(_ENSURE_GENERATION)
        self._unlock = redis.register_script(_UNLOCK)

    @staticmethod
    def _keys(owner: str) -> list[str]:
        return [f"cart:{owner}:q", f"cart:{owner}:t", f"cart:{owner}:g"]

    async def read(self, owner: str) -> tuple[list[StoredLine], int]:
        """The cart's lines in the order they were added, and its TTL in seconds (< 0: no cart)."""
        lines, ttl, _ = await self.snapshot(owner)
        return lines, ttl

    async def snapshot(self, owner: str) -> tuple[list[StoredLine], int, str]:
        """The lines, the TTL and the generation of the cart, read at one moment
        ("" for the generation of a cart without lines)."""
        q, t, g = self._keys(owner)
        for _ in range(2):
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.hgetall(q)
                pipe.hgetall(t)
                pipe.ttl(q)
                pipe.get(g)
                quantities, added, ttl, generation = await pipe.execute()
            if generation is not None or not quantities:
                break
            await self._ensure_generation(keys=[q, g], args=[_generation()])
        lines = [
            StoredLine(product.decode(), int(quantity), int(added.get(product, 0)))
            for product, quantity in quantities.items()
        ]
        ordered = sorted(lines, key=lambda line: (line.added_ms, line.product_id))
        return ordered, int(ttl), generation.decode() if generation else ""

    async def add(self, owner: str, product_id: str, delta: int, *, cap: int, now_ms: int, ttl: int) -> int | None:
        result = int(await self._add(keys=self._keys(owner), args=[product_id, delta, cap, now_ms, ttl, _generation()]))
        return None if result < 0 else result

    async def set(self, owner: str, product_id: str, quantity: int, ttl: int) -> bool:
        return bool(await self._set(keys=self._keys(owner), args=[product_id, quantity, ttl, _generation()]))

    async def remove(self, owner: str, product_id: str) -> None:
        await self._remove(keys=self._keys(owner), args=[product_id, _generation()])

    async def clear(self, owner: str) -> None:
        await self.redis.delete(*self._keys(owner))

    async def subtract(self, owner: str, items: Sequence[tuple[str, int]], ttl: int, *, generation: str = "") -> bool:
        """Take ordered units out of the cart; with ``generation``, only if the cart
        is still that generation (False otherwise)."""
        args: list[str | int] = [generation, ttl, _generation()]
        for product_id, quantity in items:
            args += [product_id, quantity]
        return bool(await self._subtract(keys=self._keys(owner), args=args))

    # --- the checkout lock ---------------------------------------------------------------------

    @staticmethod
    def _lock_key(owner: str) -> str:
        return f"cart:{owner}:checkout"

    async def lock_checkout(self, owner: str, holder: str, lease_ms: int) -> CheckoutLock:
        """Take the cart's checkout lock for ``holder`` (TAKEN), or find it held by
        ``holder`` already (HELD: a repeat of the same request) or by another (BUSY)."""
        key = self._lock_key(owner)
        if await self.redis.set(key, holder, nx=True, px=lease_ms):
            return CheckoutLock.TAKEN
        current = await self.redis.get(key)
        if current is not None and (current.decode() if isinstance(current, bytes) else current) == holder:
            return CheckoutLock.HELD
        return CheckoutLock.BUSY

    async def unlock_checkout(self, owner: str, holder: str) -> None:
        await self._unlock(keys=[self._lock_key(owner)], args=[holder])
