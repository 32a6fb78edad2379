"""Idempotency keys, within a unit of work: rows read and written, never judged
(the rules are ``domain.judge_claim`` and ``domain.replay_of``)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import and_, delete, insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from order_svc.domain import KeyRef, StoredKey, now
from order_svc.store.tables import idempotency_keys

t = idempotency_keys


def _key(ref: KeyRef) -> Any:
    return and_(t.c.user_id == ref.user_id, t.c.scope == ref.scope, t.c.key == ref.key)


def _held(ref: KeyRef, holder: uuid.UUID) -> Any:
    return and_(_key(ref), t.c.holder == holder, t.c.done.is_(False))


def _stored(row: Any) -> StoredKey:
    return StoredKey(
        request_hash=row.request_hash,
        resource_id=row.resource_id,
        done=row.done,
        response=row.response,
        locked_until=row.locked_until,
    )


class KeyRows:
    conn: AsyncConnection

    async def add_key(
        self,
        ref: KeyRef,
        *,
        request_hash: str,
        resource_id: uuid.UUID,
        holder: uuid.UUID,
        created_at: datetime,
        locked_until: datetime,
        if_absent: bool,
    ) -> bool:
        """Write a claimed key; ``if_absent``: only if there is none (False when there is one)."""
        values = {
            "user_id": ref.user_id, "scope": ref.scope, "key": ref.key, "request_hash": request_hash,
            "resource_id": resource_id, "locked_until": locked_until, "created_at": created_at, "holder": holder,
        }  # fmt: skip
        if not if_absent:
            await self.conn.execute(insert(t).values(**values))
            return True
        inserted = await self.conn.scalar(pg_insert(t).values(**values).on_conflict_do_nothing().returning(t.c.key))
        return inserted is not None

    async def lock_key(self, ref: KeyRef) -> StoredKey | None:
        """The key's row, locked until the unit of work ends."""
        row = (await self.conn.execute(select(t).where(_key(ref)).with_for_update())).one_or_none()
        return _stored(row) if row is not None else None

    async def done_key(self, ref: KeyRef) -> StoredKey | None:
        """The key's row if its request completed."""
        row = (await self.conn.execute(select(t).where(_key(ref), t.c.done.is_(True)))).one_or_none()
        return _stored(row) if row is not None else None

    async def hand_over_key(
        self, ref: KeyRef, *, resource_id: uuid.UUID, holder: uuid.UUID, locked_until: datetime
    ) -> None:
        """Give the key to a new holder (a takeover)."""
        await self.conn.execute(
            update(t).where(_key(ref)).values(locked_until=locked_until, resource_id=resource_id, holder=holder)
        )

    async def complete_key(self, ref: KeyRef, holder: uuid.UUID, response: bytes) -> bool:
        """Store the response of the request holding the key; False when the key is
        no longer ``holder``'s (released, completed, or taken over by a retry)."""
        result = await self.conn.execute(update(t).where(_held(ref, holder)).values(done=True, response=response))
        return bool(result.rowcount)

    async def release_key(self, ref: KeyRef, holder: uuid.UUID) -> None:
        """Forget a claimed key, so a retry runs again; a key taken over in the
        meantime is left to its new holder."""
        await self.conn.execute(delete(t).where(_held(ref, holder)))

    async def lapse_key(self, ref: KeyRef, holder: uuid.UUID) -> None:
        """End ``holder``'s lease now and keep the key (a retry takes it over at once)."""
        await self.conn.execute(update(t).where(_held(ref, holder)).values(locked_until=now()))

    async def purge_keys(self, older_than: datetime) -> int:
        result = await self.conn.execute(delete(t).where(t.c.created_at < older_than))
        return int(result.rowcount or 0)
