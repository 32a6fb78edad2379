"""user_svc settings, read from ``SHOP_*`` environment variables."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field, model_validator

from common.settings import SERVICE_PORTS, PostgresSettings, RedisSettings, ServiceSettings

DEFAULT_DATABASE_URL = "postgresql+psycopg://shop_user@127.0.0.1:5432/shop_user"

DAY = 24 * 3600


class UserSettings(ServiceSettings, PostgresSettings, RedisSettings):
    service_name: ClassVar[str] = "user_svc"

    port: int = SERVICE_PORTS["user_svc"]
    database_url: str = DEFAULT_DATABASE_URL
    db_pool_size: int = Field(default=10, ge=1)

    # PEM file with the Ed25519 private key that signs access tokens.  Required
    # in production; in development a missing file means a throwaway key (other
    # services then cannot verify the tokens, so the local cluster sets it).
    jwt_private_key_file: str | None = None
    # The key set every service verifies with is SHOP_JWT_PUBLIC_KEY_FILE (common
    # settings); it must hold this key's public key.  Its other keys (retired ones
    # whose tokens have not expired yet) are served in the JWKS after the current
    # one.  Rotation: README, "Rotating the token signing key".
    access_token_ttl: int = Field(default=900, ge=10, le=DAY)
    refresh_token_ttl: int = Field(default=30 * DAY, ge=60)
    jwks_max_age: int = Field(default=300, ge=0)

    # Sign-up and sign-in limits (moving windows in Redis; window lengths in
    # seconds; user_svc/ratelimit.py).  Registrations per client address:
    register_address_limit: int = Field(default=10, ge=1)
    register_address_window: int = Field(default=3600, ge=1)
    # Login attempts of any outcome per client address:
    login_address_limit: int = Field(default=30, ge=1)
    login_address_window: int = Field(default=60, ge=1)
    # Wrong passwords per (account, client address) pair: what an attacker at one
    # address can spend; the owner elsewhere keeps signing in.
    login_pair_limit: int = Field(default=5, ge=1)
    login_pair_window: int = Field(default=300, ge=1)
    # Wrong passwords per account from all addresses together, a slower budget:
    # one address alone (5 per 300 s = 60 an hour) spends at most 60 % of it.
    login_account_limit: int = Field(default=100, ge=1)
    login_account_window: int = Field(default=3600, ge=1)

    # argon2id cost (RFC 9106's second recommended option: t=3, 64 MiB, p=4).
    argon2_time_cost: int = Field(default=3, ge=1)
    argon2_memory_kib: int = Field(default=64 * 1024, ge=8 * 1024)
    argon2_parallelism: int = Field(default=4, ge=1)
    # Password hashes computed at once (each holds argon2_memory_kib); 0 = CPU count.
    hash_concurrency: int = Field(default=0, ge=0)
    # Callers that may wait for a hashing slot, and for how long (seconds); past
    # either the call answers UNAVAILABLE "busy" with a retry delay (the edge: 503
    # with Retry-After), well within the edge's upstream deadline.
    hash_queue: int = Field(default=16, ge=0)
    hash_queue_wait: float = Field(default=2.0, gt=0)

    # An admin created at start when missing (both or neither).  An existing
    # account with that email is never promoted by this: use `create-admin`.
    bootstrap_admin_email: str | None = None
    bootstrap_admin_password: str | None = Field(default=None, repr=False)

    @model_validator(mode="after")
    def _checks(self) -> UserSettings:
        if not self.development and not self.jwt_private_key_file:
            raise ValueError("SHOP_JWT_PRIVATE_KEY_FILE must be set outside development mode")
        if bool(self.bootstrap_admin_email) != bool(self.bootstrap_admin_password):
            raise ValueError("set both SHOP_BOOTSTRAP_ADMIN_EMAIL and SHOP_BOOTSTRAP_ADMIN_PASSWORD, or neither")
        return self
