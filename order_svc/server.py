"""The gRPC servicer of order_svc: proto in → use case → proto out."""

from __future__ import annotations

from datetime import UTC, datetime

from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from shop.common.v1 import money_pb2, paging_pb2
from shop.order.v1 import order_pb2, order_pb2_grpc

from common.auth import require_admin, require_user
from common.convert import address_from_proto, address_to_proto
from common.grpc_server import Context
from common.identity import callers
from common.money import Money
from common.validation import (
    Cursor,
    decode_page_token,
    encode_page_token,
    filters_key,
    page_size,
    require_uuid,
)
from order_svc import domain
from order_svc.domain import CancelReason, Item, ShippingMethod, Status
from order_svc.orders import Caller, Keyed, Orders
from order_svc.store import OrderRecord, PaymentRecord

STATUS_TO_PROTO = {status: order_pb2.OrderStatus.Value(f"ORDER_STATUS_{status.value}") for status in Status}
STATUS_OF_PROTO = {value: status for status, value in STATUS_TO_PROTO.items()}
METHOD_TO_PROTO = {
    ShippingMethod.STANDARD: order_pb2.SHIPPING_METHOD_STANDARD,
    ShippingMethod.EXPRESS: order_pb2.SHIPPING_METHOD_EXPRESS,
}
CANCEL_TO_PROTO = {
    reason: order_pb2.CancellationReason.Value(f"CANCELLATION_REASON_{reason.value}") for reason in CancelReason
}


def _money(value: Money) -> money_pb2.Money:
    return money_pb2.Money(amount_minor=value.amount_minor, currency_code=value.currency)


def _ts(moment: datetime | None) -> Timestamp | None:
    if moment is None:
        return None
    stamp = Timestamp()
    stamp.FromDatetime(moment)
    return stamp


def payment_to_proto(payment: PaymentRecord) -> order_pb2.Payment:
    return order_pb2.Payment(
        id=str(payment.id),
        order_id=str(payment.order_id),
        amount=_money(payment.amount),
        status=order_pb2.PaymentStatus.Value(f"PAYMENT_STATUS_{payment.status.value}"),
        decline_reason=(
            order_pb2.PaymentDeclineReason.Value(f"PAYMENT_DECLINE_REASON_{payment.decline_reason}")
            if payment.decline_reason
            else order_pb2.PAYMENT_DECLINE_REASON_UNSPECIFIED
        ),
        provider_reference=payment.provider_reference,
        created_at=_ts(payment.created_at),
        refunded_at=_ts(payment.refunded_at),
    )


def order_to_proto(order: OrderRecord) -> order_pb2.Order:
    message = order_pb2.Order(
        id=str(order.id),
        user_id=str(order.user_id),
        status=STATUS_TO_PROTO[order.status],
        lines=[
            order_pb2.OrderLine(
                product_id=line.product_id,
                product_name=line.product_name,
                quantity=line.quantity,
                unit_price=_money(line.unit_price),
                line_total=_money(line.line_total),
            )
            for line in order.lines
        ],
        shipping_address=address_to_proto(order.shipping_address),
        shipping_method=METHOD_TO_PROTO[order.shipping_method],
        subtotal=_money(order.subtotal),
        shipping=_money(order.shipping),
        total=_money(order.total),
        payments=[payment_to_proto(payment) for payment in order.payments],
        created_at=_ts(order.created_at),
        updated_at=_ts(order.updated_at),
        expires_at=_ts(order.expires_at) if order.status is Status.PENDING_PAYMENT else None,
        paid_at=_ts(order.paid_at),
        delivered_at=_ts(order.delivered_at),
    )
    if order.shipped_at is not None:
        message.shipment.CopyFrom(
            order_pb2.Shipment(
                carrier=order.carrier or "",
                tracking_number=order.tracking_number or "",
                shipped_at=_ts(order.shipped_at),
            )
        )
    if order.cancelled_at is not None and order.cancel_reason is not None:
        message.cancellation.CopyFrom(
            order_pb2.Cancellation(
                reason=CANCEL_TO_PROTO[order.cancel_reason],
                note=order.cancel_note or "",
                refunded=order.refunded,
                cancelled_at=_ts(order.cancelled_at),
            )
        )
    return message


def _caller() -> Caller:
    principal = require_user()
    return Caller(user_id=require_uuid(principal.user_id, "authorization", "a user id"), admin=principal.is_admin)


def _keyed(key: str, request: Message) -> Keyed | None:
    """The idempotency key with the fingerprint of the rest of the request."""
    if not key:
        return None
    domain.validate_idempotency_key(key)
    unkeyed = type(request).FromString(request.SerializeToString())
    unkeyed.ClearField("idempotency_key")
    return Keyed(key=key, request_hash=domain.fingerprint(unkeyed.SerializeToString(deterministic=True)))


def _method(value: int) -> ShippingMethod:
    return ShippingMethod.EXPRESS if value == order_pb2.SHIPPING_METHOD_EXPRESS else ShippingMethod.STANDARD


class OrderService(order_pb2_grpc.OrderServiceServicer):
    def __init__(self, orders: Orders) -> None:
        self.orders = orders

    @callers("edge")
    async def CreateOrder(
        self, request: order_pb2.CreateOrderRequest, context: Context
    ) -> order_pb2.CreateOrderResponse:
        caller = _caller()
        keyed = _keyed(request.idempotency_key, request)
        result = await self.orders.create(
            caller,
            [Item(item.product_id, item.quantity) for item in request.items],
            address_from_proto(request.shipping_address),
            _method(request.shipping_method),
            keyed,
            render=lambda order: order_pb2.CreateOrderResponse(order=order_to_proto(order)).SerializeToString(),
        )
        if isinstance(result, bytes):
            return order_pb2.CreateOrderResponse.FromString(result)
        return order_pb2.CreateOrderResponse(order=order_to_proto(result))

    @callers("edge")
    async def GetOrder(self, request: order_pb2.GetOrderRequest, context: Context) -> order_pb2.GetOrderResponse:
        order = await self.orders.get(_caller(), require_uuid(request.order_id, "order_id", "an order id"))
        return order_pb2.GetOrderResponse(order=order_to_proto(order))

    @callers("edge")
    async def ListMyOrders(
        self, request: order_pb2.ListMyOrdersRequest, context: Context
    ) -> order_pb2.ListMyOrdersResponse:
        caller = _caller()
        statuses = [STATUS_OF_PROTO[request.status]] if request.status in STATUS_OF_PROTO else []
        orders, token = await self._page(request.page, ("mine", caller.user_id, statuses), user_id=caller.user_id,
                                         statuses=statuses)  # fmt: skip
        return order_pb2.ListMyOrdersResponse(
            orders=[order_to_proto(o) for o in orders], page=paging_pb2.PageResponse(next_page_token=token)
        )

    @callers("edge")
    async def ListOrders(self, request: order_pb2.ListOrdersRequest, context: Context) -> order_pb2.ListOrdersResponse:
        require_admin()
        statuses = [STATUS_OF_PROTO[s] for s in request.statuses if s in STATUS_OF_PROTO]
        user_id = require_uuid(request.user_id, "user_id", "a user id") if request.HasField("user_id") else None
        after = request.created_after.ToDatetime(tzinfo=UTC) if request.HasField("created_after") else None
        before = request.created_before.ToDatetime(tzinfo=UTC) if request.HasField("created_before") else None
        orders, token = await self._page(
            request.page, ("all", user_id, statuses, after, before), user_id=user_id, statuses=statuses,
            created_after=after, created_before=before,
        )  # fmt: skip
        return order_pb2.ListOrdersResponse(
            orders=[order_to_proto(o) for o in orders], page=paging_pb2.PageResponse(next_page_token=token)
        )

    async def _page(
        self, page: paging_pb2.PageRequest, filters: tuple[object, ...], **query: object
    ) -> tuple[list[OrderRecord], str]:
        size = page_size(page.page_size)
        key = filters_key(*filters)
        after = decode_page_token(page.page_token, key)
        orders = await self.orders.store.page(limit=size + 1, after=after, **query)  # type: ignore[arg-type]
        token = ""
        if len(orders) > size:
            orders = orders[:size]
            last = orders[-1]
            token = encode_page_token(Cursor(created_at=last.created_at, id=last.id), key)
        return orders, token

    @callers("edge")
    async def PayOrder(self, request: order_pb2.PayOrderRequest, context: Context) -> order_pb2.PayOrderResponse:
        caller = _caller()
        order_id = require_uuid(request.order_id, "order_id", "an order id")
        keyed = _keyed(request.idempotency_key, request)

        def render(order: OrderRecord) -> bytes:
            payment = order.approved_payment
            assert payment is not None
            return order_pb2.PayOrderResponse(
                order=order_to_proto(order), payment=payment_to_proto(payment)
            ).SerializeToString()

        result = await self.orders.pay(caller, order_id, request.payment_method_token, keyed, render)
        if isinstance(result, bytes):
            return order_pb2.PayOrderResponse.FromString(result)
        order, payment = result
        return order_pb2.PayOrderResponse(order=order_to_proto(order), payment=payment_to_proto(payment))

    @callers("edge")
    async def CancelOrder(
        self, request: order_pb2.CancelOrderRequest, context: Context
    ) -> order_pb2.CancelOrderResponse:
        order = await self.orders.cancel(
            _caller(), require_uuid(request.order_id, "order_id", "an order id"), request.note
        )
        return order_pb2.CancelOrderResponse(order=order_to_proto(order))

    @callers("edge")
    async def ShipOrder(self, request: order_pb2.ShipOrderRequest, context: Context) -> order_pb2.ShipOrderResponse:
        require_admin()
        order = await self.orders.ship(
            require_uuid(request.order_id, "order_id", "an order id"), request.carrier, request.tracking_number
        )
        return order_pb2.ShipOrderResponse(order=order_to_proto(order))

    @callers("edge")
    async def DeliverOrder(
        self, request: order_pb2.DeliverOrderRequest, context: Context
    ) -> order_pb2.DeliverOrderResponse:
        require_admin()
        order = await self.orders.deliver(require_uuid(request.order_id, "order_id", "an order id"))
        return order_pb2.DeliverOrderResponse(order=order_to_proto(order))

    # The verified-purchase mark of a review: comment_svc only.
    @callers("comment_svc")
    async def HasPurchased(
        self, request: order_pb2.HasPurchasedRequest, context: Context
    ) -> order_pb2.HasPurchasedResponse:
        delivered = await self.orders.purchased(
            _caller(),
            require_uuid(request.user_id, "user_id", "a user id"),
            require_uuid(request.product_id, "product_id", "a product id"),
        )
        return order_pb2.HasPurchasedResponse(purchased=delivered is not None, first_delivered_at=_ts(delivered))

    @callers("edge")
    async def HandleStripeEvent(
        self, request: order_pb2.HandleStripeEventRequest, context: Context
    ) -> order_pb2.HandleStripeEventResponse:
        # No caller token: the event's signature (verified in the use case) is its credential.
        done = await self.orders.apply_stripe_event(request.payload, request.signature)
        return order_pb2.HandleStripeEventResponse(
            event_id=done.event_id, duplicate=done.duplicate, applied=done.applied,
            order_id=str(done.order_id) if done.order_id else "", note=done.note,
        )  # fmt: skip
