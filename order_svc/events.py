"""The events order_svc publishes on ``shop.orders.v1`` (keyed by order id)."""

from __future__ import annotations

from datetime import datetime

from google.protobuf.timestamp_pb2 import Timestamp
from shop.common.v1 import money_pb2
from shop.events.v1 import order_events_pb2 as ev

from common.money import Money
from order_svc.domain import CancelReason, Line
from order_svc.store import OrderRecord

CANCEL_REASONS = {
    CancelReason.CUSTOMER: ev.ORDER_CANCEL_REASON_CUSTOMER,
    CancelReason.ADMIN: ev.ORDER_CANCEL_REASON_ADMIN,
    CancelReason.EXPIRED: ev.ORDER_CANCEL_REASON_EXPIRED,
}


def money(value: Money) -> money_pb2.Money:
    return money_pb2.Money(amount_minor=value.amount_minor, currency_code=value.currency)


def stamp(moment: datetime) -> Timestamp:
    result = Timestamp()
    result.FromDatetime(moment)
    return result


def _lines(lines: list[Line]) -> list[ev.OrderEventLine]:
    return [
        ev.OrderEventLine(
            product_id=line.product_id,
            product_name=line.product_name,
            quantity=line.quantity,
            unit_price=money(line.unit_price),
            line_total=money(line.line_total),
        )
        for line in lines
    ]


def created(order: OrderRecord) -> ev.OrderCreated:
    return ev.OrderCreated(
        order_id=str(order.id),
        user_id=str(order.user_id),
        lines=_lines(order.lines),
        subtotal=money(order.subtotal),
        shipping=money(order.shipping),
        total=money(order.total),
        expires_at=stamp(order.expires_at) if order.expires_at else None,
        occurred_at=stamp(order.created_at),
    )


def paid(order: OrderRecord, payment_id: str) -> ev.OrderPaid:
    assert order.paid_at is not None
    return ev.OrderPaid(
        order_id=str(order.id),
        user_id=str(order.user_id),
        payment_id=payment_id,
        amount=money(order.total),
        occurred_at=stamp(order.paid_at),
    )


def cancelled(order: OrderRecord) -> ev.OrderCancelled:
    assert order.cancelled_at is not None and order.cancel_reason is not None
    return ev.OrderCancelled(
        order_id=str(order.id),
        user_id=str(order.user_id),
        reason=CANCEL_REASONS[order.cancel_reason],
        refunded=order.refunded,
        refund_amount=money(order.total) if order.refunded else None,
        lines=_lines(order.lines),
        occurred_at=stamp(order.cancelled_at),
    )


def shipped(order: OrderRecord) -> ev.OrderShipped:
    assert order.shipped_at is not None
    return ev.OrderShipped(
        order_id=str(order.id),
        user_id=str(order.user_id),
        carrier=order.carrier or "",
        tracking_number=order.tracking_number or "",
        occurred_at=stamp(order.shipped_at),
    )


def delivered(order: OrderRecord) -> ev.OrderDelivered:
    assert order.delivered_at is not None
    return ev.OrderDelivered(
        order_id=str(order.id),
        user_id=str(order.user_id),
        product_ids=[line.product_id for line in order.lines],
        occurred_at=stamp(order.delivered_at),
    )
