"""notify_svc settings, read from ``SHOP_*`` environment variables."""

from __future__ import annotations

import json
from typing import Annotated, Any, ClassVar

from pydantic import Field, field_validator
from pydantic_settings import NoDecode

from common.settings import SERVICE_PORTS, KafkaSettings, RedisSettings, ServiceSettings
from notify_svc.domain.webhooks import IPNetwork, WebhookPolicy, parse_ports

DAY = 24 * 3600


class NotifySettings(ServiceSettings, RedisSettings, KafkaSettings):
    service_name: ClassVar[str] = "notify_svc"

    port: int = SERVICE_PORTS["notify_svc"]

    # Kafka consumer group reading shop.orders.v1, shop.comments.v1, shop.platform.v1.
    consumer_group: str = "notify_svc"
    # How long the group waits for a member that vanished without leaving
    # (killed) before its partitions move; the broker's minimum is 6 s.
    kafka_session_timeout_ms: int = Field(default=10_000, ge=1_000)
    # Backoff of a failing event handler (Redis down): base doubles up to max, seconds.
    consumer_retry_base: float = Field(default=0.2, gt=0)
    consumer_retry_max: float = Field(default=10.0, gt=0)

    # Feed length per user (oldest entries fall off) and announcements kept.
    feed_cap: int = Field(default=500, ge=1, le=100_000)
    announcement_cap: int = Field(default=100, ge=1, le=10_000)
    # How long an event id is remembered for deduplication, seconds.  Far
    # longer than any redelivery (offsets are committed within a second).
    dedupe_ttl: float = Field(default=7 * DAY, gt=0)
    # Likes of one comment within this many seconds of the first one are
    # folded into one notification ("3 people liked your comment").
    like_fold_window: float = Field(default=300.0, ge=0)

    # Subscribe: a heartbeat after this many seconds without a message.
    heartbeat_interval: float = Field(default=15.0, gt=0)
    # A stream ticket (a browser's way into Subscribe) is single-use and expires after this.
    stream_ticket_seconds: int = Field(default=60, gt=0, le=600)

    # Live streams (Subscribe) a user may hold open at once; each holds a lease in
    # Redis renewed while it runs, so a stream whose process died frees its place
    # after stream_lease_seconds.
    stream_limit: int = Field(default=3, ge=1)
    stream_lease_seconds: float = Field(default=30.0, ge=2)

    # Webhooks per user, and webhook registrations per user per window (seconds;
    # a moving window in Redis).
    webhook_limit: int = Field(default=10, ge=1)
    webhook_register_limit: int = Field(default=10, ge=1)
    webhook_register_window: int = Field(default=3600, ge=1)
    # Where webhooks may go, checked at registration and before every POST, in
    # every mode: these ports ("80,443", ranges as "8000-8999"), public
    # addresses only, plus these networks (comma-separated or a JSON list, e.g.
    # "127.0.0.0/8" for receivers on this machine; empty by default).
    webhook_ports: str = "80,443"
    webhook_allowed_networks: Annotated[list[IPNetwork], NoDecode] = Field(default_factory=list)
    # Attempts per delivery (the first included); retry n waits base * 2^(n-1) s, at most max.
    webhook_max_attempts: int = Field(default=6, ge=1, le=30)
    webhook_retry_base: float = Field(default=5.0, gt=0)
    webhook_retry_max: float = Field(default=3600.0, gt=0)
    # One POST's timeout, seconds; deliveries in flight at once per process.
    webhook_timeout: float = Field(default=5.0, gt=0)
    webhook_concurrency: int = Field(default=32, ge=1)
    # Deliveries listed per webhook (older ones fall off) and how long a
    # finished delivery's record is kept, seconds.
    webhook_history: int = Field(default=200, ge=1)
    webhook_delivery_retention: float = Field(default=7 * DAY, gt=0)

    @field_validator("webhook_ports")
    @classmethod
    def _ports(cls, value: str) -> str:
        parse_ports(value)
        return value

    @field_validator("webhook_allowed_networks", mode="before")
    @classmethod
    def _networks(cls, value: Any) -> Any:
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                return json.loads(text)
            return [part for part in text.replace(" ", "").split(",") if part]
        return value

    def webhook_policy(self) -> WebhookPolicy:
        return WebhookPolicy(
            https_only=not self.development,
            ports=parse_ports(self.webhook_ports),
            allowed_networks=tuple(self.webhook_allowed_networks),
        )
