"""Proto ⇄ domain for both servicers (OrderService and CartService); Timestamp,
Money and Address through common.convert."""

from __future__ import annotations

from collections.abc import Iterable

from google.protobuf.message import Message
from shop.common.v1 import money_pb2, paging_pb2
from shop.order.v1 import cart_pb2, order_pb2

from common.convert import address_to_proto, money_to_proto, optional_timestamp
from common.money import Money
from order_svc import domain
from order_svc.carts import PricedCart, Quote
from order_svc.domain import CancelReason, Keyed, OrderRecord, PaymentRecord, ShippingMethod, Status

STATUS_TO_PROTO = {status: order_pb2.OrderStatus.Value(f"ORDER_STATUS_{status.value}") for status in Status}
STATUS_OF_PROTO = {value: status for status, value in STATUS_TO_PROTO.items()}
METHOD_TO_PROTO = {
    ShippingMethod.STANDARD: order_pb2.SHIPPING_METHOD_STANDARD,
    ShippingMethod.EXPRESS: order_pb2.SHIPPING_METHOD_EXPRESS,
}
METHOD_OF_PROTO = {value: method for method, value in METHOD_TO_PROTO.items()}
CANCEL_TO_PROTO = {
    reason: order_pb2.CancellationReason.Value(f"CANCELLATION_REASON_{reason.value}") for reason in CancelReason
}


def optional_money(value: Money | None) -> money_pb2.Money | None:
    return money_to_proto(value) if value is not None else None


def keyed(key: str, request: Message) -> Keyed | None:
    """The idempotency key with the fingerprint of the rest of the request."""
    if not key:
        return None
    domain.validate_idempotency_key(key)
    unkeyed = type(request).FromString(request.SerializeToString())
    unkeyed.ClearField("idempotency_key")
    return Keyed(key=key, request_hash=domain.fingerprint(unkeyed.SerializeToString(deterministic=True)))


def method_of(value: int) -> ShippingMethod:
    """The shipping method of CreateOrder (unset: standard)."""
    return ShippingMethod.EXPRESS if value == order_pb2.SHIPPING_METHOD_EXPRESS else ShippingMethod.STANDARD


def statuses_of(values: Iterable[order_pb2.OrderStatus.ValueType]) -> tuple[Status, ...]:
    return tuple(STATUS_OF_PROTO[value] for value in values if value in STATUS_OF_PROTO)


def page_response(token: str) -> paging_pb2.PageResponse:
    return paging_pb2.PageResponse(next_page_token=token)


# --- orders -----------------------------------------------------------------------------------


def payment_to_proto(payment: PaymentRecord) -> order_pb2.Payment:
    return order_pb2.Payment(
        id=str(payment.id),
        order_id=str(payment.order_id),
        amount=money_to_proto(payment.amount),
        status=order_pb2.PaymentStatus.Value(f"PAYMENT_STATUS_{payment.status.value}"),
        decline_reason=(
            order_pb2.PaymentDeclineReason.Value(f"PAYMENT_DECLINE_REASON_{payment.decline_reason}")
            if payment.decline_reason
            else order_pb2.PAYMENT_DECLINE_REASON_UNSPECIFIED
        ),
        provider_reference=payment.provider_reference,
        created_at=optional_timestamp(payment.created_at),
        refunded_at=optional_timestamp(payment.refunded_at),
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
                unit_price=money_to_proto(line.unit_price),
                line_total=money_to_proto(line.line_total),
            )
            for line in order.lines
        ],
        shipping_address=address_to_proto(order.shipping_address),
        shipping_method=METHOD_TO_PROTO[order.shipping_method],
        subtotal=money_to_proto(order.subtotal),
        shipping=money_to_proto(order.shipping),
        total=money_to_proto(order.total),
        payments=[payment_to_proto(payment) for payment in order.payments],
        created_at=optional_timestamp(order.created_at),
        updated_at=optional_timestamp(order.updated_at),
        expires_at=optional_timestamp(order.expires_at) if order.status is Status.PENDING_PAYMENT else None,
        paid_at=optional_timestamp(order.paid_at),
        delivered_at=optional_timestamp(order.delivered_at),
    )
    if order.shipped_at is not None:
        message.shipment.CopyFrom(
            order_pb2.Shipment(
                carrier=order.carrier or "",
                tracking_number=order.tracking_number or "",
                shipped_at=optional_timestamp(order.shipped_at),
            )
        )
    if order.cancelled_at is not None and order.cancel_reason is not None:
        message.cancellation.CopyFrom(
            order_pb2.Cancellation(
                reason=CANCEL_TO_PROTO[order.cancel_reason],
                note=order.cancel_note or "",
                refunded=order.refunded,
                cancelled_at=optional_timestamp(order.cancelled_at),
            )
        )
    return message


def paid_to_proto(order: OrderRecord, payment: PaymentRecord) -> order_pb2.PayOrderResponse:
    return order_pb2.PayOrderResponse(order=order_to_proto(order), payment=payment_to_proto(payment))


def render_paid(order: OrderRecord) -> bytes:
    """The PayOrder response a repeat of the key answers with."""
    payment = order.approved_payment
    assert payment is not None
    return paid_to_proto(order, payment).SerializeToString()


def render_created(order: OrderRecord) -> bytes:
    return order_pb2.CreateOrderResponse(order=order_to_proto(order)).SerializeToString()


def render_checkout(order: OrderRecord) -> bytes:
    return cart_pb2.CheckoutResponse(order=order_to_proto(order)).SerializeToString()


# --- carts ------------------------------------------------------------------------------------


def cart_to_proto(cart: PricedCart) -> cart_pb2.Cart:
    return cart_pb2.Cart(
        cart_token=cart.who.token,
        user_id=str(cart.who.user_id) if cart.who.user_id else "",
        lines=[
            cart_pb2.CartLine(
                product_id=line.product_id,
                product_name=line.product_name,
                quantity=line.quantity,
                unit_price=optional_money(line.unit_price),
                line_total=optional_money(line.line_total),
                available_stock=line.available,
                archived=line.archived,
                insufficient_stock=line.insufficient,
                unavailable=line.unavailable,
                image_url=line.image_url,
                added_at=optional_timestamp(line.added_at),
            )
            for line in cart.lines
        ],
        subtotal=optional_money(cart.subtotal),
        item_count=cart.item_count,
        checkout_ready=cart.checkout_ready,
        expires_at=optional_timestamp(cart.expires_at),
    )


def quote_to_proto(quote: Quote) -> cart_pb2.ShippingQuote:
    return cart_pb2.ShippingQuote(
        method=METHOD_TO_PROTO[quote.method],
        price=money_to_proto(quote.price),
        free_shipping=quote.free,
        estimated_days_min=quote.days[0],
        estimated_days_max=quote.days[1],
    )
