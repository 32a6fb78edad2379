"""The services comment_svc asks, over gRPC (never their databases).

Every call waits for its channel to be ready within its deadline
(``wait_for_ready``), so a service that has just restarted is reached rather
than refused while the channel backs off; one that is down costs the deadline.

* product_svc — does the product exist?  Required: NOT_FOUND becomes NOT_FOUND,
  a product_svc that is down or slow becomes UNAVAILABLE (nothing is stored).
* order_svc — HasPurchased, for the verified-purchase mark, asked with the
  author's own token.  Best effort: any failure (down, not deployed yet,
  refused) means "not verified" and is logged; a review is never refused for it.
* user_svc — GetMe with the author's token, for the display name shown with the
  comment and carried by the events.  Best effort: empty when unknown.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING

import grpc
from shop.order.v1 import order_pb2, order_pb2_grpc
from shop.product.v1 import product_pb2, product_pb2_grpc
from shop.user.v1 import user_pb2, user_pb2_grpc

from comment_svc.settings import CommentSettings
from common import grpc_client
from common.errors import FieldViolation, NotFoundError, from_upstream
from common.tls import TlsFiles

if TYPE_CHECKING:
    ProductStub = product_pb2_grpc.ProductServiceAsyncStub
    OrderStub = order_pb2_grpc.OrderServiceAsyncStub
    UserStub = user_pb2_grpc.UserServiceAsyncStub

log = logging.getLogger("shop.comment.clients")

Metadata = Sequence[tuple[str, str]]

NAME_CACHE_MAX = 10_000


class Clients:
    def __init__(self, settings: CommentSettings) -> None:
        self.timeout = settings.upstream_timeout
        self.lookup_timeout = settings.display_name_timeout
        self.name_ttl = settings.display_name_ttl
        tls = TlsFiles.from_settings(settings)
        self.channels = [
            grpc_client.channel(settings.product_svc_addr, tls),
            grpc_client.channel(settings.order_svc_addr, tls),
            grpc_client.channel(settings.user_svc_addr, tls),
        ]
        self.product: ProductStub = product_pb2_grpc.ProductServiceStub(self.channels[0])
        self.order: OrderStub = order_pb2_grpc.OrderServiceStub(self.channels[1])
        self.user: UserStub = user_pb2_grpc.UserServiceStub(self.channels[2])
        self._names: dict[uuid.UUID, tuple[float, str]] = {}

    async def close(self) -> None:
        await asyncio.gather(*(channel.close() for channel in self.channels))

    async def require_product(self, product_id: uuid.UUID, metadata: Metadata = ()) -> None:
        """NOT_FOUND unless product_svc knows the product; UNAVAILABLE when it cannot say."""
        try:
            await self.product.GetProduct(
                product_pb2.GetProductRequest(product_id=str(product_id)),
                metadata=metadata,
                timeout=self.timeout,
                wait_for_ready=True,
            )
        except grpc.aio.AioRpcError as exc:
            code = exc.code()
            if code == grpc.StatusCode.NOT_FOUND:
                raise NotFoundError(
                    "no product with this id", violations=[FieldViolation("product_id", "no such product")]
                ) from exc
            log.warning(
                "product_svc could not confirm a product",
                extra={"code": code.name, "details": exc.details(), "product_id": str(product_id)},
            )
            raise from_upstream(exc, "product_svc") from exc

    async def has_purchased(self, user_id: uuid.UUID, product_id: uuid.UUID, metadata: Metadata) -> bool:
        """Whether order_svc confirms a DELIVERED order of the product; False when it cannot."""
        try:
            reply = await self.order.HasPurchased(
                order_pb2.HasPurchasedRequest(user_id=str(user_id), product_id=str(product_id)),
                metadata=metadata,
                timeout=self.timeout,
                wait_for_ready=True,
            )
        except grpc.aio.AioRpcError as exc:
            log.warning(
                "verified-purchase check failed; the review is stored as not verified",
                extra={"code": exc.code().name, "details": exc.details(), "product_id": str(product_id)},
            )
            return False
        return bool(reply.purchased)

    async def display_name(self, user_id: uuid.UUID, metadata: Metadata) -> str:
        """The caller's display name (GetMe with their token), cached briefly; "" when unknown."""
        cached = self._names.get(user_id)
        now = time.monotonic()
        if cached and cached[0] > now:
            return cached[1]
        try:
            reply = await self.user.GetMe(
                user_pb2.GetMeRequest(), metadata=metadata, timeout=self.lookup_timeout, wait_for_ready=True
            )
        except grpc.aio.AioRpcError as exc:
            log.info("no display name from user_svc", extra={"code": exc.code().name, "user_id": str(user_id)})
            return ""
        if reply.user.id != str(user_id):
            return ""
        if self.name_ttl > 0:
            if len(self._names) >= NAME_CACHE_MAX:
                self._names.clear()
            self._names[user_id] = (now + self.name_ttl, reply.user.display_name)
        return reply.user.display_name
