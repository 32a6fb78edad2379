"""product_svc settings, read from ``SHOP_*`` environment variables."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from common.grpc_server import MAX_MESSAGE_BYTES
from common.settings import SERVICE_PORTS, MongoSettings, S3Settings, ServiceSettings

MIB = 1024 * 1024


class ProductSettings(ServiceSettings, MongoSettings, S3Settings):
    service_name: ClassVar[str] = "product_svc"

    port: int = SERVICE_PORTS["product_svc"]

    # Largest image accepted, in bytes; it travels in one gRPC message, so it
    # stays below the message limit with room for the rest of the request.
    image_max_bytes: int = Field(default=4 * MIB, ge=1024, le=MAX_MESSAGE_BYTES - 64 * 1024)
    # Images per product.
    image_max_count: int = Field(default=20, ge=1, le=100)
    # Image URLs: with a public base URL (a CDN or a public-read bucket), a URL is
    # "<base>/<object key>"; without one, a presigned GET URL valid this many seconds.
    image_public_base_url: str | None = None
    image_url_ttl: int = Field(default=3600, ge=60, le=7 * 24 * 3600)
    # The S3 endpoint as browsers reach it, when it differs from SHOP_S3_ENDPOINT
    # (e.g. inside Compose): presigned URLs are signed for this host.
    image_url_endpoint: str | None = None

    # A reservation left "pending" (or half released/committed) longer than this,
    # in seconds, was abandoned by a crashed caller: the recovery sweep, every
    # recovery_interval seconds, rolls it back or finishes it.
    reservation_pending_timeout: float = Field(default=60.0, gt=0)
    recovery_interval: float = Field(default=30.0, gt=0)
