"""One request, one trace across every hop; metrics from every process; JSON logs
that lead to the trace (issue 8)."""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import urllib.error
import urllib.request
import uuid
from typing import Any

import httpx
import pytest

from devstack.cluster import Cluster
from devstack.servers import Jaeger
from tests.e2e.helpers import admin_session, assert_problem, bearer, register

ADDRESS = {"recipient_name": "Ann Buyer", "line1": "1 Main St", "city": "Berlin", "postal_code": "10115",
           "country_code": "DE"}  # fmt: skip
CHAIN = ("user_svc", "product_svc", "order_svc", "notify_svc", "edge")


@pytest.fixture(scope="module")
def stack(services, jaeger: Jaeger) -> Cluster:
    return services(*CHAIN)


def _trace(jaeger: Jaeger, trace_id: str) -> list[dict[str, Any]]:
    try:
        with urllib.request.urlopen(f"{jaeger.query_url}/api/traces/{trace_id}", timeout=5) as response:
            data = json.load(response).get("data") or []
    except urllib.error.HTTPError as error:
        assert error.code == 404
        return []
    spans = []
    for trace in data:
        processes = {key: value["serviceName"] for key, value in trace["processes"].items()}
        for span in trace["spans"]:
            tags = {tag["key"]: tag["value"] for tag in span.get("tags", [])}
            parents = [ref["spanID"] for ref in span.get("references", []) if ref["refType"] == "CHILD_OF"]
            spans.append({
                "id": span["spanID"], "name": span["operationName"], "service": processes[span["processID"]],
                "kind": tags.get("span.kind", ""), "parent": parents[0] if parents else None, "tags": tags,
            })  # fmt: skip
    return spans


def _find(spans: list[dict[str, Any]], service: str, kind: str, name_part: str) -> dict[str, Any]:
    found = [s for s in spans if s["service"] == service and s["kind"] == kind and name_part in s["name"]]
    assert found, (
        f"no {kind} span of {service} named like {name_part!r} in {[(s['service'], s['name']) for s in spans]}"
    )
    return found[0]


def _ancestors(spans: list[dict[str, Any]], span: dict[str, Any]) -> list[dict[str, Any]]:
    by_id = {s["id"]: s for s in spans}
    chain = []
    while span["parent"] in by_id:
        span = by_id[span["parent"]]
        chain.append(span)
    return chain


async def test_an_order_yields_one_trace_across_every_hop(
    http: httpx.AsyncClient, stack: Cluster, jaeger: Jaeger
) -> None:
    admin = await admin_session(http, stack)
    category = (await http.post("/api/v1/categories", headers=bearer(admin),
                                json={"name": "Traced", "slug": f"traced-{uuid.uuid4().hex[:6]}"})).json()  # fmt: skip
    product = (await http.post("/api/v1/products", headers=bearer(admin), json={
        "name": "Traced thing", "category_id": category["id"], "stock": 5,
        "price": {"amount_minor": 1000, "currency": "EUR"},
    })).json()  # fmt: skip
    buyer = await register(http)

    trace_id = secrets.token_hex(16)
    traceparent = f"00-{trace_id}-{secrets.token_hex(8)}-01"
    placed = await http.post(
        "/api/v1/orders",
        headers={**bearer(buyer), "traceparent": traceparent},
        json={"items": [{"product_id": product["id"], "quantity": 1}], "shipping_address": ADDRESS},
    )
    assert placed.status_code == 201, placed.text

    wanted = {"edge", "order_svc", "product_svc", "notify_svc"}
    spans: list[dict[str, Any]] = []
    for _ in range(60):
        spans = _trace(jaeger, trace_id)
        if wanted <= {s["service"] for s in spans} and any(s["kind"] == "consumer" for s in spans):
            break
        await asyncio.sleep(0.5)

    edge_server = _find(spans, "edge", "server", "POST")
    edge_client = _find(spans, "edge", "client", "CreateOrder")
    order_server = _find(spans, "order_svc", "server", "CreateOrder")
    order_to_product = _find(spans, "order_svc", "client", "ReserveStock")
    product_server = _find(spans, "product_svc", "server", "ReserveStock")
    databases = [s for s in spans if s["service"] == "order_svc" and "db.system" in s["tags"]]
    assert databases, [(s["name"], s["kind"], sorted(s["tags"])) for s in spans if s["service"] == "order_svc"]
    database = databases[0]
    publish = _find(spans, "order_svc", "producer", "shop.orders.v1")
    consumers = [s for s in spans if s["service"] == "notify_svc" and s["kind"] == "consumer"]
    assert consumers, [(s["name"], s["kind"]) for s in spans if s["service"] == "notify_svc"]
    consume = consumers[0]

    assert edge_server in _ancestors(spans, edge_client)
    assert edge_client in _ancestors(spans, order_server)
    assert order_server in _ancestors(spans, order_to_product)
    assert order_to_product in _ancestors(spans, product_server)
    assert order_server in _ancestors(spans, database)
    assert order_server in _ancestors(spans, publish)
    assert publish in _ancestors(spans, consume)
    assert database["tags"]["db.system"] == "postgresql"
    processing = [s for s in spans if s["service"] == "notify_svc" and consume in _ancestors(spans, s)]
    assert processing, "notify_svc's processing spans hang under its consume span"

    logs = (stack.root / "logs" / "order_svc.log").read_text().splitlines()
    traced = [json.loads(line) for line in logs if line.startswith("{") and trace_id in line]
    assert all(entry["trace_id"] == trace_id for entry in traced)


def _scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return response.read().decode()


async def test_every_process_exposes_prometheus_metrics(http: httpx.AsyncClient, stack: Cluster) -> None:
    buyer = await register(http)
    await http.get("/api/v1/orders", headers=bearer(buyer))
    edge = await asyncio.to_thread(_scrape, stack.metrics_ports["edge"])
    assert 'http_server_request_duration_seconds_count{method="GET",route="/api/v1/orders"' in edge
    # Its own port only: the public port has no /metrics.
    assert (await http.get("/metrics")).status_code == 404
    for name in ("user_svc", "product_svc", "order_svc", "notify_svc"):
        text = await asyncio.to_thread(_scrape, stack.metrics_ports[name])
        assert "grpc_server_handled_total" in text or name == "notify_svc", name
        assert "grpc_server_handling_seconds_bucket" in text or name == "notify_svc", name
    order = await asyncio.to_thread(_scrape, stack.metrics_ports["order_svc"])
    assert "outbox_backlog" in order and "outbox_relay_lag_seconds_bucket" in order


async def test_every_response_names_its_trace_and_the_id_finds_it(
    http: httpx.AsyncClient, stack: Cluster, jaeger: Jaeger
) -> None:
    problem = await http.get("/api/v1/orders")
    body = assert_problem(problem, 401)
    assert re.fullmatch(r"[0-9a-f]{32}", problem.headers["x-trace-id"])
    assert body["trace_id"] == problem.headers["x-trace-id"]

    ok = await http.get("/api/v1/products")
    assert ok.status_code == 200, ok.text
    assert re.fullmatch(r"[0-9a-f]{32}", ok.headers["x-trace-id"])
    assert ok.headers["x-trace-id"] != problem.headers["x-trace-id"]

    theirs = secrets.token_hex(16)
    continued = await http.get("/api/v1/products", headers={"traceparent": f"00-{theirs}-{secrets.token_hex(8)}-01"})
    assert continued.headers["x-trace-id"] == theirs

    # Without a traceparent of the caller's, the id the edge answered finds the trace,
    # with the edge's server span and the call it made upstream.
    buyer = await register(http)
    listed = await http.get("/api/v1/orders", headers=bearer(buyer))
    assert listed.status_code == 200, listed.text
    trace_id = listed.headers["x-trace-id"]
    spans: list[dict[str, Any]] = []
    for _ in range(60):
        spans = _trace(jaeger, trace_id)
        if {"edge", "order_svc"} <= {s["service"] for s in spans}:
            break
        await asyncio.sleep(0.5)
    edge_server = _find(spans, "edge", "server", "GET")
    order_server = _find(spans, "order_svc", "server", "OrderService/List")
    assert edge_server in _ancestors(spans, order_server)
