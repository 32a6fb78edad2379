"""Reading the buyers' live notification streams during the checkout load.

Each notification carries ``source_committed_at``: order_svc's wall clock just
before the transaction that wrote the order (and its outbox row) committed.
The time it is read here minus that stamp is the event latency: outbox relay,
Kafka, notify_svc's consumer, Redis, the stream, and (through the edge) SSE.
Both clocks are this machine's.

Through the edge the stream is ``GET /api/v1/notifications/stream`` (server-sent
events).  While the edge has no such route, the same stream is read from
notify_svc's ``Subscribe`` RPC directly, and the figures say so.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import grpc
import httpx
from shop.notify.v1 import notify_pb2, notify_pb2_grpc

SSE_PATH = "/api/v1/notifications/stream"


@dataclass
class Arrival:
    user_id: str
    order_id: str
    kind: str
    latency_ms: float


@dataclass
class Watch:
    via: str = ""
    arrivals: list[Arrival] = field(default_factory=list)
    streams_open: int = 0
    failures: list[str] = field(default_factory=list)


def _find(value: Any, key: str) -> Any:
    """The first ``key`` anywhere in a decoded JSON value."""
    if isinstance(value, dict):
        if key in value:
            return value[key]
        for item in value.values():
            found = _find(item, key)
            if found is not None:
                return found
    elif isinstance(value, list):
        for item in value:
            found = _find(item, key)
            if found is not None:
                return found
    return None


def _epoch(stamp: Any) -> float | None:
    """An RFC 3339 string or a ``{seconds, nanos}`` object, as unix seconds."""
    if isinstance(stamp, str) and stamp:
        return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
    if isinstance(stamp, dict) and "seconds" in stamp:
        return int(stamp["seconds"]) + int(stamp.get("nanos", 0)) / 1e9
    return None


async def sse_available(http: httpx.AsyncClient, token: str) -> bool:
    """Whether the edge serves the stream (it answers its headers at once)."""
    try:
        async with http.stream("GET", SSE_PATH, headers=_auth(token), timeout=5.0) as response:
            return response.status_code == 200
    except httpx.HTTPError:
        return False


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", "Accept": "text/event-stream"}


async def _sse(http: httpx.AsyncClient, user_id: str, token: str, watch: Watch, ready: asyncio.Event) -> None:
    async with http.stream("GET", SSE_PATH, headers=_auth(token), timeout=None) as response:
        if response.status_code != 200:
            watch.failures.append(f"{user_id}: HTTP {response.status_code}")
            return
        watch.streams_open += 1
        ready.set()
        data: list[str] = []
        async for line in response.aiter_lines():
            if line.startswith("data:"):
                data.append(line[5:].strip())
            elif line == "" and data:
                _arrived(json.loads("\n".join(data)), user_id, watch)
                data = []


def _arrived(payload: Any, user_id: str, watch: Watch) -> None:
    now = time.time()
    committed = _epoch(_find(payload, "source_committed_at"))
    if committed is None:
        return  # a heartbeat or a notification without a source stamp
    order_id = _find(payload, "order_id") or ""
    kind = _find(payload, "kind") or ""
    watch.arrivals.append(Arrival(user_id, str(order_id), str(kind), (now - committed) * 1000))


async def _grpc(channel: grpc.aio.Channel, user_id: str, token: str, watch: Watch, ready: asyncio.Event) -> None:
    stub = notify_pb2_grpc.NotificationServiceStub(channel)
    call = stub.Subscribe(notify_pb2.SubscribeRequest(), metadata=[("authorization", f"Bearer {token}")])
    first = True
    async for message in call:
        if first:
            watch.streams_open += 1
            ready.set()
            first = False
        if not message.HasField("notification"):
            continue
        now = time.time()
        note = message.notification
        if not note.HasField("source_committed_at"):
            continue
        committed = note.source_committed_at.seconds + note.source_committed_at.nanos / 1e9
        kind = notify_pb2.NotificationKind.Name(note.kind)
        watch.arrivals.append(Arrival(user_id, note.data.get("order_id", ""), kind, (now - committed) * 1000))


class Watcher:
    """Open streams for every buyer, keep them open while the load runs, then close them."""

    def __init__(self, edge_url: str, notify: Callable[[], grpc.aio.Channel], buyers: dict[str, str]) -> None:
        self.edge_url = edge_url
        self.notify = notify  # opens a (mutual-TLS) channel to notify_svc
        self.buyers = buyers  # user id -> access token
        self.watch = Watch()
        self._tasks: list[asyncio.Task[None]] = []
        self._http: httpx.AsyncClient | None = None
        self._channel: grpc.aio.Channel | None = None

    async def __aenter__(self) -> Watcher:
        limits = httpx.Limits(max_connections=len(self.buyers) + 4, max_keepalive_connections=0)
        self._http = httpx.AsyncClient(base_url=self.edge_url, limits=limits)
        first_token = next(iter(self.buyers.values()))
        readies = []
        if await sse_available(self._http, first_token):
            self.watch.via = "edge SSE " + SSE_PATH
            for user_id, token in self.buyers.items():
                ready = asyncio.Event()
                readies.append(ready)
                stream = _sse(self._http, user_id, token, self.watch, ready)
                self._tasks.append(asyncio.create_task(self._guard(stream)))
        else:
            self.watch.via = "notify_svc Subscribe (gRPC; the edge has no SSE route yet)"
            self._channel = self.notify()
            for user_id, token in self.buyers.items():
                ready = asyncio.Event()
                readies.append(ready)
                self._tasks.append(
                    asyncio.create_task(self._guard(_grpc(self._channel, user_id, token, self.watch, ready)))
                )
        # Every stream is subscribed before the first order is placed.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*(ready.wait() for ready in readies)), 20)
        return self

    async def _guard(self, stream: Any) -> None:
        try:
            await stream
        except (httpx.HTTPError, grpc.aio.AioRpcError) as exc:
            self.watch.failures.append(repr(exc)[:200])

    async def wait_for(self, expected: int, timeout: float) -> None:
        """Until ``expected`` order notifications arrived, or ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while len(self.order_arrivals()) < expected and time.monotonic() < deadline:  # noqa: ASYNC110 - polls a count
            await asyncio.sleep(0.2)

    def order_arrivals(self) -> list[Arrival]:
        return [a for a in self.watch.arrivals if a.order_id]

    async def __aexit__(self, *exc: object) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._http is not None:
            await self._http.aclose()
        if self._channel is not None:
            await self._channel.close()
