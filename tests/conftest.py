"""Session fixtures: the real servers, started on free loopback ports by devstack.

Each server starts once per test session, the first time a test asks for it;
the servers every collected test needs are started together, in parallel.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from devstack.cluster import Cluster
from devstack.docstore import FerretDB
from devstack.process import tail
from devstack.servers import S3, Jaeger, Kafka, Postgres, Redis, Server
from devstack.stripe_mock import StripeMock

S = TypeVar("S", bound=Server)

# fixture name -> server name
SERVER_FIXTURES = {
    "postgres": "postgres",
    "redis_server": "redis",
    "kafka": "kafka",
    "mongo": "mongo",
    "s3": "s3",
    "jaeger": "jaeger",
    "stripe_mock": "stripe_mock",
}


_CLUSTER: list[Cluster] = []

# Test settings of the shop processes: cheap password hashing, short rate-limit
# windows (so "limited, then recovered" takes seconds), per-address limits the
# whole suite (all from 127.0.0.1) stays under, per-user limits small enough for
# tests/e2e/test_limits.py to reach, CORS on for one origin.
TEST_OVERRIDES = {
    "user_svc": {
        "SHOP_ARGON2_TIME_COST": "1",
        "SHOP_ARGON2_MEMORY_KIB": "8192",
        "SHOP_ARGON2_PARALLELISM": "1",
        "SHOP_LOGIN_PAIR_LIMIT": "5",
        "SHOP_LOGIN_PAIR_WINDOW": "3",
        "SHOP_LOGIN_ACCOUNT_LIMIT": "20",
        "SHOP_LOGIN_ACCOUNT_WINDOW": "3",
        "SHOP_LOGIN_ADDRESS_LIMIT": "1000",
        "SHOP_LOGIN_ADDRESS_WINDOW": "60",
        # The whole suite registers from 127.0.0.1 (tests/e2e/test_limits.py runs a
        # user_svc of its own with a small budget).
        "SHOP_REGISTER_ADDRESS_LIMIT": "100000",
        "SHOP_REGISTER_ADDRESS_WINDOW": "60",
    },
    # A reservation abandoned midway is rolled back after 3 s, swept every second.
    "product_svc": {
        "SHOP_RESERVATION_PENDING_TIMEOUT": "3",
        "SHOP_RECOVERY_INTERVAL": "1",
    },
    "order_svc": {
        "SHOP_SWEEP_INTERVAL": "0.5",
        "SHOP_ORPHAN_RESERVATION_AFTER": "2",
        "SHOP_PRODUCT_TIMEOUT": "2",
        # Per user; each test's users are its own (tests/e2e/test_limits.py goes past them).
        "SHOP_ORDER_CREATE_LIMIT": "15",
        "SHOP_ORDER_CREATE_WINDOW": "60",
        "SHOP_UNPAID_ORDERS_LIMIT": "6",
    },
    "comment_svc": {
        # The comment tests post dozens as one user within a minute.
        "SHOP_COMMENT_CREATE_LIMIT": "200",
        "SHOP_COMMENT_CREATE_WINDOW": "60",
    },
    # Webhook retries after 0.2 s and 0.4 s, 3 attempts in all, receivers on loopback; heartbeats every
    # second; a killed consumer's partitions move after 6 s; a short feed cap.
    "notify_svc": {
        "SHOP_WEBHOOK_RETRY_BASE": "0.2",
        "SHOP_WEBHOOK_MAX_ATTEMPTS": "3",
        "SHOP_WEBHOOK_TIMEOUT": "2",
        "SHOP_HEARTBEAT_INTERVAL": "1",
        "SHOP_KAFKA_SESSION_TIMEOUT_MS": "6000",
        "SHOP_FEED_CAP": "40",
        "SHOP_STREAM_LIMIT": "2",
        "SHOP_STREAM_LEASE_SECONDS": "6",
        "SHOP_WEBHOOK_REGISTER_LIMIT": "50",
        "SHOP_WEBHOOK_REGISTER_WINDOW": "60",
        # The webhook receivers listen on loopback, on ports the system picks: allowed
        # explicitly (the address and port checks stay on; a private address is still refused).
        "SHOP_WEBHOOK_ALLOWED_NETWORKS": "127.0.0.0/8",
        "SHOP_WEBHOOK_PORTS": "80,443,1024-65535",
    },
    # The suite's clients and the storefront all connect from 127.0.0.1 and name a client
    # address of their own in X-Forwarded-For: the session edge trusts loopback as a proxy.
    # (tests/e2e/test_hostile_input.py starts edges that trust one proxy address alone.)
    "edge": {
        "SHOP_CORS_ORIGINS": '["http://shop.test"]',
        "SHOP_TRUSTED_PROXIES": '["127.0.0.1/32"]',
    },
}


@contextlib.contextmanager
def throwaway_cluster(prefix: str, *, unsafe_fast_storage: bool) -> Iterator[Cluster]:
    """A cluster in a temporary directory with the test settings, removed afterwards."""
    root = Path(tempfile.mkdtemp(prefix=prefix))
    root.chmod(0o755)  # PostgreSQL runs as the postgres user: let it reach its data dir under root
    cluster = Cluster(root, unsafe_fast_storage=unsafe_fast_storage)
    cluster.overrides.update(TEST_OVERRIDES)
    _CLUSTER.append(cluster)
    try:
        yield cluster
    finally:
        cluster.stop()
        _CLUSTER.remove(cluster)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def cluster(request: pytest.FixtureRequest) -> Iterator[Cluster]:
    # The suite's data is thrown away: skip the stores' flushes (the durability tests
    # start a durable cluster of their own, tests/integration/test_durability.py).
    with throwaway_cluster("shop-test-", unsafe_fast_storage=True) as cluster:
        needed = {
            SERVER_FIXTURES[name]
            for item in request.session.items
            for name in getattr(item, "fixturenames", ())
            if name in SERVER_FIXTURES
        }
        cluster.start_servers(sorted(needed))
        yield cluster


def _server(cluster: Cluster, kind: type[S]) -> S:
    server = cluster.server(kind.name)
    assert isinstance(server, kind)
    return server


@pytest.fixture(scope="session")
def postgres(cluster: Cluster) -> Postgres:
    return _server(cluster, Postgres)


@pytest.fixture(scope="session")
def redis_server(cluster: Cluster) -> Redis:
    return _server(cluster, Redis)


@pytest.fixture(scope="session")
def kafka(cluster: Cluster) -> Kafka:
    return _server(cluster, Kafka)


@pytest.fixture(scope="session")
def mongo(cluster: Cluster) -> FerretDB:
    return _server(cluster, FerretDB)


@pytest.fixture(scope="session")
def s3(cluster: Cluster) -> S3:
    return _server(cluster, S3)


@pytest.fixture(scope="session")
def jaeger(cluster: Cluster) -> Jaeger:
    return _server(cluster, Jaeger)


@pytest.fixture(scope="session")
def stripe_mock(cluster: Cluster) -> StripeMock:
    return _server(cluster, StripeMock)


@pytest.fixture(scope="session")
def services(cluster: Cluster) -> Callable[..., Cluster]:
    """Start shop processes (and the servers they need): ``services("user_svc", "edge")``."""

    def start(*names: str) -> Cluster:
        missing = [name for name in names if name not in cluster.services]
        if missing:
            started = cluster.start_services(missing)
            assert set(started) == set(missing), f"not built: {set(missing) - set(started)}"
        return cluster

    return start


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):
    report = yield
    if report.failed and call.when == "call":
        # A failing test shows the last lines of every shop process's log.
        for cluster in _CLUSTER:
            for name, log in cluster.logs().items():
                report.sections.append((f"log of {name}", tail(log, 25)))
    return report
