"""The stock safety net, within a unit of work: pending reservations (a
reservation asked for whose order is not written yet) and the stock actions
(releases and commits) still owed to product_svc."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from order_svc.domain import now
from order_svc.store.tables import pending_reservations, stock_actions

p = pending_reservations


class StockRows:
    conn: AsyncConnection

    async def note_pending_reservation(self, order_id: uuid.UUID) -> None:
        await self.conn.execute(pg_insert(p).values(order_id=order_id, created_at=now()).on_conflict_do_nothing())

    async def take_pending_reservation(self, order_id: uuid.UUID) -> bool:
        """Remove the note of ``order_id``; False when there was none (the sweeper,
        or another transaction, took it; one still committing is waited for)."""
        taken = await self.conn.scalar(delete(p).where(p.c.order_id == order_id).returning(p.c.order_id))
        return taken is not None

    async def take_orphaned_reservations(self, older_than: datetime, limit: int = 100) -> list[uuid.UUID]:
        """Remove and return the notes older than ``older_than`` (skipping any another transaction holds)."""
        rows = await self.conn.execute(
            delete(p)
            .where(
                p.c.order_id.in_(
                    select(p.c.order_id)
                    .where(p.c.created_at < older_than)
                    .limit(limit)
                    .with_for_update(skip_locked=True)
                    .scalar_subquery()
                )
            )
            .returning(p.c.order_id)
        )
        return [row.order_id for row in rows]

    async def add_stock_actions(self, order_ids: Sequence[uuid.UUID], action: str) -> None:
        """Owe product_svc ``action`` ("release" | "commit") for each of the orders."""
        if order_ids:
            await self.conn.execute(
                pg_insert(stock_actions)
                .values([{"order_id": o, "action": action, "created_at": now()} for o in order_ids])
                .on_conflict_do_nothing()
            )

    async def due_stock_actions(self, limit: int = 100) -> list[tuple[uuid.UUID, str]]:
        rows = await self.conn.execute(
            select(stock_actions.c.order_id, stock_actions.c.action).order_by(stock_actions.c.created_at).limit(limit)
        )
        return [(row.order_id, row.action) for row in rows]

    async def finish_stock_action(self, order_id: uuid.UUID, action: str) -> None:
        await self.conn.execute(
            delete(stock_actions).where(stock_actions.c.order_id == order_id, stock_actions.c.action == action)
        )
