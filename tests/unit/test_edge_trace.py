"""Without span export the edge still gives every response a W3C trace id: the
caller's ``traceparent``'s when it sends one, else a fresh one (issue 21)."""

from __future__ import annotations

import re
import secrets
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from common import tls
from edge.app import create_app


@pytest.fixture(autouse=True)
def edge_certificate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The edge opens its (mutual-TLS) upstream channels at start: a certificate of a CA of its own."""
    tls.ensure_identities(tmp_path, ["edge"])
    files = tls.files_in(tmp_path, "edge")
    for name, value in (("CA", files.ca), ("CERT", files.cert), ("KEY", files.key)):
        monkeypatch.setenv(f"SHOP_TLS_{name}_FILE", value)


def test_a_problem_names_a_fresh_trace() -> None:
    with TestClient(create_app()) as client:
        first = client.get("/no/such/thing")
        second = client.get("/no/such/thing")
    assert first.status_code == 404
    assert first.headers["content-type"].startswith("application/problem+json")
    assert re.fullmatch(r"[0-9a-f]{32}", first.headers["x-trace-id"])
    assert first.json()["trace_id"] == first.headers["x-trace-id"]
    assert second.headers["x-trace-id"] != first.headers["x-trace-id"]


def test_the_callers_traceparent_names_the_trace_and_a_bad_one_is_replaced() -> None:
    theirs = secrets.token_hex(16)
    with TestClient(create_app()) as client:
        continued = client.get("/healthz", headers={"traceparent": f"00-{theirs}-{secrets.token_hex(8)}-01"})
        garbled = client.get("/healthz", headers={"traceparent": f"00-{'0' * 32}-{secrets.token_hex(8)}-01"})
    assert continued.status_code == 200
    assert continued.headers["x-trace-id"] == theirs
    assert re.fullmatch(r"[0-9a-f]{32}", garbled.headers["x-trace-id"])
    assert garbled.headers["x-trace-id"] != "0" * 32
