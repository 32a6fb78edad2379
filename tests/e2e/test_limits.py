"""Limits on every costly route, through the edge against the real servers: each
refusal is 429 problem+json with Retry-After, RateLimit-Policy and RateLimit; sign-in
and sign-up fail closed (503 with Retry-After) while their Redis is down; password
hashing has a bounded queue (503 "busy", never 504).

Per-user limits are the suite's (tests/conftest.py TEST_OVERRIDES), reached by fresh
users.  Per-address sign-up limits and the hashing queue need a user_svc of their
own (a small budget, production-like argon2 cost, a short queue) behind an edge of
their own; the Redis outage gets a Redis, user_svc and edge of its own, so the
session's Redis is never stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import psycopg
import pytest

from devstack.cluster import Cluster
from devstack.paths import REPO
from devstack.process import Process, free_port
from devstack.servers import Redis
from tests.e2e.helpers import PASSWORD, assert_problem, bearer, register, unique_email

ADDRESS = {"recipient_name": "Ann Buyer", "line1": "1 Main St", "city": "Berlin", "postal_code": "10115",
           "country_code": "DE"}  # fmt: skip

# The suite's limits (tests/conftest.py TEST_OVERRIDES).
ORDERS_PER_MINUTE, UNPAID_ORDERS, COMMENTS_PER_MINUTE, WEBHOOKS_PER_MINUTE, STREAMS = 15, 6, 200, 50, 2
LOGIN_PAIR = 5


def address() -> str:
    """A client address of its own (the test edges believe X-Forwarded-For)."""
    return f"2001:db8:{uuid.uuid4().int % 0xFFFF:x}:{uuid.uuid4().int % 0xFFFF:x}::1"


def from_address(where: str) -> dict[str, str]:
    return {"X-Forwarded-For": where}


def assert_limited(response: httpx.Response, policy: str, quota: int, window: int | None) -> dict[str, Any]:
    """A 429 problem with Retry-After and the draft's RateLimit-Policy / RateLimit fields."""
    problem = assert_problem(response, 429)
    assert problem["type"] == "urn:shop:problem:rate_limited"
    retry_after = int(response.headers["retry-after"])
    assert retry_after >= 1
    expected_policy = f'"{policy}";q={quota}' + (f";w={window}" if window else "")
    assert response.headers["ratelimit-policy"] == expected_policy
    state = re.fullmatch(rf'"{re.escape(policy)}";r=(\d+);t=(\d+)', response.headers["ratelimit"])
    assert state is not None, response.headers["ratelimit"]
    assert int(state.group(1)) == 0 and int(state.group(2)) == retry_after
    return problem


# --- processes of the tests' own -------------------------------------------------------------------


@dataclass
class Own:
    """A user_svc and an edge of the test's own (the edge calls the cluster's other services)."""

    edge: str
    processes: list[Process]

    def stop(self) -> None:
        for process in reversed(self.processes):
            process.stop()


def start_own(cluster: Cluster, label: str, user_env: dict[str, str]) -> Own:
    user_port, edge_port = free_port(), free_port()
    user = Process(
        f"user_svc-{label}",
        [sys.executable, "-m", "user_svc"],
        cluster.root / "logs" / f"user_svc-{label}.log",
        env={**cluster.service_env_for("user_svc"), "SHOP_PORT": str(user_port), "SHOP_METRICS_PORT": "0", **user_env},
        cwd=REPO,
    ).start()
    processes = [user]
    try:
        user.wait_ready(lambda: cluster.service_ready("user_svc", user_port), 30)
        edge = Process(
            f"edge-{label}",
            [sys.executable, "-m", "edge"],
            cluster.root / "logs" / f"edge-{label}.log",
            env={
                **cluster.service_env_for("edge"),
                "SHOP_PORT": str(edge_port),
                "SHOP_METRICS_PORT": "0",
                "SHOP_USER_SVC_ADDR": f"127.0.0.1:{user_port}",
            },
            cwd=REPO,
        ).start()
        processes.append(edge)
        edge.wait_ready(lambda: cluster.service_ready("edge", edge_port), 30)
    except BaseException:
        Own("", processes).stop()
        raise
    return Own(f"http://127.0.0.1:{edge_port}", processes)


def own_database(cluster: Cluster) -> str:
    """A fresh user database, migrated; its URL."""
    name = f"shop_user_limits_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(cluster.postgres.dsn("postgres"), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = cluster.postgres.url(name)
    migrated = subprocess.run(
        [sys.executable, "-m", "alembic", "-c", "migrations/user/alembic.ini", "upgrade", "head"],
        env={**cluster.service_env_for("user_svc"), "SHOP_DATABASE_URL": url},
        cwd=REPO, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert migrated.returncode == 0, migrated.stderr
    return name


# --- fixtures ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def stack(services: Callable[..., Cluster]) -> Cluster:
    return services("user_svc", "product_svc", "order_svc", "comment_svc", "notify_svc", "edge")


@dataclass
class Limited:
    edge: str
    database: str


@pytest.fixture(scope="module")
def limited(stack: Cluster) -> Iterator[Limited]:
    """A user_svc on a database of its own with 3 registrations per address and
    minute, 3 wrong passwords per account and address a minute, production-like
    argon2 (t=3, 64 MiB, p=4) with one hashing slot, one waiting place and one
    second of waiting: past that, 503 busy."""
    database = own_database(stack)
    own = start_own(
        stack,
        "limited",
        {
            "SHOP_DATABASE_URL": stack.postgres.url(database),
            "SHOP_REGISTER_ADDRESS_LIMIT": "3",
            "SHOP_REGISTER_ADDRESS_WINDOW": "60",
            "SHOP_LOGIN_PAIR_LIMIT": "3",
            "SHOP_LOGIN_PAIR_WINDOW": "60",
            "SHOP_LOGIN_ACCOUNT_LIMIT": "100",
            "SHOP_LOGIN_ACCOUNT_WINDOW": "60",
            "SHOP_ARGON2_TIME_COST": "3",
            "SHOP_ARGON2_MEMORY_KIB": str(64 * 1024),
            "SHOP_ARGON2_PARALLELISM": "4",
            "SHOP_HASH_CONCURRENCY": "1",
            "SHOP_HASH_QUEUE": "1",
            "SHOP_HASH_QUEUE_WAIT": "1",
        },
    )
    try:
        yield Limited(own.edge, database)
    finally:
        own.stop()


@dataclass
class RedisOwn:
    edge: str
    redis: Redis


@pytest.fixture(scope="module")
def own_redis(stack: Cluster) -> Iterator[RedisOwn]:
    """A Redis, user_svc and edge of their own: the Redis is stopped by a test."""
    redis = Redis(stack.root / "limits" / "redis")  # its log: limits/logs/redis.log
    redis.unsafe_fast_storage = True
    redis.start().wait()
    own: Own | None = None
    try:
        own = start_own(stack, "own-redis", {"SHOP_REDIS_URL": redis.url()})
        yield RedisOwn(own.edge, redis)
    finally:
        if own is not None:
            own.stop()
        redis.stop()


# --- sign-up and sign-in ------------------------------------------------------------------------------


def new_account(password: str = PASSWORD) -> dict[str, str]:
    return {"email": unique_email(), "password": password, "display_name": "Ann"}


async def test_registrations_past_the_address_budget_get_429_with_the_headers(limited: Limited) -> None:
    async with httpx.AsyncClient(base_url=limited.edge, timeout=30) as http:
        here = from_address(address())
        for _ in range(3):  # SHOP_REGISTER_ADDRESS_LIMIT=3 per 60 s
            created = await http.post("/api/v1/auth/register", headers=here, json=new_account())
            assert created.status_code == 201, created.text
        refused = await http.post("/api/v1/auth/register", headers=here, json=new_account())
        problem = assert_limited(refused, "register", 3, 60)
        assert "registered from this address" in problem["detail"]
        elsewhere = await http.post("/api/v1/auth/register", headers=from_address(address()), json=new_account())
        assert elsewhere.status_code == 201, elsewhere.text


async def test_32_concurrent_registrations_answer_201_or_503_busy_never_504(limited: Limited) -> None:
    async with httpx.AsyncClient(base_url=limited.edge, timeout=30, limits=httpx.Limits(max_connections=64)) as http:
        replies = await asyncio.gather(
            *(
                http.post("/api/v1/auth/register", headers=from_address(address()), json=new_account())
                for _ in range(32)
            )
        )
    statuses = [reply.status_code for reply in replies]
    assert set(statuses) <= {201, 503}, statuses
    assert 201 in statuses and 503 in statuses, statuses  # one slot and one waiting place for 32 at once
    for reply in replies:
        if reply.status_code == 503:
            problem = assert_problem(reply, 503)
            assert problem["type"] == "urn:shop:problem:service_busy"
            assert "busy" in problem["detail"]
            assert int(reply.headers["retry-after"]) >= 1


async def test_a_victim_signs_in_while_an_attacker_hammers_the_account(http: httpx.AsyncClient) -> None:
    victim = await register(http)
    email = victim["user"]["email"]
    attacker = from_address(address())
    answers = []
    for _ in range(LOGIN_PAIR + 5):
        answers.append(
            await http.post("/api/v1/auth/login", headers=attacker, json={"email": email, "password": "guess-guess-1"})
        )
    statuses = [answer.status_code for answer in answers]
    assert statuses[:LOGIN_PAIR] == [401] * LOGIN_PAIR and 429 in statuses, statuses
    limited = next(answer for answer in answers if answer.status_code == 429)
    assert_limited(limited, "login-account-address", LOGIN_PAIR, 3)
    # The attacker is refused even with the right password; the owner elsewhere is not.
    signed_in = await http.post(
        "/api/v1/auth/login", headers=from_address(address()), json={"email": email, "password": PASSWORD}
    )
    assert signed_in.status_code == 200, signed_in.text


async def test_a_store_failure_is_not_a_wrong_password(limited: Limited, stack: Cluster) -> None:
    """Logins that fail because PostgreSQL refuses connections do not spend the
    account's failure budget: the right password works once it is back."""
    async with httpx.AsyncClient(base_url=limited.edge, timeout=30) as http:
        account = new_account()
        here = from_address(address())
        created = await http.post("/api/v1/auth/register", headers=here, json=account)
        assert created.status_code == 201, created.text
        wrong = {"email": account["email"], "password": "guess-guess-1"}
        for _ in range(2):  # SHOP_LOGIN_PAIR_LIMIT=3 wrong passwords per 60 s: one left
            assert_problem(await http.post("/api/v1/auth/login", headers=here, json=wrong), 401)
        with psycopg.connect(stack.postgres.dsn("postgres"), autocommit=True) as conn:
            conn.execute(f'ALTER DATABASE "{limited.database}" ALLOW_CONNECTIONS false')
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (limited.database,)
            )
        try:
            for _ in range(4):
                down = await http.post("/api/v1/auth/login", headers=here, json=wrong)
                assert_problem(down, 503)
        finally:
            with psycopg.connect(stack.postgres.dsn("postgres"), autocommit=True) as conn:
                conn.execute(f'ALTER DATABASE "{limited.database}" ALLOW_CONNECTIONS true')
        right = {"email": account["email"], "password": PASSWORD}
        signed_in = await http.post("/api/v1/auth/login", headers=here, json=right)
        for _ in range(50):  # the pool reconnects
            if signed_in.status_code != 503:
                break
            await asyncio.sleep(0.1)
            signed_in = await http.post("/api/v1/auth/login", headers=here, json=right)
        assert signed_in.status_code == 200, signed_in.text


async def test_sign_in_and_sign_up_fail_closed_while_redis_is_down(own_redis: RedisOwn) -> None:
    async with httpx.AsyncClient(base_url=own_redis.edge, timeout=30) as http:
        account = new_account()
        created = await http.post("/api/v1/auth/register", json=account)
        assert created.status_code == 201, created.text
        login = {"email": account["email"], "password": PASSWORD}
        assert (await http.post("/api/v1/auth/login", json=login)).status_code == 200
        own_redis.redis.stop()
        try:
            for refused in (
                await http.post("/api/v1/auth/login", json=login),
                await http.post("/api/v1/auth/register", json=new_account()),
            ):
                problem = assert_problem(refused, 503)
                assert problem["type"] == "urn:shop:problem:dependency_unavailable"
                assert "unavailable" in problem["detail"]
                assert int(refused.headers["retry-after"]) >= 1
                assert "access_token" not in refused.text
        finally:
            await asyncio.to_thread(own_redis.redis.restart)
        back = await http.post("/api/v1/auth/login", json=login)
        assert back.status_code == 200, back.text


# --- orders, comments, webhooks, streams (the suite's per-user limits) ------------------------------------


async def new_product(http: httpx.AsyncClient, admin: dict[str, Any], stock: int = 100) -> str:
    category = await http.post(
        "/api/v1/categories", headers=bearer(admin), json={"name": "Limits", "slug": f"l-{uuid.uuid4().hex[:8]}"}
    )
    assert category.status_code == 201, category.text
    product = await http.post(
        "/api/v1/products",
        headers=bearer(admin),
        json={"name": "Plenty", "category_id": category.json()["id"], "stock": stock,
              "price": {"amount_minor": 1000, "currency": "EUR"}},
    )  # fmt: skip
    assert product.status_code == 201, product.text
    return str(product.json()["id"])


async def test_unpaid_orders_are_capped_and_placements_rate_limited(
    http: httpx.AsyncClient, admin: dict[str, Any]
) -> None:
    product = await new_product(http, admin)
    buyer = await register(http)
    order = {"items": [{"product_id": product, "quantity": 1}], "shipping_address": ADDRESS}

    async def place() -> httpx.Response:
        return await http.post("/api/v1/orders", headers=bearer(buyer), json=order)

    placed = []
    for _ in range(UNPAID_ORDERS):
        created = await place()
        assert created.status_code == 201, created.text
        placed.append(created.json()["id"])
    held = await place()
    problem = assert_problem(held, 409)  # paying or cancelling one helps now; waiting does not
    assert problem["type"] == "urn:shop:problem:unpaid_orders_limit"
    assert f"at most {UNPAID_ORDERS}" in problem["detail"] and "pay or cancel" in problem["detail"]
    stock = int((await http.get(f"/api/v1/products/{product}")).json()["stock"])
    assert stock == 100 - UNPAID_ORDERS  # the refused order holds no stock

    async def cancel(order_id: str) -> None:
        cancelled = await http.post(f"/api/v1/orders/{order_id}/cancel", headers=bearer(buyer), json={})
        assert cancelled.status_code == 200, cancelled.text

    for order_id in placed:
        await cancel(order_id)
    for _ in range(ORDERS_PER_MINUTE - UNPAID_ORDERS):
        created = await place()
        assert created.status_code == 201, created.text
        await cancel(created.json()["id"])
    problem = assert_limited(await place(), "orders", ORDERS_PER_MINUTE, 60)
    assert "too many orders" in problem["detail"]


async def test_comments_past_the_budget_get_429(http: httpx.AsyncClient, admin: dict[str, Any]) -> None:
    product = await new_product(http, admin)
    author = await register(http)
    path = f"/api/v1/products/{product}/comments"
    for n in range(COMMENTS_PER_MINUTE):
        posted = await http.post(path, headers=bearer(author), json={"body": f"comment {n}"})
        assert posted.status_code == 201, posted.text
    refused = await http.post(path, headers=bearer(author), json={"body": "one more"})
    assert "too many comments" in assert_limited(refused, "comments", COMMENTS_PER_MINUTE, 60)["detail"]
    other = await register(http)
    assert (await http.post(path, headers=bearer(other), json={"body": "mine"})).status_code == 201


async def test_webhook_registrations_past_the_budget_get_429(http: httpx.AsyncClient) -> None:
    user = await register(http)
    hook = {"url": "http://127.0.0.1:65000/hook", "kinds": ["announcement"]}
    for _ in range(WEBHOOKS_PER_MINUTE):
        created = await http.post("/api/v1/webhooks", headers=bearer(user), json=hook)
        assert created.status_code == 201, created.text
        deleted = await http.delete(f"/api/v1/webhooks/{created.json()['webhook']['id']}", headers=bearer(user))
        assert deleted.status_code == 204
    refused = await http.post("/api/v1/webhooks", headers=bearer(user), json=hook)
    assert "too many webhooks" in assert_limited(refused, "webhooks", WEBHOOKS_PER_MINUTE, 60)["detail"]


async def test_live_streams_past_the_cap_are_refused(http: httpx.AsyncClient) -> None:
    reader = await register(http)
    async with contextlib.AsyncExitStack() as open_streams:
        streams = []
        for _ in range(STREAMS):
            stream = await open_streams.enter_async_context(
                http.stream("GET", "/api/v1/notifications/stream", headers=bearer(reader))
            )
            assert stream.status_code == 200
            streams.append(stream)
        for _ in range(2):  # a second and a third one past the cap
            refused = await http.get("/api/v1/notifications/stream", headers=bearer(reader))
            assert "live streams open" in assert_limited(refused, "streams", STREAMS, None)["detail"]
        other = await register(http)
        async with http.stream("GET", "/api/v1/notifications/stream", headers=bearer(other)) as theirs:
            assert theirs.status_code == 200  # per user
        await streams[0].aclose()
        deadline = asyncio.get_running_loop().time() + 10
        while True:  # the closed stream's place is free again once notify_svc sees it close
            async with http.stream("GET", "/api/v1/notifications/stream", headers=bearer(reader)) as again:
                if again.status_code == 200:
                    break
            assert asyncio.get_running_loop().time() < deadline, "the closed stream's place stayed taken"
            await asyncio.sleep(0.2)


# --- the contract -----------------------------------------------------------------------------------------


async def test_openapi_shows_the_limits(http: httpx.AsyncClient) -> None:
    document = (await http.get("/openapi.json")).json()
    limited = {
        ("/api/v1/auth/register", "post"),
        ("/api/v1/auth/login", "post"),
        ("/api/v1/orders", "post"),
        ("/api/v1/cart/checkout", "post"),
        ("/api/v1/products/{product_id}/comments", "post"),
        ("/api/v1/webhooks", "post"),
        ("/api/v1/notifications/stream", "get"),
    }
    for path, method in limited:
        responses = document["paths"][path][method]["responses"]
        assert set(responses["429"]["headers"]) == {"Retry-After", "RateLimit-Policy", "RateLimit"}, path
    for path in ("/api/v1/auth/register", "/api/v1/auth/login"):
        unavailable = document["paths"][path]["post"]["responses"]["503"]
        assert "Retry-After" in unavailable["headers"]
    assert set(document["components"]["headers"]) >= {"Retry-After", "RateLimit-Policy", "RateLimit"}


async def test_unpaid_cap_holds_for_orders_placed_at_once(http: httpx.AsyncClient, admin: dict[str, Any]) -> None:
    """Placements at the same moment are counted under the user's lock: never more than the cap."""
    product = await new_product(http, admin)
    buyer = await register(http)
    order = {"items": [{"product_id": product, "quantity": 1}], "shipping_address": ADDRESS}
    replies = await asyncio.gather(
        *(http.post("/api/v1/orders", headers=bearer(buyer), json=order) for _ in range(UNPAID_ORDERS + 4))
    )
    statuses = sorted(reply.status_code for reply in replies)
    assert statuses == [201] * UNPAID_ORDERS + [409] * 4, [reply.text for reply in replies]
    assert int((await http.get(f"/api/v1/products/{product}")).json()["stock"]) == 100 - UNPAID_ORDERS
