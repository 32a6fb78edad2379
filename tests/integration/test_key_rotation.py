"""Rotating the token signing key under live traffic (README, "Rotating the token
signing key"): a user_svc, an order_svc and an edge of their own, sharing the
test cluster's data stores, with a key set of their own.  Requests keep
succeeding through each step; tokens of the old key verify until they expire
or the key is retired; new tokens name the new key; an unknown key is a 401."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from common.auth import TokenSigner, generate_key_pair, key_id
from devstack.cluster import Cluster
from devstack.paths import REPO
from devstack.process import Process, free_port
from tests.e2e.helpers import PASSWORD, assert_problem, unique_email, until_ready

TTL = 600


class KeyPair:
    def __init__(self, root: Path, name: str) -> None:
        private, self.public_pem = generate_key_pair()
        self.private_file = root / f"{name}.pem"
        self.private_file.write_bytes(private)
        key = serialization.load_pem_private_key(private, None)
        assert isinstance(key, ed25519.Ed25519PrivateKey)
        self.kid = key_id(key.public_key())
        self.signer = TokenSigner(key, issuer="shop", audience="shop", ttl=TTL)

    def bearer(self, user_id: str, *, expired: bool = False) -> dict[str, str]:
        now = time.time() - TTL - 5 if expired else None
        return {"Authorization": f"Bearer {self.signer.sign(user_id, 'customer', now=now)[0]}"}


def write_key_set(path: Path, *keys: KeyPair) -> None:
    """As an operator's tool or a Kubernetes secret volume does: a new file renamed into place."""
    staged = path.with_suffix(".new")
    staged.write_bytes(b"".join(key.public_pem for key in keys))
    staged.replace(path)


class Rotation:
    """The three processes, on their own ports; user_svc restarts with another key."""

    def __init__(self, cluster: Cluster, root: Path) -> None:
        self.cluster, self.root = cluster, root
        self.key_set = root / "jwt_public.pem"
        self.ports = {name: free_port() for name in ("user_svc", "order_svc", "edge")}
        self.processes: dict[str, Process] = {}

    def env(self, name: str, private_key: Path | None = None) -> dict[str, str]:
        env = {
            **self.cluster.service_env_for(name),
            "SHOP_PORT": str(self.ports[name]),
            "SHOP_METRICS_PORT": "0",
            "SHOP_JWT_PUBLIC_KEY_FILE": str(self.key_set),
            "SHOP_ACCESS_TOKEN_TTL": str(TTL),
            "SHOP_USER_SVC_ADDR": f"127.0.0.1:{self.ports['user_svc']}",
            "SHOP_ORDER_SVC_ADDR": f"127.0.0.1:{self.ports['order_svc']}",
        }
        if private_key is not None:
            env["SHOP_JWT_PRIVATE_KEY_FILE"] = str(private_key)
        return env

    async def start(self, name: str, private_key: Path | None = None) -> None:
        process = Process(f"{name}-rotation", [sys.executable, "-m", name], self.root / f"{name}.log",
                          env=self.env(name, private_key), cwd=REPO).start()  # fmt: skip
        self.processes[name] = process
        ready = functools.partial(self.cluster.service_ready, name, self.ports[name])
        await asyncio.to_thread(process.wait_ready, ready, 30)

    async def stop(self, name: str) -> None:
        process = self.processes.pop(name)
        await asyncio.to_thread(process.stop)


@pytest.fixture
async def rotation(services, tmp_path: Path) -> AsyncIterator[tuple[Rotation, KeyPair]]:
    cluster = services("user_svc", "order_svc")  # their databases migrated
    rotation = Rotation(cluster, tmp_path)
    old = KeyPair(tmp_path, "old")
    write_key_set(rotation.key_set, old)
    try:
        await rotation.start("user_svc", old.private_file)
        await rotation.start("order_svc")
        await rotation.start("edge")
        yield rotation, old
    finally:
        for name in list(rotation.processes):
            with contextlib.suppress(Exception):
                await rotation.stop(name)


class Traffic:
    """Lists the caller's orders (order_svc verifies the token) over and over."""

    def __init__(self, http: httpx.AsyncClient, headers: dict[str, str]) -> None:
        self.http, self.headers = http, headers
        self.statuses: list[int] = []
        self.twenty = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            self.statuses.append((await self.http.get("/api/v1/orders", headers=self.headers)).status_code)
            if len(self.statuses) >= 20:
                self.twenty.set()
            await asyncio.sleep(0.02)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Traffic]:
        self._task = asyncio.create_task(self._run())
        try:
            yield self
        finally:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


async def login(http: httpx.AsyncClient, email: str) -> tuple[str, dict[str, str]]:
    response = await http.post("/api/v1/auth/login", json={"email": email, "password": PASSWORD})
    assert response.status_code == 200, response.text
    token = response.json()["tokens"]["access_token"]
    return str(jwt.get_unverified_header(token)["kid"]), {"Authorization": f"Bearer {token}"}


async def test_a_key_rotation_under_live_traffic(rotation, tmp_path: Path) -> None:
    processes, old = rotation
    new = KeyPair(tmp_path, "new")
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{processes.ports['edge']}", timeout=30) as http:
        email = unique_email()
        registered = await http.post(
            "/api/v1/auth/register", json={"email": email, "password": PASSWORD, "display_name": "Rota"}
        )
        assert registered.status_code == 201, registered.text
        user_id = registered.json()["user"]["id"]
        old_kid, old_token = await login(http, email)
        assert old_kid == old.kid

        async with Traffic(http, old_token).running() as traffic:
            # 1. The new key joins the set everywhere; nothing restarts, nothing signs with it yet.
            write_key_set(processes.key_set, old, new)
            # 2. user_svc signs with the new key (a rolling restart; here its one process).
            await processes.stop("user_svc")
            await processes.start("user_svc", new.private_file)
            await until_ready(http, "user_svc")
            new_kid, new_token = await login(http, email)
            assert new_kid == new.kid != old.kid
            jwks = (await http.get("/.well-known/jwks.json")).json()["keys"]
            assert [entry["kid"] for entry in jwks] == [new.kid, old.kid]  # the current key first
            # Both keys' tokens work, at the service that signs and at one that only verifies.
            for headers in (old_token, new_token):
                assert (await http.get("/api/v1/users/me", headers=headers)).json()["id"] == user_id
                assert (await http.get("/api/v1/orders", headers=headers)).status_code == 200
            # The old key's tokens work until they expire.
            assert (await http.get("/api/v1/orders", headers=old.bearer(user_id))).status_code == 200
            expired = assert_problem(await http.get("/api/v1/orders", headers=old.bearer(user_id, expired=True)), 401)
            assert "expired" in expired["detail"]
            await traffic.twenty.wait()  # traffic went on through the restart
        assert traffic.statuses and set(traffic.statuses) == {200}, traffic.statuses

        # A key nobody put in the set.
        stranger = KeyPair(tmp_path, "stranger")
        unknown = assert_problem(await http.get("/api/v1/orders", headers=stranger.bearer(user_id)), 401)
        assert unknown["detail"] == (
            f"the access token is invalid: it was signed with a key this service does not know (kid {stranger.kid}); "
            "sign in again"
        )

        # 3. Once the old key's last token has expired, it leaves the set: its tokens are refused.
        write_key_set(processes.key_set, new)
        retired = assert_problem(await http.get("/api/v1/orders", headers=old.bearer(user_id)), 401)
        assert f"(kid {old.kid})" in retired["detail"]
        assert_problem(await http.get("/api/v1/users/me", headers=old.bearer(user_id)), 401)
        assert (await http.get("/api/v1/orders", headers=new_token)).status_code == 200
        assert (await http.get("/api/v1/users/me", headers=new.bearer(user_id))).status_code == 200
        assert [entry["kid"] for entry in (await http.get("/.well-known/jwks.json")).json()["keys"]] == [new.kid]
