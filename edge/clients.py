"""The outbound clients of the edge: one long-lived ``grpc.aio`` channel per service behind it."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from shop.comment.v1 import comment_pb2_grpc
from shop.notify.v1 import notify_pb2_grpc
from shop.order.v1 import cart_pb2_grpc, order_pb2_grpc
from shop.product.v1 import product_pb2_grpc
from shop.user.v1 import user_pb2_grpc
from starlette.requests import Request

from common import grpc_client
from common.tls import TlsFiles
from edge import forwarded
from edge.settings import EdgeSettings


class Clients:
    """The outbound clients of the edge: channels and stubs, opened in the app's lifespan.  A channel connects
    lazily, so a stub of a service that is not running costs nothing until
    it is called (and then answers 503)."""

    def __init__(self, settings: EdgeSettings, in_use: Sequence[str]) -> None:
        self.settings = settings
        self.addresses = {
            "user_svc": settings.user_svc_addr,
            "product_svc": settings.product_svc_addr,
            "order_svc": settings.order_svc_addr,
            "comment_svc": settings.comment_svc_addr,
            "notify_svc": settings.notify_svc_addr,
        }
        # The services the mounted routes call: readiness checks these.
        self.in_use = list(in_use)
        self.channels: dict[str, grpc.aio.Channel] = {}

    async def open(self) -> None:
        tls = TlsFiles.from_settings(self.settings)
        for name, address in self.addresses.items():
            self.channels[name] = grpc_client.channel(address, tls)
        self.user = user_pb2_grpc.UserServiceStub(self.channels["user_svc"])
        self.product = product_pb2_grpc.ProductServiceStub(self.channels["product_svc"])
        self.order = order_pb2_grpc.OrderServiceStub(self.channels["order_svc"])
        self.cart = cart_pb2_grpc.CartServiceStub(self.channels["order_svc"])
        self.comment = comment_pb2_grpc.CommentServiceStub(self.channels["comment_svc"])
        self.notify = notify_pb2_grpc.NotificationServiceStub(self.channels["notify_svc"])

    async def close(self) -> None:
        await asyncio.gather(*(channel.close() for channel in self.channels.values()))

    async def health(self) -> dict[str, str]:
        """Each upstream's gRPC health status (SERVING, NOT_SERVING, UNAVAILABLE…)."""

        async def check(name: str, channel: grpc.aio.Channel) -> tuple[str, str]:
            try:
                reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=1.0)
            except grpc.aio.AioRpcError as exc:
                return name, exc.code().name
            return name, health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)

        return dict(await asyncio.gather(*(check(name, self.channels[name]) for name in self.in_use)))


def clients(request: Request) -> Clients:
    found: Clients = request.app.state.clients
    return found


def call_options(request: Request) -> dict[str, Any]:
    """Deadline plus the metadata forwarded to a service: token, request id and,
    when no span carries it already, the request's ``traceparent``."""
    metadata = [("x-request-id", request.state.request_id)]
    context = getattr(request.state, "trace", None)
    if context is not None and not context.from_span:
        metadata.append(("traceparent", context.traceparent()))
    authorization = request.headers.get("authorization")
    if authorization:
        metadata.append(("authorization", authorization))
    return {"metadata": metadata, "timeout": request.app.state.settings.upstream_timeout}


def client_address(request: Request) -> str:
    """The client's address: the TCP peer's, or behind trusted proxies
    (``SHOP_TRUSTED_PROXIES``) the rightmost address in their forwarding header
    that is not one of them (edge/forwarded.py)."""
    settings: EdgeSettings = request.app.state.settings
    peer = request.client.host if request.client else ""
    if not settings.trusted_proxies:
        return peer
    values = request.headers.getlist(settings.forwarded_header)
    chain = (
        forwarded.forwarded_for(values)
        if settings.forwarded_header == "forwarded"
        else forwarded.x_forwarded_for(values)
    )
    return forwarded.client_address(peer, chain, settings.trusted_proxies)
