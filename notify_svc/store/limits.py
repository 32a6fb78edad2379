"""How much the store keeps and for how long, and the clock it stamps records with."""

from __future__ import annotations

import time
from dataclasses import dataclass


@dataclass
class Limits:
    feed_cap: int = 500
    announcement_cap: int = 100
    dedupe_ttl: float = 7 * 24 * 3600
    like_fold_window: float = 300.0
    webhook_limit: int = 10
    webhook_history: int = 200
    delivery_retention: float = 7 * 24 * 3600


def now_us() -> int:
    return time.time_ns() // 1000
