"""Orders and their lines, cart checkouts and the outbox, within a unit of work."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from google.protobuf.message import Message
from sqlalchemy import Select, and_, delete, func, insert, select, tuple_, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from common.money import Money
from common.outbox import add_event
from common.validation import Address
from order_svc.domain import (
    CancelReason,
    Line,
    OrderQuery,
    OrderRecord,
    Priced,
    ShippingMethod,
    Status,
    now,
)
from order_svc.store.payments import payment_of
from order_svc.store.tables import cart_checkouts, order_lines, orders, outbox, payments


def order_of(row: Any) -> OrderRecord:
    currency = row.currency
    return OrderRecord(
        id=row.id,
        user_id=row.user_id,
        status=Status(row.status),
        currency=currency,
        subtotal=Money(row.subtotal_minor, currency),
        shipping=Money(row.shipping_minor, currency),
        total=Money(row.total_minor, currency),
        shipping_method=ShippingMethod(row.shipping_method),
        shipping_address=Address(**row.shipping_address),
        carrier=row.carrier,
        tracking_number=row.tracking_number,
        cancel_reason=CancelReason(row.cancel_reason) if row.cancel_reason else None,
        cancel_note=row.cancel_note,
        refunded=row.refunded,
        created_at=row.created_at,
        updated_at=row.updated_at,
        expires_at=row.expires_at,
        paid_at=row.paid_at,
        shipped_at=row.shipped_at,
        delivered_at=row.delivered_at,
        cancelled_at=row.cancelled_at,
    )


def page_query(query: OrderQuery, *, limit: int, after: tuple[datetime, uuid.UUID] | None) -> Select[Any]:
    """The ids of a page of orders, newest first, keyset-paged on (created_at, id)."""
    found = select(orders.c.id).order_by(orders.c.created_at.desc(), orders.c.id.desc()).limit(limit)
    if query.user_id is not None:
        found = found.where(orders.c.user_id == query.user_id)
    if query.statuses:
        found = found.where(orders.c.status.in_([s.value for s in query.statuses]))
    if query.created_after is not None:
        found = found.where(orders.c.created_at >= query.created_after)
    if query.created_before is not None:
        found = found.where(orders.c.created_at < query.created_before)
    if after is not None:
        found = found.where(tuple_(orders.c.created_at, orders.c.id) < tuple_(*after))
    return found


class OrderRows:
    conn: AsyncConnection

    async def lock_user_orders(self, user_id: uuid.UUID) -> None:
        """Serialise this user's order placements until the unit of work ends (so a cap on a count holds)."""
        await self.conn.execute(select(func.pg_advisory_xact_lock(func.hashtextextended(str(user_id), 0))))

    async def count_unpaid(self, user_id: uuid.UUID) -> int:
        """How many orders of the user await payment."""
        count = await self.conn.scalar(
            select(func.count())
            .select_from(orders)
            .where(orders.c.user_id == user_id, orders.c.status == Status.PENDING_PAYMENT.value)
        )
        return int(count or 0)

    async def insert_order(
        self,
        *,
        order_id: uuid.UUID,
        user_id: uuid.UUID,
        priced: Priced,
        method: ShippingMethod,
        address: Address,
        created_at: datetime,
        expires_at: datetime,
    ) -> OrderRecord:
        """Write a new order and its lines and return it as written."""
        row = (
            await self.conn.execute(
                insert(orders)
                .values(
                    id=order_id,
                    user_id=user_id,
                    status=Status.PENDING_PAYMENT.value,
                    currency=priced.currency,
                    subtotal_minor=priced.subtotal.amount_minor,
                    shipping_minor=priced.shipping.amount_minor,
                    total_minor=priced.total.amount_minor,
                    shipping_method=method.value,
                    shipping_address=address.__dict__,
                    created_at=created_at,
                    updated_at=created_at,
                    expires_at=expires_at,
                )
                .returning(*orders.c)
            )
        ).one()
        await self.conn.execute(
            insert(order_lines),  # executemany: compiled once (a multi-row VALUES is not cached), pipelined by psycopg
            [
                {
                    "order_id": order_id,
                    "position": position,
                    "product_id": uuid.UUID(line.product_id),
                    "product_name": line.product_name,
                    "quantity": line.quantity,
                    "unit_price_minor": line.unit_price.amount_minor,
                    "line_total_minor": line.line_total.amount_minor,
                }
                for position, line in enumerate(priced.lines)
            ],
        )
        order = order_of(row)
        order.lines = list(priced.lines)  # a new order has no payments yet
        return order

    async def lock_order(self, order_id: uuid.UUID) -> OrderRecord | None:
        """The order (without lines or payments), locked until the unit of work ends."""
        row = (await self.conn.execute(select(orders).where(orders.c.id == order_id).with_for_update())).one_or_none()
        return order_of(row) if row else None

    async def _update_order(self, order_id: uuid.UUID, **values: Any) -> None:
        await self.conn.execute(update(orders).where(orders.c.id == order_id).values(updated_at=now(), **values))

    async def mark_paid(self, order_id: uuid.UUID, at: datetime) -> None:
        await self._update_order(order_id, status=Status.PAID.value, paid_at=at)

    async def mark_cancelled(
        self, order_id: uuid.UUID, reason: CancelReason, note: str, *, refunded: bool, at: datetime
    ) -> None:
        await self._update_order(
            order_id, status=Status.CANCELLED.value, cancel_reason=reason.value, cancel_note=note or None,
            refunded=refunded, cancelled_at=at,
        )  # fmt: skip

    async def mark_shipped(self, order_id: uuid.UUID, carrier: str, tracking_number: str, at: datetime) -> None:
        await self._update_order(
            order_id, status=Status.SHIPPED.value, carrier=carrier, tracking_number=tracking_number, shipped_at=at
        )

    async def mark_delivered(self, order_id: uuid.UUID, at: datetime) -> None:
        await self._update_order(order_id, status=Status.DELIVERED.value, delivered_at=at)

    async def order(self, order_id: uuid.UUID) -> OrderRecord | None:
        """The order with its lines and payments."""
        return (await self.orders([order_id])).get(order_id)

    async def orders(self, ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, OrderRecord]:
        if not ids:
            return {}
        conn = self.conn
        found = {row.id: order_of(row) for row in await conn.execute(select(orders).where(orders.c.id.in_(ids)))}
        line_rows = await conn.execute(
            select(order_lines).where(order_lines.c.order_id.in_(ids)).order_by(order_lines.c.position)
        )
        for row in line_rows:
            order = found[row.order_id]
            order.lines.append(
                Line(
                    product_id=str(row.product_id),
                    product_name=row.product_name,
                    quantity=row.quantity,
                    unit_price=Money(row.unit_price_minor, order.currency),
                    line_total=Money(row.line_total_minor, order.currency),
                )
            )
        payment_rows = await conn.execute(
            select(payments).where(payments.c.order_id.in_(ids)).order_by(payments.c.created_at)
        )
        for row in payment_rows:
            found[row.order_id].payments.append(payment_of(row))
        return found

    async def page(
        self, query: OrderQuery, *, limit: int, after: tuple[datetime, uuid.UUID] | None
    ) -> list[OrderRecord]:
        """Newest first, keyset-paged on (created_at, id): the orders after ``after``."""
        ids = list((await self.conn.execute(page_query(query, limit=limit, after=after))).scalars())
        details = await self.orders(ids)
        return [details[order_id] for order_id in ids]

    async def expired(self, at: datetime, limit: int = 100) -> list[uuid.UUID]:
        rows = await self.conn.execute(
            select(orders.c.id)
            .where(orders.c.status == Status.PENDING_PAYMENT.value, orders.c.expires_at < at)
            .order_by(orders.c.expires_at)
            .limit(limit)
        )
        return list(rows.scalars())

    async def first_delivery(self, user_id: uuid.UUID, product_id: uuid.UUID) -> datetime | None:
        delivered: datetime | None = await self.conn.scalar(
            select(func.min(orders.c.delivered_at))
            .select_from(orders.join(order_lines, order_lines.c.order_id == orders.c.id))
            .where(
                and_(
                    orders.c.user_id == user_id,
                    orders.c.status == Status.DELIVERED.value,
                    order_lines.c.product_id == product_id,
                )
            )
        )
        return delivered

    async def record_cart_checkout(self, owner: str, generation: str, order_id: uuid.UUID) -> uuid.UUID | None:
        """Note that this cart generation became ``order_id``; the order it already
        became when it did (the caller must roll back), else None."""
        c = cart_checkouts
        inserted = await self.conn.scalar(
            pg_insert(c)
            .values(owner=owner, generation=generation, order_id=order_id, created_at=now())
            .on_conflict_do_nothing()
            .returning(c.c.order_id)
        )
        if inserted is not None:
            return None
        earlier: uuid.UUID | None = await self.conn.scalar(
            select(c.c.order_id).where(c.c.owner == owner, c.c.generation == generation)
        )
        return earlier or order_id

    async def add_event(self, topic: str, key: str, message: Message) -> None:
        """An event to publish once the unit of work commits (the outbox)."""
        await add_event(self.conn, outbox, topic=topic, key=key, message=message)

    async def purge_cart_checkouts(self, before: datetime) -> None:
        """Forget cart checkouts too old to come back (a cart expires)."""
        await self.conn.execute(delete(cart_checkouts).where(cart_checkouts.c.created_at < before))
