"""Carts in Redis: the only module that knows their keys.

A cart is two hashes, ``cart:{owner}:q`` (product id -> quantity) and
``cart:{owner}:t`` (product id -> when it was first added, ms), where the owner
is ``u:<user id>`` or ``g:<guest cart id>``.  Every change refreshes the TTL of
both keys and runs as one Lua script, so concurrent changes never lose a unit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import redis.asyncio as aioredis

# KEYS: q, t.  ARGV: product, delta, cap, now_ms, ttl_s.  -> new quantity, or -1 over the cap.
_ADD = """
local current = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')
local wanted = current + tonumber(ARGV[2])
if wanted > tonumber(ARGV[3]) then return -1 end
redis.call('HSET', KEYS[1], ARGV[1], wanted)
redis.call('HSETNX', KEYS[2], ARGV[1], ARGV[4])
redis.call('EXPIRE', KEYS[1], ARGV[5])
redis.call('EXPIRE', KEYS[2], ARGV[5])
return wanted
"""

# KEYS: q, t.  ARGV: product, quantity, ttl_s.  -> 1 when the line existed, else 0.
_SET = """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[3])
redis.call('EXPIRE', KEYS[2], ARGV[3])
return 1
"""

# KEYS: q, t.  ARGV: ttl_s, then product, quantity pairs.  Takes the ordered
# units out of the cart (lines added meanwhile stay).
_SUBTRACT = """
for i = 2, #ARGV, 2 do
  local left = tonumber(redis.call('HGET', KEYS[1], ARGV[i]) or '0') - tonumber(ARGV[i + 1])
  if left > 0 then
    redis.call('HSET', KEYS[1], ARGV[i], left)
  else
    redis.call('HDEL', KEYS[1], ARGV[i])
    redis.call('HDEL', KEYS[2], ARGV[i])
  end
end
if redis.call('HLEN', KEYS[1]) > 0 then
  redis.call('EXPIRE', KEYS[1], ARGV[1])
  redis.call('EXPIRE', KEYS[2], ARGV[1])
end
return 1
"""


@dataclass(frozen=True)
class StoredLine:
    product_id: str
    quantity: int
    added_ms: int


class CartStore:
    def __init__(self, redis: aioredis.Redis) -> None:
        self.redis = redis
        self._add = redis.register_script(_ADD)
        self._set = redis.register_script(_SET)
        self._subtract = redis.register_script(_SUBTRACT)

    @staticmethod
    def _keys(owner: str) -> list[str]:
        return [f"cart:{owner}:q", f"cart:{owner}:t"]

    async def read(self, owner: str) -> tuple[list[StoredLine], int]:
        """The cart's lines in the order they were added, and its TTL in seconds (< 0: no cart)."""
        q, t = self._keys(owner)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hgetall(q)
            pipe.hgetall(t)
            pipe.ttl(q)
            quantities, added, ttl = await pipe.execute()
        lines = [
            StoredLine(product.decode(), int(quantity), int(added.get(product, 0)))
            for product, quantity in quantities.items()
        ]
        return sorted(lines, key=lambda line: (line.added_ms, line.product_id)), int(ttl)

    async def ttl(self, owner: str) -> int:
        return int(await self.redis.ttl(self._keys(owner)[0]))

    async def add(self, owner: str, product_id: str, delta: int, cap: int, now_ms: int, ttl: int) -> int | None:
        result = int(await self._add(keys=self._keys(owner), args=[product_id, delta, cap, now_ms, ttl]))
        return None if result < 0 else result

    async def set(self, owner: str, product_id: str, quantity: int, ttl: int) -> bool:
        return bool(await self._set(keys=self._keys(owner), args=[product_id, quantity, ttl]))

    async def remove(self, owner: str, product_id: str) -> None:
        q, t = self._keys(owner)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hdel(q, product_id)
            pipe.hdel(t, product_id)
            await pipe.execute()

    async def clear(self, owner: str) -> None:
        await self.redis.delete(*self._keys(owner))

    async def subtract(self, owner: str, items: Sequence[tuple[str, int]], ttl: int) -> None:
        args: list[str | int] = [ttl]
        for product_id, quantity in items:
            args += [product_id, quantity]
        await self._subtract(keys=self._keys(owner), args=args)
