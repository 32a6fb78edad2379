"""Fixtures the end-to-end modules share.  Each module names its own ``stack`` (the
services it needs); a module with a client of its own defines its own ``http``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from devstack.cluster import Cluster
from tests.e2e.helpers import admin_session


@pytest.fixture
async def http(stack: Cluster) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the module's stack's edge."""
    async with httpx.AsyncClient(base_url=f"http://{stack.addr('edge')}", timeout=30) as client:
        yield client


@pytest.fixture
async def admin(http: httpx.AsyncClient, stack: Cluster) -> dict[str, Any]:
    """A signed-in admin of the module's stack (its session: user and tokens)."""
    return await admin_session(http, stack)
