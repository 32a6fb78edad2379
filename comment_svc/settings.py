"""comment_svc settings, read from ``SHOP_*`` environment variables."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from common.settings import SERVICE_PORTS, KafkaSettings, PostgresSettings, RedisSettings, ServiceSettings

DEFAULT_DATABASE_URL = "postgresql+psycopg://shop_comment@127.0.0.1:5432/shop_comment"


def _local(name: str) -> str:
    return f"127.0.0.1:{SERVICE_PORTS[name]}"


class CommentSettings(ServiceSettings, PostgresSettings, KafkaSettings, RedisSettings):
    service_name: ClassVar[str] = "comment_svc"

    port: int = SERVICE_PORTS["comment_svc"]
    database_url: str = DEFAULT_DATABASE_URL
    db_pool_size: int = Field(default=10, ge=1)
    # Comments and replies a user may post per window (seconds; a moving window in
    # Redis, the only thing comment_svc keeps there).  While Redis is down posting
    # goes on unlimited (logged): the limit guards against floods, not sign-in.
    comment_create_limit: int = Field(default=20, ge=1)
    comment_create_window: int = Field(default=3600, ge=1)

    # Where the services comment_svc calls listen (host:port); the local
    # cluster sets SHOP_PRODUCT_SVC_ADDR, SHOP_ORDER_SVC_ADDR, SHOP_USER_SVC_ADDR.
    product_svc_addr: str = _local("product_svc")  # does the product exist?
    order_svc_addr: str = _local("order_svc")  # HasPurchased: the verified mark
    user_svc_addr: str = _local("user_svc")  # the author's display name
    # Deadline of each call to another service, in seconds (calls wait for a
    # restarting service within it).
    upstream_timeout: float = Field(default=3.0, gt=0)
    # Deadline of the display-name lookup (cosmetic: shorter, so a user_svc
    # that is down delays a post or a like little).
    display_name_timeout: float = Field(default=1.0, gt=0)
    # How long a looked-up display name is reused (seconds; 0: always ask).
    display_name_ttl: float = Field(default=60.0, ge=0)
