"""Domain events on Kafka: protobuf payloads from ``shop.events.v1``.

One topic per aggregate, keyed by the aggregate id; headers carry the event
id (the consumers' idempotency key), the event type (the message's full name)
and the W3C trace context, so a consumer's spans join the producer's trace.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence

from google.protobuf import symbol_database
from google.protobuf.message import Message
from opentelemetry import propagate

# Import the event modules so their messages are known to the symbol database.
from shop.events.v1 import comment_events_pb2, order_events_pb2, platform_events_pb2  # noqa: F401

ORDERS_TOPIC = "shop.orders.v1"
COMMENTS_TOPIC = "shop.comments.v1"
PLATFORM_TOPIC = "shop.platform.v1"

EVENT_ID = "event-id"
EVENT_TYPE = "event-type"

Headers = Sequence[tuple[str, bytes]]


class UndecodableEventError(ValueError):
    """A message that is not a known event: park it, don't retry it."""


def new_event_id() -> str:
    return str(uuid.uuid4())


def trace_headers() -> dict[str, str]:
    """The current trace context as W3C headers (traceparent, tracestate)."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier


def headers_for(event_id: str, event_type: str, trace: Mapping[str, str]) -> list[tuple[str, bytes]]:
    return [(EVENT_ID, event_id.encode()), (EVENT_TYPE, event_type.encode())] + [
        (key, value.encode()) for key, value in trace.items()
    ]


def header(headers: Iterable[tuple[str, bytes | str | None]] | None, name: str) -> str | None:
    for key, value in headers or ():
        if key == name and value is not None:
            return value.decode() if isinstance(value, bytes) else value
    return None


def decode(headers: Iterable[tuple[str, bytes | str | None]] | None, value: bytes | None) -> tuple[str, Message]:
    """(event id, payload) of a Kafka message; UndecodableEventError when it is not one of ours."""
    event_id, event_type = header(headers, EVENT_ID), header(headers, EVENT_TYPE)
    if not event_id or not event_type or value is None:
        raise UndecodableEventError("missing event-id or event-type header, or empty value")
    try:
        cls = symbol_database.Default().GetSymbol(event_type)
    except KeyError as exc:
        raise UndecodableEventError(f"unknown event type {event_type!r}") from exc
    message: Message = cls()
    try:
        message.ParseFromString(value)
    except Exception as exc:
        raise UndecodableEventError(f"payload is not a valid {event_type}: {exc}") from exc
    return event_id, message


def extract_context(headers: Iterable[tuple[str, bytes | str | None]] | None) -> object:
    """The producer's trace context from message headers, for the consumer's span."""
    carrier = {key: (value.decode() if isinstance(value, bytes) else value) for key, value in headers or () if value}
    return propagate.extract(carrier)
