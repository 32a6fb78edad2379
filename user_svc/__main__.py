"""user_svc: accounts, sessions and tokens.

    python -m user_svc                          serve gRPC on SHOP_PORT (default 8080)
    python -m user_svc create-admin --email E   create an admin, or promote an account

create-admin reads the new account's password from SHOP_ADMIN_PASSWORD, or asks
for it in a terminal; it never has a default.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import logging
import os
import sys
from datetime import UTC, datetime, timedelta

from cryptography.hazmat.primitives.asymmetric import ed25519
from shop.user.v1 import user_pb2, user_pb2_grpc
from sqlalchemy.ext.asyncio import AsyncEngine

from common import migrations, telemetry
from common.clients import pg_engine, redis_client
from common.errors import DomainError
from common.grpc_server import GrpcServer, serve
from common.migrations import SchemaNotCurrentError
from common.ratelimit import Limiter, Window
from common.settings import load_settings
from user_svc import domain
from user_svc.keys import KeyFileError, TokenKeys, load_private_key, token_keys
from user_svc.passwords import Passwords
from user_svc.ratelimit import SignInLimiter, SignInLimits
from user_svc.server import TokenPolicy, UserService
from user_svc.settings import UserSettings
from user_svc.store import Store

log = logging.getLogger("shop.user")

PURGE_EVERY = 3600.0  # seconds between purges of long-expired refresh tokens


class StartupError(Exception):
    """Configuration or environment that keeps the service from starting."""


def _fail(message: str) -> int:
    log.error(message)
    print(f"user_svc: {message}", file=sys.stderr, flush=True)
    return 1


async def check_database(engine: AsyncEngine) -> None:
    """Refuse a database that is unreachable or not migrated to head."""
    try:
        await migrations.check_database(engine, "user")
    except SchemaNotCurrentError as exc:
        raise StartupError(str(exc)) from exc


def load_keys(settings: UserSettings) -> TokenKeys:
    if settings.jwt_private_key_file:
        private = load_private_key(settings.jwt_private_key_file)
    else:
        private = ed25519.Ed25519PrivateKey.generate()
        log.warning("SHOP_JWT_PRIVATE_KEY_FILE is not set: signing with a throwaway key that no other service knows")
    return token_keys(
        private,
        issuer=settings.jwt_issuer,
        audience=settings.jwt_audience,
        ttl=settings.access_token_ttl,
        key_set_file=settings.jwt_public_key_file,
    )


def make_passwords(settings: UserSettings) -> Passwords:
    return Passwords(
        time_cost=settings.argon2_time_cost,
        memory_kib=settings.argon2_memory_kib,
        parallelism=settings.argon2_parallelism,
        concurrency=settings.hash_concurrency,
        queue=settings.hash_queue,
        queue_wait=settings.hash_queue_wait,
    )


def sign_in_limits(settings: UserSettings) -> SignInLimits:
    return SignInLimits(
        register_address=Window("register", settings.register_address_limit, settings.register_address_window),
        login_address=Window("login-address", settings.login_address_limit, settings.login_address_window),
        login_pair=Window("login-account-address", settings.login_pair_limit, settings.login_pair_window),
        login_account=Window("login-account", settings.login_account_limit, settings.login_account_window),
    )


async def bootstrap_admin(settings: UserSettings, store: Store, passwords: Passwords) -> None:
    """The configured first admin, created when missing."""
    assert settings.bootstrap_admin_email and settings.bootstrap_admin_password
    try:
        email = domain.validate_email(settings.bootstrap_admin_email, "SHOP_BOOTSTRAP_ADMIN_EMAIL")
    except DomainError as exc:
        raise StartupError(f"SHOP_BOOTSTRAP_ADMIN_EMAIL {exc.violations[0].description}") from exc
    existing = await store.user_by_email(email)
    if existing is not None:
        if existing.role != domain.ADMIN:
            log.warning(
                "the bootstrap admin email belongs to a customer account; not promoting it "
                "(use `python -m user_svc create-admin` to do that on purpose)"
            )
        return
    problem = domain.password_problem(settings.bootstrap_admin_password, email)
    if problem:
        raise StartupError(f"SHOP_BOOTSTRAP_ADMIN_PASSWORD is {problem}")
    password_hash = await passwords.hash(settings.bootstrap_admin_password)
    user, outcome = await store.ensure_admin(
        email=email, display_name="Administrator", password_hash=password_hash, promote=False
    )
    log.info("bootstrap admin", extra={"user_id": str(user.id), "outcome": outcome})


async def _purge_refresh_tokens(store: Store) -> None:
    while True:
        try:
            purged = await store.purge_refresh_tokens(datetime.now(UTC) - timedelta(days=1))
            if purged:
                log.info("purged expired refresh tokens", extra={"count": purged})
        except Exception as exc:  # the next round tries again
            log.warning("purging expired refresh tokens failed", exc_info=exc)
        await asyncio.sleep(PURGE_EVERY)


async def run(settings: UserSettings, *, stopping: asyncio.Event | None = None) -> int:
    engine = pg_engine(settings.database_url, pool_size=settings.db_pool_size)
    redis = redis_client(settings.redis_url)
    purge: asyncio.Task[None] | None = None
    try:
        try:
            await check_database(engine)
            keys = load_keys(settings)
            passwords = make_passwords(settings)
            store = Store(engine)
            if settings.bootstrap_admin_email:
                await bootstrap_admin(settings, store, passwords)
        except (StartupError, KeyFileError) as exc:
            return _fail(str(exc))
        try:
            await redis.ping()
        except Exception as exc:  # sign-in and sign-up answer UNAVAILABLE until Redis is back
            log.warning("Redis is not reachable at start; sign-in and sign-up wait for it", exc_info=exc)

        limiter = SignInLimiter(Limiter(redis, prefix="shop:user"), sign_in_limits(settings))
        servicer = UserService(
            store=store,
            passwords=passwords,
            limiter=limiter,
            keys=keys,
            policy=TokenPolicy(
                refresh_ttl=settings.refresh_token_ttl,
                jwks_max_age=settings.jwks_max_age,
            ),
        )
        server = GrpcServer(settings, keys.verifier)
        server.add(
            user_pb2_grpc.add_UserServiceServicer_to_server,
            servicer,
            user_pb2.DESCRIPTOR.services_by_name["UserService"],
        )
        purge = asyncio.create_task(_purge_refresh_tokens(store))
        log.info("token key", extra={"kid": keys.kid})
        await serve(server, stopping=stopping)
        return 0
    finally:
        if purge is not None:
            purge.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await purge
        await redis.aclose()
        await engine.dispose()


# --- create-admin ------------------------------------------------------------------------


def read_password() -> str | None:
    """SHOP_ADMIN_PASSWORD, or asked twice in a terminal; None when neither is possible."""
    given = os.environ.get("SHOP_ADMIN_PASSWORD")
    if given:
        return given
    if not sys.stdin.isatty():
        print("create-admin: set SHOP_ADMIN_PASSWORD, or run it in a terminal to be asked", file=sys.stderr)
        return None
    first = getpass.getpass("Password for the admin: ")
    if getpass.getpass("The same again: ") != first:
        print("create-admin: the two passwords differ", file=sys.stderr)
        return None
    return first


async def create_admin(settings: UserSettings, email_given: str, display_name: str, reset_password: bool) -> int:
    email = domain.normalize_email(email_given)
    problem = domain.email_problem(email)
    if problem:
        print(f"create-admin: --email {problem}", file=sys.stderr)
        return 2
    name = display_name.strip()
    problem = domain.display_name_problem(name)
    if problem:
        print(f"create-admin: --display-name {problem}", file=sys.stderr)
        return 2
    engine = pg_engine(settings.database_url, pool_size=1)
    try:
        try:
            await check_database(engine)
        except StartupError as exc:
            print(f"create-admin: {exc}", file=sys.stderr)
            return 1
        store = Store(engine)
        existing = await store.user_by_email(email)
        password_hash = None
        if existing is None or reset_password:
            password = read_password()
            if password is None:
                return 2
            problem = domain.password_problem(password, email)
            if problem:
                print(f"create-admin: the password is {problem}", file=sys.stderr)
                return 2
            password_hash = await make_passwords(settings).hash(password)
        user, outcome = await store.ensure_admin(
            email=email, display_name=name, password_hash=password_hash, promote=True
        )
    finally:
        await engine.dispose()
    messages = {
        "created": "created admin",
        "promoted": "promoted to admin",
        "updated": "set a new password for admin",
        "unchanged": "already an admin",
    }
    print(f"{messages.get(outcome, outcome)} {user.email} (id {user.id})")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m user_svc", description="shop user service")
    commands = parser.add_subparsers(dest="command")
    commands.add_parser("serve", help="serve gRPC (the default)")
    admin = commands.add_parser(
        "create-admin",
        help="create an admin account, or promote an existing one",
        description="Create an admin (password from SHOP_ADMIN_PASSWORD or asked), or promote an existing "
        "account (its password is kept unless --reset-password).",
    )
    admin.add_argument("--email", required=True)
    admin.add_argument("--display-name", default="Administrator")
    admin.add_argument("--reset-password", action="store_true", help="also set a new password for an existing account")
    args = parser.parse_args(argv)

    settings = load_settings(UserSettings, UserSettings.service_name)
    if args.command == "create-admin":
        telemetry.setup_logging(UserSettings.service_name, "WARNING")
        return asyncio.run(create_admin(settings, args.email, args.display_name, args.reset_password))
    telemetry.setup(
        UserSettings.service_name, log_level=settings.log_level, metrics_port=settings.metrics_port, host=settings.host
    )
    return asyncio.run(run(settings))


if __name__ == "__main__":
    sys.exit(main())
