"""Typed settings read from ``SHOP_*`` environment variables.

Every process builds one settings object at start by combining the pieces it
needs (``class ProductSettings(ServiceSettings, MongoSettings, S3Settings)``).
Defaults match the local cluster that ``python -m devstack up`` runs, so a
developer needs no configuration.  Secrets have development defaults only:
outside development mode a missing secret stops the process at start.
"""

from __future__ import annotations

import re
import sys
from typing import Any, ClassVar, Literal, Self, TypeVar
from urllib.parse import urlsplit, urlunsplit

from pydantic import SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict, SettingsError

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


# The Kafka super user that sets up topics, users and ACLs (common/kafka_acl.py).
KAFKA_ADMIN_USER = "shop_admin"


def dev_kafka_password(user: str) -> str:
    """The local broker's password of a Kafka user (devstack's, development mode only)."""
    return f"shop-dev-kafka-{user}-not-for-production"


class _Settings(BaseSettings):
    # A validation error never shows the values it was given: they may hold secrets.
    model_config = SettingsConfigDict(env_prefix="SHOP_", extra="ignore", hide_input_in_errors=True)

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
            secret = cls._dev_secret(name, data)
            if secret is not None:
                data[name] = secret
        return data

    @classmethod
    def _dev_secret(cls, name: str, data: dict[str, Any]) -> str | None:
        """The development value of a secret the configuration does not set."""
        return DEV_SECRETS.get(name)

    @classmethod
    def _secret_needed(cls, name: str, data: dict[str, Any]) -> bool:
        """Whether a production process must be given this secret: every one, unless
        the secret belongs to a feature the configuration does not use."""
        return True

    @property
    def development(self) -> bool:
        return self.env != "production"


S = TypeVar("S", bound=_Settings)


def load_settings(settings_class: type[S], process: str) -> S:
    """A process's settings; when they are wrong, exit 2 with one line per wrong
    setting naming its variable and why, never its value (it may hold a secret)."""
    try:
        return settings_class()
    except ValidationError as exc:
        problems = settings_problems(exc)
    except SettingsError as exc:  # a list or object variable that is not JSON
        field = re.search(r'field "(\w+)"', str(exc))
        problems = [f"SHOP_{field[1].upper()}: is not valid JSON" if field else str(exc)]
    print(f"{process}: invalid configuration:", *(f"  {problem}" for problem in problems), sep="\n", file=sys.stderr)
    raise SystemExit(2)


def settings_problems(error: ValidationError) -> list[str]:
    """``SHOP_NAME: why`` for each error of a settings object, without input values."""
    problems = []
    for item in error.errors(include_url=False, include_context=False, include_input=False):
        message = str(item["msg"]).removeprefix("Value error, ")
        if not item["loc"]:  # a check across settings: its message names them
            problems.append(message)
            continue
        name, *within = item["loc"]
        problems.append(f"SHOP_{str(name).upper()}{''.join(f'[{part}]' for part in within)}: {message}")
    return problems


def redact_url(url: str) -> str:
    """``url`` with its password (if any) replaced by ``***``, for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))


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
    # The token key set: a PEM file with one or more Ed25519 public keys (the
    # current signing key's and retired ones whose tokens have not expired), each
    # named by its RFC 7638 thumbprint, the ``kid`` a token's header carries.
    # Every service reads it, and reads it again when it changes (no restart);
    # only user_svc holds a private key.  Unset: no token is accepted and every
    # authenticated call answers UNAUTHENTICATED.
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
    # SQLAlchemy URL; each service overrides the default with its own database and the login
    # role that owns it (never a superuser).  Its password is in the URL: the local cluster
    # makes one per role and hands each service its URL (devstack/servers/postgres.py Postgres).
    database_url: str = "postgresql+psycopg://127.0.0.1:5432/postgres"


class RedisSettings(_Settings):
    # redis://<user>:<password>@host:port/db: each service signs in as its own ACL user,
    # allowed its own key prefixes only (common/redis_acl.py REDIS_ACCESS).
    redis_url: str = "redis://127.0.0.1:6379/0"


KafkaSecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
KafkaSaslMechanism = Literal["SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"]


class KafkaSettings(_Settings):
    """Where Kafka is and who the process is there: librdkafka's ``bootstrap.servers``,
    ``security.protocol``, ``sasl.mechanism``, ``sasl.username``, ``sasl.password`` and
    ``ssl.ca.location`` (common/clients.py kafka_config).  The local broker (devstack) takes
    SASL/SCRAM-SHA-512 over plaintext on loopback, one user per process named after it, with
    ACLs per topic (common/kafka_acl.py); a managed Kafka usually wants SASL_SSL."""

    kafka_bootstrap: str = "127.0.0.1:9092"
    kafka_security_protocol: KafkaSecurityProtocol = "SASL_PLAINTEXT"
    kafka_sasl_mechanism: KafkaSaslMechanism = "SCRAM-SHA-512"
    # Unset: the process's name (order_svc, comment_svc, notify_svc), as the local broker has them.
    kafka_sasl_username: str | None = None
    # Needed with SASL_*; in development the local broker's password of the user.
    kafka_sasl_password: SecretStr | None = None
    # PEM file of the CA that signed the brokers' certificates (SSL, SASL_SSL); unset: the system's.
    kafka_ssl_ca_location: str | None = None

    @model_validator(mode="after")
    def _a_login_in_production(self) -> Self:
        if self.env == "production" and self.kafka_security_protocol == "PLAINTEXT":
            raise ValueError(
                "SHOP_KAFKA_SECURITY_PROTOCOL=PLAINTEXT lets anyone on the network write events: production"
                " logs in (SHOP_KAFKA_SECURITY_PROTOCOL=SASL_SSL with SHOP_KAFKA_SASL_USERNAME/_PASSWORD)"
            )
        return self

    @property
    def kafka_user(self) -> str:
        return self.kafka_sasl_username or _default_kafka_user(type(self))

    @classmethod
    def _dev_secret(cls, name: str, data: dict[str, Any]) -> str | None:
        if name == "kafka_sasl_password":
            return dev_kafka_password(str(data.get("kafka_sasl_username") or _default_kafka_user(cls)))
        return super()._dev_secret(name, data)

    @classmethod
    def _secret_needed(cls, name: str, data: dict[str, Any]) -> bool:
        if name == "kafka_sasl_password":
            return str(data.get("kafka_security_protocol", "SASL_PLAINTEXT")).startswith("SASL_")
        return super()._secret_needed(name, data)


def _default_kafka_user(cls: type[Any]) -> str:
    return str(getattr(cls, "service_name", "shop"))


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
    # mongodb://<user>:<password>@host:port/: the document store requires a signed-in user.
    mongo_url: str = "mongodb://127.0.0.1:27017/"
    mongo_database: str = "shop_product"


class S3Settings(_Settings):
    s3_endpoint: str = "http://127.0.0.1:9000"
    s3_region: str = "us-east-1"
    s3_bucket: str = "shop-images"
    s3_access_key: str = "shop-dev"
    s3_secret_key: SecretStr | None = None
