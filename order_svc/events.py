"""The events order_svc publishes on ``shop.orders.v1`` (keyed by order id)."""

from __future__ import annotations

from shop.events.v1 import order_events_pb2 as ev

from common.convert import money_to_proto, optional_timestamp, timestamp
from order_svc.domain import CancelReason, Line, OrderRecord

CANCEL_REASONS = {
    CancelReason.CUSTOMER: ev.ORDER_CANCEL_REASON_CUSTOMER,
    CancelReason.ADMIN: ev.ORDER_CANCEL_REASON_ADMIN,
    CancelReason.EXPIRED: ev.ORDER_CANCEL_REASON_EXPIRED,
}


def _lines(lines: list[Line]) -> list[ev.OrderEventLine]:
    return [
        ev.OrderEventLine(
            product_id=line.product_id,
            product_name=line.product_name,
            quantity=line.quantity,
            unit_price=money_to_proto(line.unit_price),
            line_total=money_to_proto(line.line_total),
        )
        for line in lines
    ]


def created(order: OrderRecord) -> ev.OrderCreated:
    return ev.OrderCreated(
        order_id=str(order.id),
        user_id=str(order.user_id),
        lines=_lines(order.lines),
        subtotal=money_to_proto(order.subtotal),
        shipping=money_to_proto(order.shipping),
        total=money_to_proto(order.total),
        expires_at=optional_timestamp(order.expires_at),
        occurred_at=timestamp(order.created_at),
    )


def paid(order: OrderRecord, payment_id: str) -> ev.OrderPaid:
    assert order.paid_at is not None
    return ev.OrderPaid(
        order_id=str(order.id),
        user_id=str(order.user_id),
        payment_id=payment_id,
        amount=money_to_proto(order.total),
        occurred_at=timestamp(order.paid_at),
    )


def cancelled(order: OrderRecord) -> ev.OrderCancelled:
    assert order.cancelled_at is not None and order.cancel_reason is not None
    return ev.OrderCancelled(
        order_id=str(order.id),
        user_id=str(order.user_id),
        reason=CANCEL_REASONS[order.cancel_reason],
        refunded=order.refunded,
        refund_amount=money_to_proto(order.total) if order.refunded else None,
        lines=_lines(order.lines),
        occurred_at=timestamp(order.cancelled_at),
    )


def shipped(order: OrderRecord) -> ev.OrderShipped:
    assert order.shipped_at is not None
    return ev.OrderShipped(
        order_id=str(order.id),
        user_id=str(order.user_id),
        carrier=order.carrier or "",
        tracking_number=order.tracking_number or "",
        occurred_at=timestamp(order.shipped_at),
    )


def delivered(order: OrderRecord) -> ev.OrderDelivered:
    assert order.delivered_at is not None
    return ev.OrderDelivered(
        order_id=str(order.id),
        user_id=str(order.user_id),
        product_ids=[line.product_id for line in order.lines],
        occurred_at=timestamp(order.delivered_at),
    )
