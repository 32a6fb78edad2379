"""user_svc as a real process (``python -m user_svc``) on real PostgreSQL and Redis,
called over gRPC: accounts, sessions, tokens, limits, administration, and its
commands (create-admin, the refusal to start on an unmigrated database).

Most tests use the cluster's shared user_svc (``services("user_svc")``, with the
suite's TEST_OVERRIDES from tests/conftest.py).  The tests that need a database
of their own (bootstrap admin, last-admin rule) or a per-address limit small
enough to reach (the shared one allows 1000 per minute, since the whole suite
signs in from 127.0.0.1) start a private instance on a fresh, migrated
database with 2-second windows.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import grpc
import jwt
import psycopg
import pytest
from cryptography.hazmat.primitives import serialization
from google.protobuf.field_mask_pb2 import FieldMask
from shop.common.v1 import address_pb2, paging_pb2
from shop.user.v1 import user_pb2, user_pb2_grpc

from common.auth import TokenSigner
from common.errors import Problem, problem_from_rpc_error
from devstack.cluster import Cluster
from devstack.paths import REPO
from devstack.process import Process, free_port
from devstack.servers import Postgres
from tests.schema_helpers import schema_drift

PASSWORD = "correct horse 42"
UPGRADE = "alembic -c migrations/user/alembic.ini upgrade head"

if TYPE_CHECKING:
    Stub = user_pb2_grpc.UserServiceAsyncStub
else:
    Stub = user_pb2_grpc.UserServiceStub


# --- helpers --------------------------------------------------------------------------------


def new_email(prefix: str = "u") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}@example.com"


def auth(token: str) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {token}")]


async def fails(call: object) -> tuple[grpc.aio.AioRpcError, Problem]:
    """The error a call ends with, and its google.rpc details as the edge reads them."""
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call  # type: ignore[misc]
    return raised.value, problem_from_rpc_error(raised.value)


async def register(stub: Stub, email: str | None = None, password: str = PASSWORD) -> user_pb2.RegisterResponse:
    return await stub.Register(
        user_pb2.RegisterRequest(email=email or new_email(), password=password, display_name="Test User")
    )


def ip() -> str:
    """A client address of its own (a random /64 of the IPv6 documentation range),
    so the rate limits of one test never touch another."""
    a, b = uuid.uuid4().int % 0xFFFF, uuid.uuid4().int % 0xFFFF
    return f"2001:db8:{a:x}:{b:x}::1"


async def login(stub: Stub, email: str, password: str = PASSWORD, address: str = "") -> user_pb2.LoginResponse:
    return await stub.Login(user_pb2.LoginRequest(email=email, password=password, client_address=address or ip()))


def run_env(cluster: Cluster, database_url: str, **extra: str) -> dict[str, str]:
    """The environment of the cluster's user_svc (test overrides included), on another
    database and without the shared instance's metrics port."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("SHOP_")}
    own = {"SHOP_DATABASE_URL": database_url, "SHOP_METRICS_PORT": "0"}
    return {**env, **cluster.service_env_for("user_svc"), **own, **extra}


@dataclass
class Ran:
    code: int
    out: str
    err: str


async def run(argv: list[str], env: dict[str, str], seconds: float = 60) -> Ran:
    process = await asyncio.create_subprocess_exec(
        *argv,
        env=env,
        cwd=REPO,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), seconds)
    assert process.returncode is not None
    return Ran(process.returncode, out.decode(), err.decode())


async def create_admin(cluster: Cluster, *args: str, password: str | None = None) -> Ran:
    extra = {"SHOP_ADMIN_PASSWORD": password} if password is not None else {}
    env = run_env(cluster, cluster.postgres.url("shop_user"), **extra)
    return await run([sys.executable, "-m", "user_svc", "create-admin", *args], env)


def create_database(postgres: Postgres, prefix: str) -> str:
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(postgres.dsn("postgres"), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return name


def decode_segment(segment: str) -> dict[str, object]:
    return dict(json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))))


def encode_segment(data: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")


# --- fixtures ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def stack(services: Callable[..., Cluster]) -> Cluster:
    """The local cluster with the shared user_svc running."""
    return services("user_svc")


@pytest.fixture(scope="module")
async def stub(stack: Cluster) -> AsyncIterator[Stub]:
    async with stack.channel("user_svc") as channel:
        yield user_pb2_grpc.UserServiceStub(channel)


@pytest.fixture(scope="module")
async def admin(stack: Cluster, stub: Stub) -> user_pb2.LoginResponse:
    """An admin of the shared instance, made by the real create-admin command."""
    email = new_email("admin")
    ran = await create_admin(stack, "--email", email, password=PASSWORD)
    assert ran.code == 0, ran.err
    return await login(stub, email)


@dataclass
class Private:
    addr: str
    database: str
    admin_email: str
    admin_password: str
    stub: Stub


@pytest.fixture(scope="module")
async def private(stack: Cluster) -> AsyncIterator[Private]:
    """A user_svc of its own: fresh migrated database, a bootstrap admin from
    configuration, and login limits with 2-second windows."""
    database = create_database(stack.postgres, "shop_user_private")
    url = stack.postgres.url(database)
    migrated = await run(
        [sys.executable, "-m", "alembic", "-c", "migrations/user/alembic.ini", "upgrade", "head"], run_env(stack, url)
    )
    assert migrated.code == 0, migrated.err
    port = free_port()
    admin_email, admin_password = new_email("root"), "bootstrap secret 7"
    env = run_env(
        stack,
        url,
        SHOP_PORT=str(port),
        SHOP_BOOTSTRAP_ADMIN_EMAIL=admin_email.upper(),
        SHOP_BOOTSTRAP_ADMIN_PASSWORD=admin_password,
        SHOP_LOGIN_PAIR_LIMIT="3",
        SHOP_LOGIN_PAIR_WINDOW="2",
        SHOP_LOGIN_ACCOUNT_LIMIT="3",
        SHOP_LOGIN_ACCOUNT_WINDOW="2",
        SHOP_LOGIN_ADDRESS_LIMIT="5",
        SHOP_LOGIN_ADDRESS_WINDOW="2",
    )
    process = Process(
        "user_svc-private",
        [sys.executable, "-m", "user_svc"],
        stack.root / "logs" / "user_svc-private.log",
        env=env,
        cwd=REPO,
    ).start()

    try:
        await asyncio.to_thread(process.wait_ready, lambda: stack.grpc_serving(f"127.0.0.1:{port}"), 30)
        async with stack.channel(f"127.0.0.1:{port}") as channel:
            yield Private(
                f"127.0.0.1:{port}", database, admin_email, admin_password, user_pb2_grpc.UserServiceStub(channel)
            )
    finally:
        process.stop()


# --- registration and sign-in ------------------------------------------------------------------


async def test_register_normalizes_email_and_signs_in(stub: Stub) -> None:
    local = f"Mixed.Case-{uuid.uuid4().hex[:8]}"
    registered = await stub.Register(
        user_pb2.RegisterRequest(email=f"  {local}@Example.COM ", password=PASSWORD, display_name="  Ann  ")
    )
    assert registered.user.email == f"{local.lower()}@example.com"
    assert registered.user.display_name == "Ann"
    assert registered.user.role == user_pb2.ROLE_CUSTOMER
    assert uuid.UUID(registered.user.id)
    tokens = registered.tokens
    assert tokens.token_type == "Bearer" and tokens.expires_in == 900
    assert tokens.refresh_token and tokens.refresh_token_expires_at.seconds > time.time() + 29 * 86400
    me = await stub.GetMe(user_pb2.GetMeRequest(), metadata=auth(tokens.access_token))
    assert me.user.id == registered.user.id


async def test_duplicate_email_case_insensitive(stub: Stub) -> None:
    email = new_email("dup")
    await register(stub, email)
    error, _ = await fails(register(stub, "  " + email.upper()))
    assert error.code() == grpc.StatusCode.ALREADY_EXISTS


async def test_register_validation_names_the_fields(stub: Stub) -> None:
    error, problem = await fails(
        stub.Register(user_pb2.RegisterRequest(email="nope", password="onlyletterspassword", display_name=""))
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert problem.reason == "VALIDATION_FAILED"
    fields = {v.field: v.description for v in problem.errors}
    assert set(fields) == {"email", "password", "display_name"}
    assert fields["password"].startswith("only letters")


async def test_wrong_password_and_unknown_email_look_the_same(stub: Stub) -> None:
    email = new_email("login")
    await register(stub, email)
    wrong, wrong_problem = await fails(login(stub, email, "wrong password 1"))
    unknown, unknown_problem = await fails(login(stub, new_email("nobody"), PASSWORD))
    for error, problem in ((wrong, wrong_problem), (unknown, unknown_problem)):
        assert error.code() == grpc.StatusCode.UNAUTHENTICATED
        assert problem.reason == "INVALID_CREDENTIALS"
    assert wrong.details() == unknown.details() == "wrong email or password"
    signed_in = await login(stub, email.upper())
    assert signed_in.user.email == email


# --- sessions: refresh, reuse, logout, password change ---------------------------------------------


async def test_refresh_rotates_and_reuse_revokes_the_family(stub: Stub) -> None:
    email = new_email("rotate")
    first = (await register(stub, email)).tokens
    other_session = (await login(stub, email)).tokens

    second = (await stub.Refresh(user_pb2.RefreshRequest(refresh_token=first.refresh_token))).tokens
    assert second.refresh_token != first.refresh_token
    await stub.GetMe(user_pb2.GetMeRequest(), metadata=auth(second.access_token))
    third = (await stub.Refresh(user_pb2.RefreshRequest(refresh_token=second.refresh_token))).tokens

    # The rotated first token comes back: reuse.  Its whole family ends, the newest token too.
    error, problem = await fails(stub.Refresh(user_pb2.RefreshRequest(refresh_token=first.refresh_token)))
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    assert problem.reason == "REFRESH_TOKEN_REUSED"
    error, problem = await fails(stub.Refresh(user_pb2.RefreshRequest(refresh_token=third.refresh_token)))
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    # Another sign-in of the same account is another family: untouched.
    await stub.Refresh(user_pb2.RefreshRequest(refresh_token=other_session.refresh_token))


async def test_concurrent_refresh_with_one_token_succeeds_once(stub: Stub) -> None:
    token = (await register(stub)).tokens.refresh_token
    results = await asyncio.gather(
        *(stub.Refresh(user_pb2.RefreshRequest(refresh_token=token)) for _ in range(6)), return_exceptions=True
    )
    successes = [r for r in results if isinstance(r, user_pb2.RefreshResponse)]
    failures = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
    assert len(successes) == 1
    assert len(failures) == 5
    assert {f.code() for f in failures} == {grpc.StatusCode.UNAUTHENTICATED}


async def test_unknown_refresh_token(stub: Stub) -> None:
    error, problem = await fails(stub.Refresh(user_pb2.RefreshRequest(refresh_token="not-a-token")))
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    assert problem.reason == "INVALID_TOKEN"


async def test_logout_ends_one_session_and_is_idempotent(stub: Stub) -> None:
    email = new_email("logout")
    session = (await register(stub, email)).tokens
    other = (await login(stub, email)).tokens
    await stub.Logout(user_pb2.LogoutRequest(refresh_token=session.refresh_token))
    await stub.Logout(user_pb2.LogoutRequest(refresh_token=session.refresh_token))
    await stub.Logout(user_pb2.LogoutRequest(refresh_token="never-issued"))
    error, _ = await fails(stub.Refresh(user_pb2.RefreshRequest(refresh_token=session.refresh_token)))
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    other = (await stub.Refresh(user_pb2.RefreshRequest(refresh_token=other.refresh_token))).tokens

    error, _ = await fails(stub.Logout(user_pb2.LogoutRequest(all_sessions=True)))
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    third = (await login(stub, email)).tokens
    await stub.Logout(user_pb2.LogoutRequest(all_sessions=True), metadata=auth(third.access_token))
    for token in (other.refresh_token, third.refresh_token):
        error, _ = await fails(stub.Refresh(user_pb2.RefreshRequest(refresh_token=token)))
        assert error.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_change_password_revokes_other_sessions(stub: Stub) -> None:
    email = new_email("change")
    mine = (await register(stub, email)).tokens
    elsewhere = (await login(stub, email)).tokens
    new_password = "battery staple 99"

    error, problem = await fails(
        stub.ChangePassword(
            user_pb2.ChangePasswordRequest(current_password="not it at all 1", new_password=new_password),
            metadata=auth(mine.access_token),
        )
    )
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED and problem.reason == "INVALID_CREDENTIALS"
    error, problem = await fails(
        stub.ChangePassword(
            user_pb2.ChangePasswordRequest(current_password=PASSWORD, new_password="1234567890"),
            metadata=auth(mine.access_token),
        )
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert [v.field for v in problem.errors] == ["new_password"]

    fresh = (
        await stub.ChangePassword(
            user_pb2.ChangePasswordRequest(current_password=PASSWORD, new_password=new_password),
            metadata=auth(mine.access_token),
        )
    ).tokens
    for old in (mine.refresh_token, elsewhere.refresh_token):
        error, _ = await fails(stub.Refresh(user_pb2.RefreshRequest(refresh_token=old)))
        assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    await stub.Refresh(user_pb2.RefreshRequest(refresh_token=fresh.refresh_token))
    error, _ = await fails(login(stub, email, PASSWORD))
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    await login(stub, email, new_password)


# --- access tokens --------------------------------------------------------------------------------


async def test_expired_and_tampered_access_tokens_are_rejected(stack: Cluster, stub: Stub) -> None:
    registered = await register(stub)
    user_id = registered.user.id
    key = serialization.load_pem_private_key((stack.keys / "jwt_private.pem").read_bytes(), None)
    signer = TokenSigner(key, issuer="shop", audience="shop", ttl=60)  # type: ignore[arg-type]

    fresh, _ = signer.sign(user_id, "customer")
    assert (await stub.GetMe(user_pb2.GetMeRequest(), metadata=auth(fresh))).user.id == user_id
    expired, _ = signer.sign(user_id, "customer", now=time.time() - 3600)
    error, problem = await fails(stub.GetMe(user_pb2.GetMeRequest(), metadata=auth(expired)))
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    assert problem.reason == "INVALID_TOKEN" and "expired" in (error.details() or "")

    # Same signature, payload changed to role=admin.
    header, payload, signature = registered.tokens.access_token.split(".")
    claims = decode_segment(payload)
    forged = ".".join([header, encode_segment({**claims, "role": "admin"}), signature])
    for call in (
        stub.GetMe(user_pb2.GetMeRequest(), metadata=auth(forged)),
        stub.ListUsers(user_pb2.ListUsersRequest(), metadata=auth(forged)),
    ):
        error, problem = await fails(call)
        assert error.code() == grpc.StatusCode.UNAUTHENTICATED
        assert problem.reason == "INVALID_TOKEN"


async def test_jwks_verifies_issued_tokens(stub: Stub) -> None:
    tokens = (await register(stub)).tokens
    jwks = await stub.GetJwks(user_pb2.GetJwksRequest())
    assert jwks.max_age_seconds > 0
    keys = json.loads(jwks.jwks_json)["keys"]
    kid = jwt.get_unverified_header(tokens.access_token)["kid"]
    entry = next(k for k in keys if k["kid"] == kid)
    assert entry["kty"] == "OKP" and entry["crv"] == "Ed25519" and entry["alg"] == "EdDSA" and "d" not in entry
    claims = jwt.decode(tokens.access_token, jwt.PyJWK(entry).key, algorithms=["EdDSA"], audience="shop")
    assert claims["role"] == "customer"


# --- profile ---------------------------------------------------------------------------------------


def _address(**change: str) -> address_pb2.Address:
    fields = {
        "recipient_name": "Ann Example",
        "line1": "Hauptstr. 1",
        "city": "Berlin",
        "postal_code": "10115",
        "country_code": "de",
    }
    return address_pb2.Address(**{**fields, **change})


async def test_update_profile_under_a_field_mask(stub: Stub) -> None:
    registered = await register(stub)
    token = registered.tokens.access_token
    updated = (
        await stub.UpdateProfile(
            user_pb2.UpdateProfileRequest(
                profile=user_pb2.Profile(
                    display_name="Ann E.",
                    phone="+49 30 1234567",
                    shipping_addresses=[user_pb2.SavedAddress(label="Home", is_default=True, address=_address())],
                ),
                update_mask=FieldMask(paths=["phone", "shipping_addresses"]),
            ),
            metadata=auth(token),
        )
    ).user
    assert updated.display_name == "Test User"  # not in the mask
    assert updated.phone == "+49301234567"
    [home] = updated.shipping_addresses
    assert home.id and home.address.country_code == "DE" and home.is_default

    again = (
        await stub.UpdateProfile(
            user_pb2.UpdateProfileRequest(
                profile=user_pb2.Profile(
                    shipping_addresses=[home, user_pb2.SavedAddress(label="Office", address=_address(city="Hamburg"))]
                ),
                update_mask=FieldMask(paths=["shipping_addresses"]),
            ),
            metadata=auth(token),
        )
    ).user
    assert [a.label for a in again.shipping_addresses] == ["Home", "Office"]
    assert again.shipping_addresses[0].id == home.id
    me = (await stub.GetMe(user_pb2.GetMeRequest(), metadata=auth(token))).user
    assert list(me.shipping_addresses) == list(again.shipping_addresses)

    error, problem = await fails(
        stub.UpdateProfile(
            user_pb2.UpdateProfileRequest(
                profile=user_pb2.Profile(
                    shipping_addresses=[user_pb2.SavedAddress(address=_address(country_code="XX", postal_code=""))]
                ),
                update_mask=FieldMask(paths=["shipping_addresses"]),
            ),
            metadata=auth(token),
        )
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert {v.field for v in problem.errors} == {
        "profile.shipping_addresses[0].address.country_code",
        "profile.shipping_addresses[0].address.postal_code",
    }
    error, problem = await fails(
        stub.UpdateProfile(user_pb2.UpdateProfileRequest(update_mask=FieldMask(paths=["email"])), metadata=auth(token))
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert [v.field for v in problem.errors] == ["update_mask"]
    # Nothing of the refused updates was stored.
    assert list((await stub.GetMe(user_pb2.GetMeRequest(), metadata=auth(token))).user.shipping_addresses) == list(
        again.shipping_addresses
    )


# --- administration ---------------------------------------------------------------------------------


async def test_admin_lists_users_in_pages(stub: Stub, admin: user_pb2.LoginResponse) -> None:
    prefix = f"page-{uuid.uuid4().hex[:8]}"
    created = [(await register(stub, f"{prefix}-{i}@example.com")).user.id for i in range(5)]
    token = admin.tokens.access_token

    async def page(page_token: str = "", size: int = 2) -> user_pb2.ListUsersResponse:
        return await stub.ListUsers(
            user_pb2.ListUsersRequest(page=paging_pb2.PageRequest(page_size=size, page_token=page_token), query=prefix),
            metadata=auth(token),
        )

    first = await page()
    assert len(first.users) == 2 and first.page.next_page_token
    late = (await register(stub, f"{prefix}-late@example.com")).user.id  # arrives between pages
    seen = [u.id for u in first.users]
    next_token = first.page.next_page_token
    while next_token:
        response = await page(next_token)
        seen += [u.id for u in response.users]
        next_token = response.page.next_page_token
    assert seen == list(reversed(created))  # newest first, no duplicates, no gaps
    assert late not in seen
    assert [u.id for u in (await page(size=10)).users] == [late, *reversed(created)]

    error, problem = await fails(
        stub.ListUsers(
            user_pb2.ListUsersRequest(page=paging_pb2.PageRequest(page_size=2, page_token=first.page.next_page_token)),
            metadata=auth(token),
        )
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert [v.field for v in problem.errors] == ["page.page_token"]

    admins = await stub.ListUsers(
        user_pb2.ListUsersRequest(role=user_pb2.ROLE_ADMIN, page=paging_pb2.PageRequest(page_size=100)),
        metadata=auth(token),
    )
    assert admin.user.id in {u.id for u in admins.users}
    assert {u.role for u in admins.users} == {user_pb2.ROLE_ADMIN}


async def test_customer_may_not_administer(stub: Stub, admin: user_pb2.LoginResponse) -> None:
    customer = await register(stub)
    token = customer.tokens.access_token
    for call in (
        stub.ListUsers(user_pb2.ListUsersRequest(), metadata=auth(token)),
        stub.SetUserRole(
            user_pb2.SetUserRoleRequest(user_id=customer.user.id, role=user_pb2.ROLE_ADMIN), metadata=auth(token)
        ),
        stub.GetUser(user_pb2.GetUserRequest(user_id=admin.user.id), metadata=auth(token)),
        stub.BatchGetUsers(
            user_pb2.BatchGetUsersRequest(user_ids=[customer.user.id, admin.user.id]), metadata=auth(token)
        ),
    ):
        error, _ = await fails(call)
        assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    own = await stub.GetUser(user_pb2.GetUserRequest(user_id=customer.user.id), metadata=auth(token))
    assert own.user.email == customer.user.email


async def test_admin_sets_roles_and_reads_users(stub: Stub, admin: user_pb2.LoginResponse) -> None:
    token = admin.tokens.access_token
    customer = await register(stub)
    promoted = await stub.SetUserRole(
        user_pb2.SetUserRoleRequest(user_id=customer.user.id, role=user_pb2.ROLE_ADMIN), metadata=auth(token)
    )
    assert promoted.user.role == user_pb2.ROLE_ADMIN
    # The new role is in the next token.
    refreshed = (await stub.Refresh(user_pb2.RefreshRequest(refresh_token=customer.tokens.refresh_token))).tokens
    await stub.ListUsers(user_pb2.ListUsersRequest(), metadata=auth(refreshed.access_token))
    demoted = await stub.SetUserRole(
        user_pb2.SetUserRoleRequest(user_id=customer.user.id, role=user_pb2.ROLE_CUSTOMER), metadata=auth(token)
    )
    assert demoted.user.role == user_pb2.ROLE_CUSTOMER

    error, problem = await fails(
        stub.SetUserRole(user_pb2.SetUserRoleRequest(user_id=customer.user.id), metadata=auth(token))
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and [v.field for v in problem.errors] == ["role"]
    error, _ = await fails(
        stub.SetUserRole(
            user_pb2.SetUserRoleRequest(user_id=str(uuid.uuid4()), role=user_pb2.ROLE_ADMIN), metadata=auth(token)
        )
    )
    assert error.code() == grpc.StatusCode.NOT_FOUND

    got = await stub.GetUser(user_pb2.GetUserRequest(user_id=customer.user.id), metadata=auth(token))
    assert got.user.email == customer.user.email
    missing = str(uuid.uuid4())
    batch = await stub.BatchGetUsers(
        user_pb2.BatchGetUsersRequest(user_ids=[missing, customer.user.id, admin.user.id, "junk", customer.user.id]),
        metadata=auth(token),
    )
    assert [u.id for u in batch.users] == [customer.user.id, admin.user.id]
    assert list(batch.missing_ids) == [missing, "junk"]
    error, _ = await fails(stub.GetUser(user_pb2.GetUserRequest(user_id=missing), metadata=auth(token)))
    assert error.code() == grpc.StatusCode.NOT_FOUND


# --- the private instance: bootstrap admin, last admin, rate limits -----------------------------------


async def test_bootstrap_admin_and_last_admin_protection(private: Private) -> None:
    stub = private.stub
    root = await login(stub, private.admin_email, private.admin_password)
    assert root.user.role == user_pb2.ROLE_ADMIN  # created at start from configuration
    token = root.tokens.access_token

    error, problem = await fails(
        stub.SetUserRole(
            user_pb2.SetUserRoleRequest(user_id=root.user.id, role=user_pb2.ROLE_CUSTOMER), metadata=auth(token)
        )
    )
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert problem.reason == "LAST_ADMIN"

    # Two admins demoting each other at the same moment: one of them stays.
    other = await register(stub)
    await stub.SetUserRole(
        user_pb2.SetUserRoleRequest(user_id=other.user.id, role=user_pb2.ROLE_ADMIN), metadata=auth(token)
    )
    other_token = (await stub.Refresh(user_pb2.RefreshRequest(refresh_token=other.tokens.refresh_token))).tokens
    results = await asyncio.gather(
        stub.SetUserRole(
            user_pb2.SetUserRoleRequest(user_id=other.user.id, role=user_pb2.ROLE_CUSTOMER), metadata=auth(token)
        ),
        stub.SetUserRole(
            user_pb2.SetUserRoleRequest(user_id=root.user.id, role=user_pb2.ROLE_CUSTOMER),
            metadata=auth(other_token.access_token),
        ),
        return_exceptions=True,
    )
    assert sum(isinstance(r, user_pb2.SetUserRoleResponse) for r in results) == 1
    [refused] = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
    assert refused.code() == grpc.StatusCode.FAILED_PRECONDITION
    # (A role change shows in the next token: root's current token still says admin.)
    admins = await stub.ListUsers(user_pb2.ListUsersRequest(role=user_pb2.ROLE_ADMIN), metadata=auth(token))
    assert len(admins.users) == 1


async def test_login_limit_per_account_before_the_password_check(private: Private) -> None:
    stub = private.stub
    email = new_email("limited")
    await register(stub, email)
    for _ in range(3):  # SHOP_LOGIN_ACCOUNT_LIMIT=3 failures per 2 s (each from another address)
        error, _ = await fails(login(stub, email, "wrong password 1"))
        assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    # Limited before the password is looked at: the right one is refused too.
    error, problem = await fails(login(stub, email, PASSWORD))
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert problem.reason == "RATE_LIMITED"
    assert problem.retry_after is not None and 0 < problem.retry_after <= 2.0
    await asyncio.sleep(problem.retry_after + 0.1)
    assert (await login(stub, email, PASSWORD)).user.email == email


async def test_login_limit_per_client_address(private: Private) -> None:
    stub = private.stub
    email = new_email("address")
    await register(stub, email)
    address = ip()
    for _ in range(5):  # SHOP_LOGIN_ADDRESS_LIMIT=5 attempts of any outcome per 2 s
        await login(stub, email, PASSWORD, address)
    error, problem = await fails(login(stub, email, PASSWORD, address))
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and problem.reason == "RATE_LIMITED"
    assert problem.retry_after is not None and 0 < problem.retry_after <= 2.0
    await login(stub, email, PASSWORD, ip())  # another address is not limited
    await asyncio.sleep(problem.retry_after + 0.1)
    await login(stub, email, PASSWORD, address)


async def test_login_limit_falls_back_to_the_peer_address(private: Private) -> None:
    stub = private.stub
    email = new_email("peer")
    await register(stub, email)
    results = []
    for _ in range(6):  # no client_address: the gRPC peer (127.0.0.1) is the address
        try:
            await stub.Login(user_pb2.LoginRequest(email=email, password=PASSWORD))
            results.append("ok")
        except grpc.aio.AioRpcError as error:
            results.append(problem_from_rpc_error(error).reason or "")
    assert results[-1] == "RATE_LIMITED"
    await asyncio.sleep(2.1)  # leave the loopback address usable


async def test_a_client_address_from_another_caller_than_the_edge_is_ignored(private: Private, stack: Cluster) -> None:
    """Only the edge's client_address is believed: order_svc's certificate naming a fresh
    address on each attempt still spends its own (the gRPC peer's) budget."""
    email = new_email("forged")
    await register(private.stub, email)
    results = []
    async with stack.channel(private.addr, identity="order_svc") as channel:
        other: Stub = user_pb2_grpc.UserServiceStub(channel)
        for _ in range(6):  # SHOP_LOGIN_ADDRESS_LIMIT=5 per 2 s; a new made-up address each time
            try:
                await login(other, email, PASSWORD, ip())
                results.append("ok")
            except grpc.aio.AioRpcError as error:
                results.append(problem_from_rpc_error(error).reason or "")
    assert results == ["ok"] * 5 + ["RATE_LIMITED"]
    # The edge's certificate with the same kind of address is believed (its own budget).
    assert (await login(private.stub, email, PASSWORD, ip())).user.email == email
    await asyncio.sleep(2.1)  # leave the loopback address usable


# --- commands ---------------------------------------------------------------------------------------


async def test_create_admin_command(stack: Cluster, stub: Stub) -> None:
    email = new_email("ops")
    ran = await create_admin(stack, "--email", email.upper(), password="operator pass 1")
    assert ran.code == 0, ran.err
    assert f"created admin {email}" in ran.out
    assert (await login(stub, email, "operator pass 1")).user.role == user_pb2.ROLE_ADMIN

    # An existing customer is promoted and keeps its password.
    customer = new_email("promote")
    await register(stub, customer)
    ran = await create_admin(stack, "--email", customer)
    assert ran.code == 0, ran.err
    assert "promoted" in ran.out
    assert (await login(stub, customer)).user.role == user_pb2.ROLE_ADMIN

    # No password from anywhere (no terminal, no SHOP_ADMIN_PASSWORD): nothing is created.
    nobody = new_email("nopass")
    ran = await create_admin(stack, "--email", nobody)
    assert ran.code != 0 and "SHOP_ADMIN_PASSWORD" in ran.err
    ran = await create_admin(stack, "--email", nobody, password="short")
    assert ran.code != 0 and "too short" in ran.err
    error, _ = await fails(login(stub, nobody, "short"))
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_refuses_to_start_on_an_unmigrated_database(stack: Cluster, postgres: Postgres) -> None:
    empty = create_database(postgres, "shop_user_empty")
    env = run_env(stack, postgres.url(empty), SHOP_PORT=str(free_port()))
    ran = await run([sys.executable, "-m", "user_svc"], env, seconds=60)
    assert ran.code != 0
    assert UPGRADE in ran.err
    assert "not migrated" in ran.err

    # A database migrated by code newer than this one is refused too.
    with psycopg.connect(postgres.dsn(empty), autocommit=True) as conn:
        conn.execute("CREATE TABLE alembic_version (version_num varchar(32) PRIMARY KEY)")
        conn.execute("INSERT INTO alembic_version VALUES ('9999_from_the_future')")
    ran = await run([sys.executable, "-m", "user_svc"], env, seconds=60)
    assert ran.code != 0
    assert "9999_from_the_future" in ran.err and UPGRADE in ran.err


async def test_migrations_match_the_store_tables(stack: Cluster) -> None:
    from user_svc.store import metadata

    assert schema_drift(stack.postgres.url("shop_user"), metadata) == []


async def test_grpcurl_lists_and_registers(stack: Cluster, stub: Stub) -> None:
    target = stack.addr("user_svc")
    listed = await run(stack.grpcurl(target, "list"), dict(os.environ))
    assert listed.code == 0, listed.err
    assert "shop.user.v1.UserService" in listed.out.split()
    email = new_email("grpcurl")
    body = json.dumps({"email": email, "password": PASSWORD, "displayName": "From grpcurl"})
    called = await run(stack.grpcurl("-d", body, target, "shop.user.v1.UserService/Register"), dict(os.environ))
    assert called.code == 0, called.err
    answer = json.loads(called.out)
    assert answer["user"]["email"] == email
    assert answer["tokens"]["refresh_token"], answer["tokens"].keys()
    assert (await login(stub, email)).user.display_name == "From grpcurl"


async def test_migrations_go_down_and_up_and_print_offline_sql(stack: Cluster, postgres: Postgres) -> None:
    database = create_database(postgres, "shop_user_updown")
    env = run_env(stack, postgres.url(database))
    alembic = [sys.executable, "-m", "alembic", "-c", "migrations/user/alembic.ini"]
    for step in (["upgrade", "head"], ["downgrade", "base"], ["upgrade", "head"]):
        ran = await run([*alembic, *step], env)
        assert ran.code == 0, ran.err
    with psycopg.connect(postgres.dsn(database)) as conn:
        tables = {row[0] for row in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
        version = conn.execute("SELECT version_num FROM alembic_version").fetchone()
    assert {"users", "refresh_tokens", "alembic_version"} <= tables
    assert version == ("0001",)
    offline = await run([*alembic, "upgrade", "head", "--sql"], env)
    assert offline.code == 0, offline.err
    assert "CREATE TABLE users" in offline.out and "CREATE UNIQUE INDEX users_email_key" in offline.out
