"""Typed settings read from ``SHOP_*`` environment variables.

Every process builds one settings object at start by combining the pieces it
needs (``class ProductSettings(ServiceSettings, MongoSettings, S3Settings)``).
Defaults match the local cluster that ``python -m devstack up`` runs, so a
developer needs no configuration.  Secrets have development defaults only:
outside development mode a missing secret stops the process at start.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

Environment = Literal["development", "test", "production"]

# The seed's ports: one per process, fixed so grpcurl and curl examples work.
SERVICE_PORTS: dict[str, int] = {
    "user_svc": 8080,
    "product_svc": 8081,
    "order_svc": 8082,
    "notify_svc": 8083,
    "comment_svc": 8084,
    "edge": 8085,
    "web": 8086,
}

# Local-cluster-only secrets.  They are filled in only in development and test
# mode; production refuses to start without real values.
DEV_SECRETS: dict[str, str] = {
    "s3_secret_key": "shop-dev-secret-not-for-production",
    "cart_token_secret": "shop-dev-cart-secret-not-for-production",
    # stripe-mock accepts any key shaped sk_test_<x>; the webhook secret signs devstack's test events.
    "stripe_secret_key": "sk_test_shopdevnotforproduction",
    "stripe_webhook_secret": "whsec_shop-dev-not-for-production",
}


class _Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SHOP_", extra="ignore")

    env: Environment = "development"

    @model_validator(mode="before")
    @classmethod
    def _development_secrets(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        production = str(data.get("env", "development")) == "production"
        for name, field in cls.model_fields.items():
            if field.annotation not in (SecretStr, SecretStr | None) or data.get(name):
                continue
            if production:
                if cls._secret_needed(name, data):
                    raise ValueError(f"SHOP_{name.upper()} must be set outside development mode")
                continue
            if name in DEV_SECRETS:
                data[name] = DEV_SECRETS[name]
        return data

    @classmethod
    def _secret_needed(cls, name: str, data: dict[str, Any]) -> bool:
        """Whether a production process must be given this secret: every one, unless
        the secret belongs to a feature the configuration does not use."""
        return True

    @property
    def development(self) -> bool:
        return self.env != "production"


class CommonSettings(_Settings):
    """What every process reads: logging, telemetry, token verification."""

    service_name: ClassVar[str] = "shop"

    log_level: str = "INFO"
    host: str = "127.0.0.1"
    # Prometheus metrics endpoint; 0 disables it.
    metrics_port: int = 0
    # On SIGTERM: seconds health reports NOT_SERVING before new calls are
    # refused, then seconds in-flight calls get to finish.
    shutdown_drain: float = 1.0
    shutdown_grace: float = 5.0
    # PEM file with the public key that verifies access tokens.  Every service
    # reads it; only user_svc holds the private key.  Unset: no token is
    # accepted and every authenticated call answers UNAUTHENTICATED.
    jwt_public_key_file: str | None = None
    jwt_issuer: str = "shop"
    jwt_audience: str = "shop"


class TlsSettings(_Settings):
    """This process's service identity (common/tls.py): the shop CA, its own certificate
    and key, PEM files.  Every gRPC server and channel is mutual TLS, in every mode: a
    process without readable files stops at start with a message that names the missing
    settings (common/grpc_server.main, edge/__main__.py; never a value).  devstack, compose
    and deploy/k8s provide them."""

    tls_ca_file: str | None = None
    tls_cert_file: str | None = None
    tls_key_file: str | None = None


class ServiceSettings(CommonSettings, TlsSettings):
    """A gRPC service process."""

    port: int = 0
    # Server reflection (what `grpcurl list/describe` reads): None = on in development and
    # test mode, off in production, where the contract is in proto/ and nobody browses.
    grpc_reflection: bool | None = None
    # A plaintext port that serves only the gRPC health service, for probes that cannot
    # present a client certificate (Kubernetes' gRPC probes); 0: none.
    health_port: int = 0

    @property
    def reflection(self) -> bool:
        return self.grpc_reflection if self.grpc_reflection is not None else self.development


class PostgresSettings(_Settings):
    # SQLAlchemy URL; each service overrides the default with its own database.
    database_url: str = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


class RedisSettings(_Settings):
    redis_url: str = "redis://127.0.0.1:6379/0"


class KafkaSettings(_Settings):
    kafka_bootstrap: str = "127.0.0.1:9092"


PaymentProcessorName = Literal["test", "stripe"]


class PaymentSettings(_Settings):
    """Which payment processor takes the money, and the secret that signs Stripe's
    webhook events: the edge verifies the signature, order_svc verifies it again
    before it acts on an event.  The Stripe secrets are needed only with Stripe."""

    # "test": deterministic tokens, no money moves (order_svc/payments/testing.py);
    # "stripe": PaymentIntents through Stripe's API (order_svc/payments/stripe_api.py).
    payment_processor: PaymentProcessorName = "test"
    stripe_webhook_secret: SecretStr | None = None

    @classmethod
    def _secret_needed(cls, name: str, data: dict[str, Any]) -> bool:
        if name.startswith("stripe_"):
            return str(data.get("payment_processor", "test")) == "stripe"
        return super()._secret_needed(name, data)


class MongoSettings(_Settings):
    mongo_url: str = "mongodb://127.0.0.1:27017/"
    mongo_database: str = "shop_product"


class S3Settings(_Settings):
    s3_endpoint: str = "http://127.0.0.1:9000"
    s3_region: str = "us-east-1"
    s3_bucket: str = "shop-images"
    s3_access_key: str = "shop-dev"
    s3_secret_key: SecretStr | None = None
