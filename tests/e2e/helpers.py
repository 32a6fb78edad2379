"""What every end-to-end test does through the edge: accounts, admins, problems."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from typing import Any

import httpx

from devstack.cluster import Cluster

PASSWORD = "correct-horse-42"


def unique_email() -> str:
    return f"Buyer.{uuid.uuid4().hex[:10]}@Example.COM"


async def register(http: httpx.AsyncClient, email: str | None = None) -> dict[str, Any]:
    response = await http.post(
        "/api/v1/auth/register", json={"email": email or unique_email(), "password": PASSWORD, "display_name": "Ann"}
    )
    assert response.status_code == 201, response.text
    session: dict[str, Any] = response.json()
    return session


def bearer(session: dict[str, Any]) -> dict[str, str]:
    return {"Authorization": f"Bearer {session['tokens']['access_token']}"}


def assert_problem(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert body["detail"]
    return body


async def create_admin(cluster: Cluster, email: str) -> None:
    """An admin account, made the way an operator makes one (``python -m user_svc create-admin``)."""
    env = {**os.environ, **cluster.service_env_for("user_svc"), "SHOP_ADMIN_PASSWORD": PASSWORD}
    created = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "user_svc", "create-admin", "--email", email],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert created.returncode == 0, created.stderr


async def admin_session(http: httpx.AsyncClient, cluster: Cluster) -> dict[str, Any]:
    email = unique_email().lower()
    await create_admin(cluster, email)
    response = await http.post("/api/v1/auth/login", json={"email": email, "password": PASSWORD})
    assert response.status_code == 200, response.text
    session: dict[str, Any] = response.json()
    assert session["user"]["role"] == "admin"
    return session


async def until_ready(http: httpx.AsyncClient, service: str, seconds: float = 20) -> None:
    """Wait until the edge reaches ``service`` again (after a test restarted it)."""
    deadline = asyncio.get_running_loop().time() + seconds
    while (await http.get("/readyz")).json()["upstreams"].get(service) != "SERVING":
        assert asyncio.get_running_loop().time() < deadline, f"the edge does not reach {service} again"
        await asyncio.sleep(0.1)
