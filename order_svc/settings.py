"""order_svc settings, read from ``SHOP_*`` environment variables."""

from __future__ import annotations

from typing import ClassVar, Self

from pydantic import Field, SecretStr, model_validator

from common.settings import (
    SERVICE_PORTS,
    KafkaSettings,
    PaymentSettings,
    PostgresSettings,
    RedisSettings,
    ServiceSettings,
)

DEFAULT_DATABASE_URL = "postgresql+psycopg://shop_order@127.0.0.1:5432/shop_order"


class OrderSettings(ServiceSettings, PostgresSettings, KafkaSettings, RedisSettings, PaymentSettings):
    service_name: ClassVar[str] = "order_svc"

    port: int = SERVICE_PORTS["order_svc"]
    database_url: str = DEFAULT_DATABASE_URL
    db_pool_size: int = Field(20, ge=1)
    product_svc_addr: str = f"127.0.0.1:{SERVICE_PORTS['product_svc']}"
    # Deadline of calls to product_svc, in seconds.
    product_timeout: float = Field(3.0, gt=0)

    # An unpaid order is cancelled (EXPIRED) and its stock released after this.
    payment_window_seconds: int = Field(30 * 60, ge=1)
    # Orders a user may place per window (seconds; a moving window in Redis), and
    # unpaid orders a user may hold at once (each holds stock until paid or expired).
    order_create_limit: int = Field(30, ge=1)
    order_create_window: int = Field(3600, ge=1)
    unpaid_orders_limit: int = Field(5, ge=1)
    # How often expired orders and pending stock releases are looked for.
    sweep_interval: float = Field(5.0, gt=0)
    # A reservation whose order was never written is released after this.
    orphan_reservation_after: float = Field(60.0, gt=0)

    # Shipping rule (minor units of the order's currency): standard costs
    # shipping_standard_minor, free from free_shipping_over_minor; express
    # always costs shipping_express_minor.
    shipping_standard_minor: int = Field(499, ge=0)
    shipping_express_minor: int = Field(1499, ge=0)
    free_shipping_over_minor: int = Field(5000, ge=0)
    # Parcels heavier than this pay the surcharge (any method; free shipping too).
    heavy_parcel_grams: int = Field(10_000, ge=0)
    heavy_surcharge_minor: int = Field(999, ge=0)

    # Carts (Redis): a signed-in user's cart lives this long from its last
    # change; a guest cart as long as its token.  The secret signs guest tokens.
    cart_ttl_seconds: int = Field(30 * 24 * 3600, ge=60)
    guest_cart_ttl_seconds: int = Field(7 * 24 * 3600, ge=60)
    cart_token_secret: SecretStr | None = None
    max_cart_lines: int = Field(100, ge=1)

    # At most what product_svc reserves in one call (100 lines, 10,000 units a line).
    max_items: int = Field(100, ge=1, le=100)
    max_line_quantity: int = Field(100, ge=1, le=10_000)
    # How long an idempotency key is remembered, and how long a request that
    # holds one may run before a retry may take over.
    idempotency_ttl_seconds: int = Field(24 * 3600, ge=60)
    idempotency_lease_seconds: float = Field(30.0, gt=0)

    # The outbox relay publishing this service's events.
    relay_enabled: bool = True

    # Payments (order_svc/payments/): SHOP_PAYMENT_PROCESSOR picks the processor
    # (common/settings.py PaymentSettings).  The test processor moves no money, so
    # production refuses it, unless this says the deployment is a staging one.
    allow_test_payments_in_staging: bool = False
    # Stripe: the secret key (sk_...), where its API answers (stripe-mock locally:
    # devstack sets SHOP_STRIPE_API_BASE), the deadline of one call in seconds, and
    # how often the SDK retries a call that got no answer (with the same idempotency key).
    stripe_secret_key: SecretStr | None = None
    stripe_api_base: str = "https://api.stripe.com"
    stripe_timeout: float = Field(10.0, gt=0)
    stripe_max_network_retries: int = Field(2, ge=0, le=10)
    # Applied processor events are remembered this long (Stripe redelivers for 3 days).
    payment_event_ttl_seconds: int = Field(30 * 24 * 3600, ge=3600)

    @model_validator(mode="after")
    def _no_test_payments_in_production(self) -> Self:
        if self.env == "production" and self.payment_processor == "test" and not self.allow_test_payments_in_staging:
            raise ValueError(
                "SHOP_PAYMENT_PROCESSOR=test takes no real money and is refused in production: set"
                " SHOP_PAYMENT_PROCESSOR=stripe (with SHOP_STRIPE_SECRET_KEY and SHOP_STRIPE_WEBHOOK_SECRET),"
                " or SHOP_ALLOW_TEST_PAYMENTS_IN_STAGING=true on a staging deployment"
            )
        return self

    @property
    def test_payments_allowed(self) -> bool:
        return self.env != "production" or self.allow_test_payments_in_staging
