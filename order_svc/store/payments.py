"""Payments and the processor events already applied, within a unit of work."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import delete, insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from common.money import Money
from order_svc.domain import PaymentRecord, PaymentStatus, now
from order_svc.store.tables import payment_events, payments


def payment_of(row: Any) -> PaymentRecord:
    return PaymentRecord(
        id=row.id,
        order_id=row.order_id,
        amount=Money(row.amount_minor, row.currency),
        status=PaymentStatus(row.status),
        decline_reason=row.decline_reason,
        provider_reference=row.provider_reference,
        created_at=row.created_at,
        refunded_at=row.refunded_at,
        processor=row.processor,
    )


class PaymentRows:
    conn: AsyncConnection

    async def add_payment(self, payment: PaymentRecord) -> None:
        await self.conn.execute(
            insert(payments).values(
                id=payment.id,
                order_id=payment.order_id,
                amount_minor=payment.amount.amount_minor,
                currency=payment.amount.currency,
                status=payment.status.value,
                decline_reason=payment.decline_reason,
                provider_reference=payment.provider_reference,
                created_at=payment.created_at,
                refunded_at=payment.refunded_at,
                processor=payment.processor,
            )
        )

    async def update_payment(self, payment: PaymentRecord) -> None:
        """Write what can change of a payment: its status, decline reason, processor reference and refund."""
        await self.conn.execute(
            update(payments)
            .where(payments.c.id == payment.id)
            .values(
                status=payment.status.value,
                decline_reason=payment.decline_reason,
                provider_reference=payment.provider_reference,
                refunded_at=payment.refunded_at,
            )
        )

    async def refund_payment(self, payment_id: uuid.UUID) -> None:
        await self.conn.execute(
            update(payments)
            .where(payments.c.id == payment_id)
            .values(status=PaymentStatus.REFUNDED.value, refunded_at=now())
        )

    async def payment(self, payment_id: uuid.UUID) -> PaymentRecord | None:
        row = (await self.conn.execute(select(payments).where(payments.c.id == payment_id))).one_or_none()
        return payment_of(row) if row else None

    async def payment_by_reference(self, processor: str, reference: str) -> PaymentRecord | None:
        if not reference:
            return None
        row = (
            await self.conn.execute(
                select(payments).where(payments.c.processor == processor, payments.c.provider_reference == reference)
            )
        ).first()
        return payment_of(row) if row else None

    async def record_payment_event(self, processor: str, event_id: str, type_: str, order_id: uuid.UUID | None) -> bool:
        """Note a processor event as applied; False when it was already (a redelivery)."""
        inserted = await self.conn.scalar(
            pg_insert(payment_events)
            .values(processor=processor, event_id=event_id, type=type_, order_id=order_id, received_at=now())
            .on_conflict_do_nothing()
            .returning(payment_events.c.event_id)
        )
        return inserted is not None

    async def purge_payment_events(self, before: datetime) -> None:
        """Forget processor events too old to come back (processors stop redelivering after days)."""
        await self.conn.execute(delete(payment_events).where(payment_events.c.received_at < before))
