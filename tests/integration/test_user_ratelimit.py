"""user_svc's login limiter against the real Redis: atomic under concurrency,
forgiving successes, windows that recover, and failing closed without Redis."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from common.clients import redis_client
from common.errors import ResourceExhausted, Unavailable
from devstack.process import free_port
from devstack.servers import Redis
from user_svc.ratelimit import Limits, LoginLimiter


def limiter(url: str, **limits: float) -> LoginLimiter:
    defaults = {"account_limit": 5, "account_window": 60.0, "address_limit": 1000, "address_window": 60.0}
    return LoginLimiter(redis_client(url), Limits(**{**defaults, **limits}), prefix=f"test:{uuid.uuid4().hex}")  # type: ignore[arg-type]


async def test_concurrent_attempts_never_pass_the_limit(redis_server: Redis) -> None:
    limits = limiter(redis_server.url())
    results = await asyncio.gather(
        *(limits.begin("victim@example.com", f"198.51.100.{i}") for i in range(25)), return_exceptions=True
    )
    admitted = [r for r in results if not isinstance(r, BaseException)]
    refused = [r for r in results if isinstance(r, ResourceExhausted)]
    assert len(admitted) == 5 and len(refused) == 20
    assert all(r.reason == "RATE_LIMITED" and r.retry_after and 0 < r.retry_after <= 60 for r in refused)


async def test_successes_are_forgiven_per_account(redis_server: Redis) -> None:
    limits = limiter(redis_server.url(), account_limit=2)
    for _ in range(10):
        attempt = await limits.begin("happy@example.com", None)
        await limits.succeeded(attempt)
    await limits.begin("happy@example.com", None)
    await limits.begin("happy@example.com", None)
    with pytest.raises(ResourceExhausted):
        await limits.begin("happy@example.com", None)
    await limits.begin("someone-else@example.com", None)  # per account


async def test_address_counts_every_attempt_and_recovers(redis_server: Redis) -> None:
    limits = limiter(redis_server.url(), address_limit=3, address_window=1.0)
    for i in range(3):
        await limits.succeeded(await limits.begin(f"user{i}@example.com", "192.0.2.1"))
    with pytest.raises(ResourceExhausted) as raised:
        await limits.begin("user9@example.com", "192.0.2.1")
    await limits.begin("user9@example.com", "192.0.2.2")  # another address
    await limits.begin("user9@example.com", None)  # an account-only check ignores addresses
    assert raised.value.retry_after is not None and 0 < raised.value.retry_after <= 1.0
    await asyncio.sleep(raised.value.retry_after + 0.05)
    await limits.begin("user9@example.com", "192.0.2.1")


async def test_without_redis_sign_in_fails_closed() -> None:
    limits = limiter(f"redis://127.0.0.1:{free_port()}/0")
    with pytest.raises(Unavailable) as raised:
        await limits.begin("anyone@example.com", "192.0.2.1")
    assert raised.value.reason == "DEPENDENCY_UNAVAILABLE"
