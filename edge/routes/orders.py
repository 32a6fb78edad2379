"""Orders and payments (``/api/v1/orders``, admin ``/api/v1/admin/orders``)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, Field
from shop.order.v1 import order_pb2
from starlette.requests import Request

from common.convert import optional_datetime_of, optional_timestamp
from edge.api import Api, Contract
from edge.clients import call_options, clients
from edge.problems import HttpProblemError
from edge.routes.models import Address, Money, PageQuery, Strict, Uuid

api = Api(upstreams=["order_svc"])

OrderStatus = Literal["pending_payment", "paid", "shipped", "delivered", "cancelled"]
STATUS_TO_PROTO: dict[str, order_pb2.OrderStatus.ValueType] = {
    name: order_pb2.OrderStatus.Value(f"ORDER_STATUS_{name.upper()}")
    for name in ("pending_payment", "paid", "shipped", "delivered", "cancelled")
}
STATUS_OF_PROTO = {value: name for name, value in STATUS_TO_PROTO.items()}
METHODS = {"standard": order_pb2.SHIPPING_METHOD_STANDARD, "express": order_pb2.SHIPPING_METHOD_EXPRESS}
METHOD_OF_PROTO = {value: name for name, value in METHODS.items()}


def _enum_name(prefix: str, name: str) -> str:
    return name.removeprefix(prefix).lower()


# --- shapes ---------------------------------------------------------------------


class OrderLine(BaseModel):
    product_id: Uuid
    product_name: str
    quantity: int
    unit_price: Money
    line_total: Money


class Payment(BaseModel):
    id: Uuid
    amount: Money
    status: str
    decline_reason: str | None
    created_at: datetime | None
    refunded_at: datetime | None


class Shipment(BaseModel):
    carrier: str
    tracking_number: str
    shipped_at: datetime | None


class Cancellation(BaseModel):
    reason: str
    note: str
    refunded: bool
    cancelled_at: datetime | None


class Order(BaseModel):
    id: Uuid
    user_id: Uuid
    status: OrderStatus
    lines: list[OrderLine]
    shipping_address: Address
    shipping_method: Literal["standard", "express"]
    subtotal: Money
    shipping: Money
    total: Money
    payments: list[Payment]
    shipment: Shipment | None
    cancellation: Cancellation | None
    created_at: datetime | None
    updated_at: datetime | None
    expires_at: datetime | None
    paid_at: datetime | None
    delivered_at: datetime | None

    @classmethod
    def of(cls, order: order_pb2.Order) -> Order:
        return cls(
            id=order.id,
            user_id=order.user_id,
            status=STATUS_OF_PROTO[order.status],
            lines=[
                OrderLine(
                    product_id=line.product_id,
                    product_name=line.product_name,
                    quantity=line.quantity,
                    unit_price=Money.of(line.unit_price),
                    line_total=Money.of(line.line_total),
                )
                for line in order.lines
            ],
            shipping_address=Address.of(order.shipping_address),
            shipping_method=METHOD_OF_PROTO.get(order.shipping_method, "standard"),
            subtotal=Money.of(order.subtotal),
            shipping=Money.of(order.shipping),
            total=Money.of(order.total),
            payments=[
                Payment(
                    id=p.id,
                    amount=Money.of(p.amount),
                    status=_enum_name("PAYMENT_STATUS_", order_pb2.PaymentStatus.Name(p.status)),
                    decline_reason=(
                        _enum_name("PAYMENT_DECLINE_REASON_", order_pb2.PaymentDeclineReason.Name(p.decline_reason))
                        if p.decline_reason
                        else None
                    ),
                    created_at=optional_datetime_of(p.created_at),
                    refunded_at=optional_datetime_of(p.refunded_at),
                )
                for p in order.payments
            ],
            shipment=(
                Shipment(
                    carrier=order.shipment.carrier,
                    tracking_number=order.shipment.tracking_number,
                    shipped_at=optional_datetime_of(order.shipment.shipped_at),
                )
                if order.HasField("shipment")
                else None
            ),
            cancellation=(
                Cancellation(
                    reason=_enum_name(
                        "CANCELLATION_REASON_", order_pb2.CancellationReason.Name(order.cancellation.reason)
                    ),
                    note=order.cancellation.note,
                    refunded=order.cancellation.refunded,
                    cancelled_at=optional_datetime_of(order.cancellation.cancelled_at),
                )
                if order.HasField("cancellation")
                else None
            ),
            created_at=optional_datetime_of(order.created_at),
            updated_at=optional_datetime_of(order.updated_at),
            expires_at=optional_datetime_of(order.expires_at),
            paid_at=optional_datetime_of(order.paid_at),
            delivered_at=optional_datetime_of(order.delivered_at),
        )


class PaidOrder(BaseModel):
    order: Order
    payment: Payment


class OrderPage(BaseModel):
    items: list[Order]
    next_page_token: str


class ItemIn(Strict):
    product_id: Annotated[Uuid, Field(min_length=1, max_length=64)]
    quantity: Annotated[int, Field(ge=1, le=1000)]


class NewOrder(Strict):
    items: Annotated[list[ItemIn], Field(min_length=1, max_length=100)]
    shipping_address: Address
    shipping_method: Literal["standard", "express"] = "standard"


class PaymentIn(Strict):
    payment_method_token: Annotated[str, Field(min_length=1, max_length=200)]


class CancelIn(Strict):
    note: Annotated[str, Field(max_length=500)] = ""


class ShipIn(Strict):
    carrier: Annotated[str, Field(min_length=1, max_length=100)]
    tracking_number: Annotated[str, Field(min_length=1, max_length=100)]


class MyOrdersQuery(PageQuery):
    status: OrderStatus | None = None


class AdminOrdersQuery(PageQuery):
    status: OrderStatus | None = None
    user_id: Annotated[Uuid, Field(max_length=64)] | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None


def idempotency_key(request: Request) -> str:
    """The optional ``Idempotency-Key`` header: a repeat with the same body gets
    the first response; the same key with another body gets 422."""
    key = request.headers.get("idempotency-key", "")
    if len(key) > 255 or any(not ch.isprintable() for ch in key):
        raise HttpProblemError(400, "Idempotency-Key must be 1 to 255 printable characters")
    return key


# --- routes -----------------------------------------------------------------------


@api.operation("POST", "/api/v1/orders", Contract(
    summary="Place an order (send an Idempotency-Key)", tag="orders",
    body=NewOrder, response=Order, status=201, auth=True, errors=(404, 409, 422, 503),
    headers=("Idempotency-Key",), limits=("orders",),
))  # fmt: skip
async def create_order(request: Request, body: NewOrder) -> Order:
    """Prices come from the catalog at this moment, never from the client. 409
    names the product that is out of stock, archived, or priced in another currency,
    or says that the caller holds as many unpaid orders as allowed
    (`unpaid_orders_limit`: pay or cancel one first). Too many orders placed lately
    get 429 with `Retry-After`, `RateLimit-Policy` and `RateLimit`."""
    reply = await clients(request).order.CreateOrder(
        order_pb2.CreateOrderRequest(
            items=[order_pb2.OrderItem(product_id=i.product_id, quantity=i.quantity) for i in body.items],
            shipping_address=body.shipping_address.to_proto(),
            shipping_method=METHODS[body.shipping_method],
            idempotency_key=idempotency_key(request),
        ),
        **call_options(request),
    )
    return Order.of(reply.order)


@api.operation("GET", "/api/v1/orders", Contract(
    summary="The caller's orders, newest first", tag="orders",
    query=MyOrdersQuery, response=OrderPage, auth=True,
))  # fmt: skip
async def list_my_orders(request: Request, query: MyOrdersQuery) -> OrderPage:
    reply = await clients(request).order.ListMyOrders(
        order_pb2.ListMyOrdersRequest(
            page=query.page(),
            status=STATUS_TO_PROTO[query.status] if query.status else order_pb2.ORDER_STATUS_UNSPECIFIED,
        ),
        **call_options(request),
    )
    return OrderPage(items=[Order.of(o) for o in reply.orders], next_page_token=reply.page.next_page_token)


@api.operation("GET", "/api/v1/orders/{order_id}", Contract(
    summary="One order (its buyer or an admin)", tag="orders",
    response=Order, auth=True, errors=(404,),
))  # fmt: skip
async def get_order(request: Request) -> Order:
    reply = await clients(request).order.GetOrder(
        order_pb2.GetOrderRequest(order_id=request.path_params["order_id"]), **call_options(request)
    )
    return Order.of(reply.order)


@api.operation("POST", "/api/v1/orders/{order_id}/pay", Contract(
    summary="Pay an order (send an Idempotency-Key)", tag="orders",
    body=PaymentIn, response=PaidOrder, auth=True, errors=(402, 404, 409, 422, 502),
    headers=("Idempotency-Key",),
))  # fmt: skip
async def pay_order(request: Request, body: PaymentIn) -> PaidOrder:
    """With the test processor (``SHOP_PAYMENT_PROCESSOR=test``, the default) the
    tokens are ``tok_approve``, ``tok_decline``, ``tok_insufficient_funds``,
    ``tok_processor_error``; with Stripe a PaymentMethod id (``pm_card_visa``…).
    A declined payment (402) leaves the order payable. 409 ``payment_pending``: the
    processor confirms later (the order becomes paid by its webhook). 502: the
    processor failed (nothing charged) or did not answer (``payment_outcome_unknown``:
    retry with the same Idempotency-Key; it is never charged twice)."""
    reply = await clients(request).order.PayOrder(
        order_pb2.PayOrderRequest(
            order_id=request.path_params["order_id"],
            payment_method_token=body.payment_method_token,
            idempotency_key=idempotency_key(request),
        ),
        **call_options(request),
    )
    order = Order.of(reply.order)
    return PaidOrder(order=order, payment=next(p for p in order.payments if p.id == reply.payment.id))


@api.operation("POST", "/api/v1/orders/{order_id}/cancel", Contract(
    summary="Cancel an unshipped order (stock back, refund)",
    tag="orders", body=CancelIn, response=Order, auth=True, errors=(404, 409),
))  # fmt: skip
async def cancel_order(request: Request, body: CancelIn) -> Order:
    reply = await clients(request).order.CancelOrder(
        order_pb2.CancelOrderRequest(order_id=request.path_params["order_id"], note=body.note),
        **call_options(request),
    )
    return Order.of(reply.order)


@api.operation("POST", "/api/v1/orders/{order_id}/ship", Contract(
    summary="Mark a paid order shipped (admin)", tag="orders",
    body=ShipIn, response=Order, auth=True, errors=(403, 404, 409),
))  # fmt: skip
async def ship_order(request: Request, body: ShipIn) -> Order:
    reply = await clients(request).order.ShipOrder(
        order_pb2.ShipOrderRequest(
            order_id=request.path_params["order_id"], carrier=body.carrier, tracking_number=body.tracking_number
        ),
        **call_options(request),
    )
    return Order.of(reply.order)


@api.operation("POST", "/api/v1/orders/{order_id}/deliver", Contract(
    summary="Mark a shipped order delivered (admin)", tag="orders",
    response=Order, auth=True, errors=(403, 404, 409),
))  # fmt: skip
async def deliver_order(request: Request) -> Order:
    reply = await clients(request).order.DeliverOrder(
        order_pb2.DeliverOrderRequest(order_id=request.path_params["order_id"]), **call_options(request)
    )
    return Order.of(reply.order)


@api.operation("GET", "/api/v1/admin/orders", Contract(
    summary="All orders with filters (admin)", tag="orders",
    query=AdminOrdersQuery, response=OrderPage, auth=True, errors=(403,),
))  # fmt: skip
async def list_orders(request: Request, query: AdminOrdersQuery) -> OrderPage:
    message = order_pb2.ListOrdersRequest(
        page=query.page(),
        statuses=[STATUS_TO_PROTO[query.status]] if query.status else [],
        created_after=optional_timestamp(query.created_after),
        created_before=optional_timestamp(query.created_before),
    )
    if query.user_id:
        message.user_id = query.user_id
    reply = await clients(request).order.ListOrders(message, **call_options(request))
    return OrderPage(items=[Order.of(o) for o in reply.orders], next_page_token=reply.page.next_page_token)
