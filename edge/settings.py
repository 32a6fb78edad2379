"""Settings of the edge process (``SHOP_*`` environment variables)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, IPvAnyNetwork

from common.settings import SERVICE_PORTS, CommonSettings, PaymentSettings, TlsSettings


def _local(name: str) -> str:
    return f"127.0.0.1:{SERVICE_PORTS[name]}"


class EdgeSettings(CommonSettings, TlsSettings, PaymentSettings):
    port: int = SERVICE_PORTS["edge"]
    # Where each service listens (host:port).
    user_svc_addr: str = _local("user_svc")
    product_svc_addr: str = _local("product_svc")
    order_svc_addr: str = _local("order_svc")
    comment_svc_addr: str = _local("comment_svc")
    notify_svc_addr: str = _local("notify_svc")
    # Deadline of every upstream call, in seconds.
    upstream_timeout: float = 5.0
    # How long the product page may show a rating summary comment_svc gave
    # earlier, in seconds (edge/ratings.py); 0: ask comment_svc every time.
    rating_cache_seconds: float = Field(default=5.0, ge=0)
    # Largest request body accepted (JSON); image uploads have their own cap.
    max_body_bytes: int = 1024 * 1024
    # Largest multipart upload: product_svc's image cap (4 MiB) plus room for the
    # multipart framing; product_svc decides the exact image limit.
    max_upload_bytes: int = 4 * 1024 * 1024 + 64 * 1024
    # Browser origins allowed by CORS; empty: no CORS headers at all.
    cors_origins: list[str] = Field(default_factory=list)
    # Proxies in front of the edge (addresses or CIDR networks, a JSON list such as
    # '["10.0.0.0/8"]') whose forwarding header is believed: the client address is the
    # rightmost one in it that is not a trusted proxy.  Empty: the TCP peer's address.
    trusted_proxies: list[IPvAnyNetwork] = Field(default_factory=list)
    # The header those proxies maintain: X-Forwarded-For, or RFC 7239 Forwarded.
    forwarded_header: Literal["x-forwarded-for", "forwarded"] = "x-forwarded-for"
    # Largest Stripe webhook body accepted (Stripe's events are a few KiB).
    max_webhook_bytes: int = 256 * 1024
