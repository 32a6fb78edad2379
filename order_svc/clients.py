"""product_svc as order_svc sees it: prices now, and the stock reservation cycle."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

import grpc
from shop.product.v1 import product_pb2, product_pb2_grpc

from common.errors import from_upstream
from common.money import Money
from order_svc.domain import CatalogEntry, Item

DEPENDENCY = "product_svc"


class ProductClient:
    def __init__(self, channel: grpc.aio.Channel, timeout: float) -> None:
        self.stub = product_pb2_grpc.ProductServiceStub(channel)
        self.timeout = timeout

    async def catalog(self, product_ids: Sequence[str]) -> dict[str, CatalogEntry]:
        try:
            reply = await self.stub.BatchGetProducts(
                product_pb2.BatchGetProductsRequest(product_ids=list(product_ids)),
                timeout=self.timeout,
                wait_for_ready=True,
            )
        except grpc.aio.AioRpcError as exc:
            raise from_upstream(exc, DEPENDENCY) from exc
        return {
            product.id: CatalogEntry(
                product_id=product.id,
                name=product.name,
                price=Money(product.price.amount_minor, product.price.currency_code),
                active=product.status == product_pb2.PRODUCT_STATUS_ACTIVE,
                stock=product.stock,
                weight_grams=product.weight_grams,
                image_url=product.images[0].url if product.images else "",
            )
            for product in reply.products
        }

    async def reserve(self, order_id: uuid.UUID, items: Sequence[Item]) -> None:
        request = product_pb2.ReserveStockRequest(
            reservation_id=str(order_id),
            items=[product_pb2.ReservationItem(product_id=i.product_id, quantity=i.quantity) for i in items],
        )
        try:
            await self.stub.ReserveStock(request, timeout=self.timeout, wait_for_ready=True)
        except grpc.aio.AioRpcError as exc:
            raise from_upstream(exc, DEPENDENCY) from exc

    async def release(self, order_id: uuid.UUID) -> None:
        try:
            await self.stub.ReleaseReservation(
                product_pb2.ReleaseReservationRequest(reservation_id=str(order_id)),
                timeout=self.timeout,
                wait_for_ready=True,
            )
        except grpc.aio.AioRpcError as exc:
            raise from_upstream(exc, DEPENDENCY) from exc

    async def commit(self, order_id: uuid.UUID) -> None:
        try:
            await self.stub.CommitReservation(
                product_pb2.CommitReservationRequest(reservation_id=str(order_id)),
                timeout=self.timeout,
                wait_for_ready=True,
            )
        except grpc.aio.AioRpcError as exc:
            raise from_upstream(exc, DEPENDENCY) from exc
