"""Tracing, JSON logs and Prometheus metrics for every process.

* Tracing: an OpenTelemetry tracer provider named after the process; spans are
  exported by OTLP/gRPC when ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set.
* Logs: one JSON object per line, carrying the current trace and span ids so a
  log line leads to its trace.
* Metrics: ``prometheus_client`` served on ``SHOP_METRICS_PORT`` when non-zero.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from prometheus_client import start_http_server

_RESERVED = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """One JSON object per record, with trace context and any ``extra=`` fields."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self._service = service

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "service": self._service,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        context = trace.get_current_span().get_span_context()
        if context.is_valid:
            entry["trace_id"] = format(context.trace_id, "032x")
            entry["span_id"] = format(context.span_id, "016x")
        for key, value in record.__dict__.items():
            if key not in _RESERVED and not key.startswith("_"):
                entry[key] = value if isinstance(value, (str, int, float, bool, type(None))) else str(value)
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def setup_logging(service: str, level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("botocore", "urllib3", "s3transfer", "aiokafka"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def tracing_enabled() -> bool:
    """Spans are exported (an OTLP endpoint is configured); without that the
    libraries are not instrumented at all, so tracing costs nothing."""
    return bool(os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))


def setup_tracing(service: str) -> TracerProvider:
    """Install the process's tracer provider and instrument the data-store
    clients (idempotent per process)."""
    current = trace.get_tracer_provider()
    if isinstance(current, TracerProvider):
        return current
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    if tracing_enabled():
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
        from opentelemetry.instrumentation.pymongo import PymongoInstrumentor
        from opentelemetry.instrumentation.redis import RedisInstrumentor

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        RedisInstrumentor().instrument(tracer_provider=provider)
        PymongoInstrumentor().instrument(tracer_provider=provider)
    trace.set_tracer_provider(provider)
    return provider


def grpc_server_interceptors() -> list[Any]:
    """Server spans, only when spans are exported (the interceptor costs on every
    call, and its package, imported only then, costs about 2 MB)."""
    if not tracing_enabled():
        return []
    from opentelemetry.instrumentation.grpc import aio_server_interceptor

    return [aio_server_interceptor()]  # type: ignore[no-untyped-call]


def grpc_client_interceptors() -> list[Any] | None:
    """Client spans, only when spans are exported."""
    if not tracing_enabled():
        return None
    from opentelemetry.instrumentation.grpc import aio_client_interceptors

    return aio_client_interceptors()  # type: ignore[no-any-return, no-untyped-call]


def instrument_app(app: Any) -> None:
    """HTTP spans for the edge's Starlette app, only when spans are exported."""
    if tracing_enabled():
        from opentelemetry.instrumentation.starlette import StarletteInstrumentor

        StarletteInstrumentor.instrument_app(app)


def instrument_engine(engine: Any) -> None:
    """Database spans for one SQLAlchemy engine (when tracing is on)."""
    if tracing_enabled():
        from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor

        # The instrumentation declares SQLAlchemy < 2.1; the event API it uses is unchanged in 2.1.
        SQLAlchemyInstrumentor().instrument(engine=engine.sync_engine, enable_commenter=False, skip_dep_check=True)


def setup_metrics(port: int, host: str = "127.0.0.1") -> None:
    if port:
        start_http_server(port, addr=host)


def setup(service: str, *, log_level: str = "INFO", metrics_port: int = 0, host: str = "127.0.0.1") -> None:
    """Everything a process needs at start, in one call."""
    setup_logging(service, log_level)
    setup_tracing(service)
    setup_metrics(metrics_port, host)
