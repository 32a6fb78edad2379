"""The local trace UI (issue 21): Zipkin's server and its UI show the traces the
services send to Jaeger (Jaeger forwards them through Kafka), so a person can go from
a response's X-Trace-Id to its trace in a browser."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from typing import Any

import httpx
import pytest

from devstack.cluster import Cluster
from devstack.servers import Jaeger
from devstack.zipkin import Zipkin


@pytest.fixture(scope="module")
def zipkin(cluster: Cluster) -> Zipkin:
    server = cluster.server("zipkin")
    assert isinstance(server, Zipkin)
    return server


@pytest.fixture(scope="module")
def stack(services: Any, jaeger: Jaeger, zipkin: Zipkin) -> Cluster:
    cluster: Cluster = services("user_svc", "edge")
    return cluster


def _zipkin_trace(zipkin: Zipkin, trace_id: str) -> list[dict[str, Any]]:
    try:
        with urllib.request.urlopen(f"{zipkin.url}/api/v2/trace/{trace_id}", timeout=5) as response:
            spans: list[dict[str, Any]] = json.load(response)
            return spans
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return []
        raise


async def test_a_request_s_trace_shows_in_zipkin(http: httpx.AsyncClient, zipkin: Zipkin) -> None:
    response = await http.post("/api/v1/auth/login", json={"email": "nobody@example.com", "password": "x"})
    assert response.status_code == 401
    trace_id = response.headers["x-trace-id"]

    spans: list[dict[str, Any]] = []
    for _ in range(120):
        spans = await asyncio.to_thread(_zipkin_trace, zipkin, trace_id)
        if {"edge", "user_svc"} <= {span["localEndpoint"]["serviceName"] for span in spans}:
            break
        await asyncio.sleep(0.5)
    services = {span["localEndpoint"]["serviceName"] for span in spans}
    assert {"edge", "user_svc"} <= services, spans
    assert any(span.get("kind") == "SERVER" and span["localEndpoint"]["serviceName"] == "edge" for span in spans)


async def test_zipkin_serves_its_ui(zipkin: Zipkin) -> None:
    async with httpx.AsyncClient(base_url=zipkin.url, timeout=30) as ui:
        page = await ui.get("/zipkin/")
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        assert '<base href="/zipkin/"' in page.text
        config = await ui.get("/zipkin/config.json")
        assert config.status_code == 200
