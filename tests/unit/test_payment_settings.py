"""Which payment processor a process gets, and which secrets it then needs."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from common.settings import DEV_SECRETS
from edge.settings import EdgeSettings
from order_svc.__main__ import processors
from order_svc.settings import OrderSettings

# order_svc's other production secrets (its cart tokens, its Kafka login).
PRODUCTION = {
    "SHOP_ENV": "production",
    "SHOP_CART_TOKEN_SECRET": "real-cart-secret",
    "SHOP_KAFKA_SASL_PASSWORD": "real-kafka-password",
}


def _env(monkeypatch: pytest.MonkeyPatch, **values: str) -> None:
    for name, value in values.items():
        monkeypatch.setenv(name, value)


def test_development_uses_the_test_processor_with_local_stripe_secrets() -> None:
    settings = OrderSettings()
    assert settings.payment_processor == "test"
    assert settings.stripe_secret_key is not None and settings.stripe_webhook_secret is not None
    assert settings.stripe_secret_key.get_secret_value() == DEV_SECRETS["stripe_secret_key"]
    chosen = processors(settings)
    assert chosen.charging.name == "test" and set(chosen.by_name) == {"test", "stripe"}


def test_production_refuses_the_test_processor(monkeypatch: pytest.MonkeyPatch) -> None:
    _env(monkeypatch, **PRODUCTION)
    with pytest.raises(ValidationError, match="SHOP_PAYMENT_PROCESSOR=test takes no real money"):
        OrderSettings()


def test_a_staging_deployment_may_allow_test_payments(monkeypatch: pytest.MonkeyPatch) -> None:
    _env(monkeypatch, **PRODUCTION, SHOP_ALLOW_TEST_PAYMENTS_IN_STAGING="true")
    settings = OrderSettings()  # no Stripe secrets needed without Stripe
    assert settings.stripe_secret_key is None
    chosen = processors(settings)
    assert chosen.charging.name == "test" and set(chosen.by_name) == {"test"}


def test_production_with_stripe_needs_its_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    _env(monkeypatch, **PRODUCTION, SHOP_PAYMENT_PROCESSOR="stripe")
    with pytest.raises(ValidationError, match="SHOP_STRIPE_WEBHOOK_SECRET must be set"):
        OrderSettings()
    _env(monkeypatch, SHOP_STRIPE_WEBHOOK_SECRET="whsec_real")
    with pytest.raises(ValidationError, match="SHOP_STRIPE_SECRET_KEY must be set"):
        OrderSettings()
    _env(monkeypatch, SHOP_STRIPE_SECRET_KEY="sk_live_real")
    chosen = processors(OrderSettings())
    assert chosen.charging.name == "stripe" and set(chosen.by_name) == {"stripe"}  # no test processor


def test_the_edge_needs_the_webhook_secret_only_with_stripe(monkeypatch: pytest.MonkeyPatch) -> None:
    _env(monkeypatch, SHOP_ENV="production")
    assert EdgeSettings().stripe_webhook_secret is None  # the webhook route answers 404
    _env(monkeypatch, SHOP_PAYMENT_PROCESSOR="stripe")
    with pytest.raises(ValidationError, match="SHOP_STRIPE_WEBHOOK_SECRET must be set"):
        EdgeSettings()
