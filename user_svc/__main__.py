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

from cryptography.hazmat.primitives.asymmetric import ed25519
from shop.user.v1 import user_pb2, user_pb2_grpc
from sqlalchemy.ext.asyncio import AsyncEngine

from common import migrations, telemetry
from common.clients import pg_engine, redis_client
from common.errors import InvalidArgumentError
from common.grpc_server import GrpcServer, serve
from common.migrations import SchemaNotCurrentError
from common.ratelimit import Limiter, Window
from common.settings import load_settings
from user_svc.accounts import Accounts
from user_svc.domain.accounts import (
    AdminOutcome,
    display_name_problem,
    email_problem,
    normalize_email,
    password_problem,
)
from user_svc.keys import KeyFileError, TokenKeys, load_private_key, token_keys
from user_svc.passwords import Passwords
from user_svc.ratelimit import SignInLimiter, SignInLimits
from user_svc.server import UserService
from user_svc.sessions import Sessions, TokenPolicy
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


async def bootstrap_admin(settings: UserSettings, accounts: Accounts) -> None:
    """The configured first admin, created when missing."""
    assert settings.bootstrap_admin_email and settings.bootstrap_admin_password
    try:
        await accounts.bootstrap_admin(settings.bootstrap_admin_email, settings.bootstrap_admin_password)
    except InvalidArgumentError as exc:
        problem = exc.violations[0]
        raise StartupError(f"{problem.field} {problem.description}") from exc


async def _purge_refresh_tokens(sessions: Sessions) -> None:
    while True:
        try:
            purged = await sessions.purge_expired()
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
            accounts = Accounts(store=store, passwords=passwords)
            if settings.bootstrap_admin_email:
                await bootstrap_admin(settings, accounts)
        except (StartupError, KeyFileError) as exc:
            return _fail(str(exc))
        try:
            await redis.ping()
        except Exception as exc:  # sign-in and sign-up answer UNAVAILABLE until Redis is back
            log.warning("Redis is not reachable at start; sign-in and sign-up wait for it", exc_info=exc)

        sessions = Sessions(
            store=store,
            accounts=accounts,
            passwords=passwords,
            limiter=SignInLimiter(Limiter(redis, prefix="shop:user"), sign_in_limits(settings)),
            keys=keys,
            policy=TokenPolicy(refresh_ttl=settings.refresh_token_ttl, jwks_max_age=settings.jwks_max_age),
        )
        servicer = UserService(accounts=accounts, sessions=sessions)
        server = GrpcServer(settings, keys.verifier)
        server.add(
            user_pb2_grpc.add_UserServiceServicer_to_server,
            servicer,
            user_pb2.DESCRIPTOR.services_by_name["UserService"],
        )
        purge = asyncio.create_task(_purge_refresh_tokens(sessions))
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


ADMIN_MESSAGES = {
    AdminOutcome.CREATED: "created admin",
    AdminOutcome.PROMOTED: "promoted to admin",
    AdminOutcome.UPDATED: "set a new password for admin",
    AdminOutcome.UNCHANGED: "already an admin",
}


def admin_input_problem(email: str, display_name: str) -> str | None:
    """What is wrong with create-admin's arguments (normalized), or None."""
    problem = email_problem(email)
    if problem:
        return f"--email {problem}"
    problem = display_name_problem(display_name)
    return f"--display-name {problem}" if problem else None


async def create_admin(settings: UserSettings, email_given: str, display_name: str, reset_password: bool) -> int:
    email, name = normalize_email(email_given), display_name.strip()
    problem = admin_input_problem(email, name)
    if problem:
        print(f"create-admin: {problem}", file=sys.stderr)
        return 2
    engine = pg_engine(settings.database_url, pool_size=1)
    try:
        try:
            await check_database(engine)
        except StartupError as exc:
            print(f"create-admin: {exc}", file=sys.stderr)
            return 1
        accounts = Accounts(store=Store(engine), passwords=make_passwords(settings))
        password = None
        if await accounts.needs_admin_password(email, reset_password=reset_password):
            password = read_password()
            if password is None:
                return 2
            problem = password_problem(password, email)
            if problem:
                print(f"create-admin: the password is {problem}", file=sys.stderr)
                return 2
        user, outcome = await accounts.ensure_admin(email=email, display_name=name, password=password, promote=True)
    finally:
        await engine.dispose()
    print(f"{ADMIN_MESSAGES.get(outcome, outcome.value)} {user.email} (id {user.id})")
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
