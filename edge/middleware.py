"""Request ids, trace ids, access logs and HTTP metrics, as one pure ASGI middleware."""

from __future__ import annotations

import logging
import re
import secrets
import time
import uuid
from dataclasses import dataclass
from typing import Any

from opentelemetry import trace
from prometheus_client import Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("shop.edge.access")

REQUESTS = Histogram(
    "http_server_request_duration_seconds",
    "HTTP request latency, by route and status",
    ["method", "route", "status"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)

_VALID_ID = re.compile(r"^[A-Za-z0-9._\-]{1,128}$")
# W3C Trace Context: version-traceid-parentid-flags (version ff is invalid, all-zero ids too).
_TRACEPARENT = re.compile(r"^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?$")


@dataclass(frozen=True)
class TraceContext:
    """The W3C trace a request belongs to: the active span's when spans are
    recorded, else the caller's ``traceparent``, else a fresh one.  Without
    tracing the edge still forwards it (``traceparent`` metadata), so the
    request's id is the same at every hop and in every log line."""

    trace_id: str
    parent_id: str
    flags: str
    # The active span carries it itself (the gRPC client instrumentation injects it).
    from_span: bool

    def traceparent(self) -> str:
        return f"00-{self.trace_id}-{self.parent_id}-{self.flags}"


def trace_context(scope: Scope) -> TraceContext:
    span = trace.get_current_span().get_span_context()
    if span.is_valid:
        return TraceContext(format(span.trace_id, "032x"), format(span.span_id, "016x"),
                            format(int(span.trace_flags), "02x"), from_span=True)  # fmt: skip
    incoming = _header(scope, b"traceparent")
    found = _TRACEPARENT.match(incoming.strip().lower()) if incoming else None
    if found and found[1] != "ff" and found[2] != "0" * 32 and found[3] != "0" * 16:
        # This hop's parent id is its own, the caller's span is its parent.
        return TraceContext(found[2], secrets.token_hex(8), found[4], from_span=False)
    return TraceContext(secrets.token_hex(16), secrets.token_hex(8), "01", from_span=False)


class RequestContext:
    """Gives every request an id (the client's ``X-Request-ID`` when sane) and a
    trace (see ``TraceContext``), echoes both in the response (``X-Request-ID``,
    ``X-Trace-Id``), logs one line per request and observes latency."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = _header(scope, b"x-request-id")
        request_id = incoming if incoming and _VALID_ID.match(incoming) else uuid.uuid4().hex
        context = trace_context(scope)
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        state["trace"] = context
        started = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [
                    *message.get("headers", []),
                    (b"x-request-id", request_id.encode()),
                    (b"x-trace-id", context.trace_id.encode()),
                ]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - started
            route = _route_template(scope)
            REQUESTS.labels(scope["method"], route, str(status)).observe(elapsed)
            log.info(
                "%s %s %s",
                scope["method"],
                scope["path"],
                status,
                extra={
                    "request_id": request_id,
                    "status": status,
                    "route": route,
                    "ms": round(elapsed * 1000, 2),
                    **({} if context.from_span else {"trace_id": context.trace_id}),
                },
            )


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            decoded: str = value.decode("latin-1")
            return decoded
    return None


def _route_template(scope: Scope) -> str:
    route: Any = scope.get("route")
    path = getattr(route, "path", None)
    return str(path) if path else "unmatched"
