"""user_svc's sign-up and sign-in limits on the shared limiter, against the real Redis:
atomic under concurrency, failures counted per (account, address) pair and per
account, successes costing only the address budget, windows that recover, caps on
what is held at once, and failing closed without Redis."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from common.clients import redis_client
from common.errors import ResourceExhaustedError, UnavailableError
from common.ratelimit import Leases, Limiter, Window
from devstack.process import free_port
from devstack.servers import Redis
from user_svc.ratelimit import SignInLimiter, SignInLimits

WIDE = 1000


def limiter(url: str, **limits: tuple[int, int]) -> SignInLimiter:
    """Limits as (limit, window seconds); the ones not given are too wide to matter."""
    windows = {
        name: Window(name, *limits.get(name, (WIDE, 60)))
        for name in ("register_address", "login_address", "login_pair", "login_account")
    }
    return SignInLimiter(Limiter(redis_client(url), prefix=f"test:{uuid.uuid4().hex}"), SignInLimits(**windows))


async def test_concurrent_attempts_never_pass_the_limit(redis_server: Redis) -> None:
    limits = limiter(redis_server.url(), register_address=(5, 60))
    results = await asyncio.gather(*(limits.register("198.51.100.7") for _ in range(25)), return_exceptions=True)
    admitted = [r for r in results if r is None]
    refused = [r for r in results if isinstance(r, ResourceExhaustedError)]
    assert len(admitted) == 5 and len(refused) == 20
    for refusal in refused:
        assert refusal.reason == "RATE_LIMITED" and refusal.retry_after and 0 < refusal.retry_after <= 60
        assert refusal.quota is not None
        assert (refusal.quota.name, refusal.quota.limit, refusal.quota.window) == ("register_address", 5, 60)
    await limits.register("198.51.100.8")  # per address


async def test_wrong_passwords_limit_the_pair_not_the_owner_elsewhere(redis_server: Redis) -> None:
    limits = limiter(redis_server.url(), login_pair=(3, 60), login_account=(10, 60))
    victim, attacker, owner = "victim@example.com", "203.0.113.66", "192.0.2.10"
    for _ in range(3):
        await limits.begin_login(victim, attacker)
        await limits.wrong_password(victim, attacker)
    with pytest.raises(ResourceExhaustedError) as raised:
        await limits.begin_login(victim, attacker)
    assert raised.value.quota is not None and raised.value.quota.name == "login_pair"
    await limits.begin_login(victim, owner)  # the owner, elsewhere, is still let in
    await limits.begin_login("someone-else@example.com", attacker)  # per account


async def test_successes_cost_only_the_address_budget(redis_server: Redis) -> None:
    limits = limiter(redis_server.url(), login_pair=(2, 60), login_account=(2, 60), login_address=(12, 60))
    for _ in range(10):
        await limits.begin_login("happy@example.com", "192.0.2.20")  # right password: nothing more recorded
    await limits.wrong_password("happy@example.com", "192.0.2.20")
    await limits.begin_login("happy@example.com", "192.0.2.20")
    await limits.wrong_password("happy@example.com", "192.0.2.20")
    with pytest.raises(ResourceExhaustedError):  # two failures: the pair's budget
        await limits.begin_login("happy@example.com", "192.0.2.20")
    with pytest.raises(ResourceExhaustedError) as raised:  # ...and the account's, from anywhere
        await limits.begin_login("happy@example.com", "192.0.2.21")
    assert raised.value.quota is not None and raised.value.quota.name == "login_account"


async def test_account_budget_counts_failures_from_every_address(redis_server: Redis) -> None:
    limits = limiter(redis_server.url(), login_pair=(5, 60), login_account=(3, 60))
    for i in range(3):
        await limits.begin_login("target@example.com", f"198.51.100.{i}")
        await limits.wrong_password("target@example.com", f"198.51.100.{i}")
    with pytest.raises(ResourceExhaustedError) as raised:
        await limits.begin_login("target@example.com", "198.51.100.99")
    assert raised.value.quota is not None and raised.value.quota.name == "login_account"
    # A signed-in password check (no address) shares the account's budget.
    with pytest.raises(ResourceExhaustedError):
        await limits.begin_login("target@example.com", None)


async def test_address_budget_counts_every_attempt_and_recovers(redis_server: Redis) -> None:
    limits = limiter(redis_server.url(), login_address=(3, 1))
    for i in range(3):
        await limits.begin_login(f"user{i}@example.com", "192.0.2.1")
    with pytest.raises(ResourceExhaustedError) as raised:
        await limits.begin_login("user9@example.com", "192.0.2.1")
    await limits.begin_login("user9@example.com", "192.0.2.2")  # another address
    await limits.begin_login("user9@example.com", None)  # an account-only check ignores addresses
    assert raised.value.retry_after is not None and 0 < raised.value.retry_after <= 1.0
    await asyncio.sleep(raised.value.retry_after + 0.05)
    await limits.begin_login("user9@example.com", "192.0.2.1")


async def test_without_redis_sign_in_and_sign_up_fail_closed() -> None:
    limits = limiter(f"redis://127.0.0.1:{free_port()}/0")
    with pytest.raises(UnavailableError) as login:
        await limits.begin_login("anyone@example.com", "192.0.2.1")
    with pytest.raises(UnavailableError) as register:
        await limits.register("192.0.2.1")
    for raised in (login, register):
        assert raised.value.reason == "DEPENDENCY_UNAVAILABLE"
        assert raised.value.retry_after is not None and raised.value.retry_after > 0


async def test_other_limits_fail_open_without_redis() -> None:
    shared = Limiter(redis_client(f"redis://127.0.0.1:{free_port()}/0"), prefix="test")
    await shared.hit(Window("comments", 1, 60), "someone", "too many")  # allowed, logged
    await shared.hit(Window("comments", 1, 60), "someone", "too many")


async def test_leases_cap_what_is_held_at_once(redis_server: Redis) -> None:
    streams = Leases(redis_client(redis_server.url()), "streams", 2, 1.0, prefix=f"test:{uuid.uuid4().hex}")
    first = await streams.take("reader", "too many streams")
    await streams.take("reader", "too many streams")
    with pytest.raises(ResourceExhaustedError) as raised:
        await streams.take("reader", "too many streams")
    assert raised.value.quota is not None and (raised.value.quota.limit, raised.value.quota.window) == (2, 0)
    await streams.take("another reader", "too many streams")  # per owner
    await streams.release(first)
    third = await streams.take("reader", "too many streams")  # a released place is free again
    # Leases not renewed run out (a holder that died): the places free up by themselves.
    await asyncio.sleep(1.1)
    await streams.take("reader", "too many streams")
    await streams.renew(third)  # renewing an expired lease does not bring it back
    await streams.take("reader", "too many streams")
