"""A short-lived cache of rating summaries, for the product page.

The product page shows a product with the rating summary of its reviews, which
comment_svc owns; asking comment_svc on every page view doubles the upstream
calls of the busiest read.  A summary changes only when a review is written,
edited or deleted, and a page may show it a few seconds late, so each edge
process keeps what comment_svc answered for ``ttl`` seconds
(``SHOP_RATING_CACHE_SECONDS``; 0 turns the cache off).

* A write this edge forwards drops the product's entry (a deletion, whose
  product the edge does not learn, drops them all), so a reviewer sees their
  own review counted at once; a write through another edge process shows
  within ``ttl``.
* An answer that was asked for before a drop is not kept: it may predate
  the write.
* Entries are keyed by the product id in its canonical form, so ``ABC…`` and
  ``abc…`` are one entry; an id that is not a UUID is never kept.
* ``GET /api/v1/products/{id}/rating`` does not use the cache.
"""

from __future__ import annotations

import math
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

V = TypeVar("V")


def _canonical(product_id: str) -> str | None:
    try:
        return str(uuid.UUID(product_id))
    except ValueError:
        return None


class RatingCache(Generic[V]):
    def __init__(self, ttl: float, max_entries: int = 10_000, clock: Callable[[], float] = time.monotonic) -> None:
        if ttl < 0 or max_entries < 1:
            raise ValueError("ttl must be >= 0 and max_entries >= 1")
        self.ttl = ttl
        self.max_entries = max_entries
        self.clock = clock
        self._entries: OrderedDict[str, tuple[float, V]] = OrderedDict()  # product id -> (expires, summary)
        self._dropped: dict[str, float] = {}  # product id -> when its entry was last dropped
        self._all_dropped = -math.inf

    def get(self, product_id: str) -> V | None:
        """The summary kept for the product, or None (ask comment_svc)."""
        key = _canonical(product_id)
        if key is None or (found := self._entries.get(key)) is None:
            return None
        expires, summary = found
        if expires <= self.clock():
            del self._entries[key]
            return None
        return summary

    def put(self, product_id: str, summary: V, asked_at: float) -> None:
        """Keep comment_svc's answer to a request sent at ``asked_at`` (this
        cache's clock), unless the product's entry was dropped since then."""
        key = _canonical(product_id)
        if key is None or self.ttl <= 0 or asked_at <= max(self._all_dropped, self._dropped.get(key, -math.inf)):
            return
        self._entries[key] = (asked_at + self.ttl, summary)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)  # the least recently stored

    def drop(self, product_id: str | None = None) -> None:
        """Forget one product's summary (None: every product's)."""
        now = self.clock()
        if product_id is None or len(self._dropped) >= self.max_entries:
            self._entries.clear()
            self._dropped.clear()
            self._all_dropped = now
            return
        key = _canonical(product_id)
        if key is None:
            return  # never kept
        self._entries.pop(key, None)
        self._dropped[key] = now
