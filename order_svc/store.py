"""Persistence of orders: the only module that knows the tables (SQLAlchemy Core, async).

Besides orders, their lines and payments it keeps:

* ``idempotency_keys``: one row per (buyer, scope, key), claimed before the work
  and completed with the response in the work's own transaction;
* ``pending_reservations``: a stock reservation asked for but whose order is
  not written yet; an order's transaction removes its row, and the sweeper
  releases the reservation of any row left behind (a crash, a timeout);
* ``stock_actions``: releases and commits of reservations still to be sent to
  product_svc, written in the same transaction as the state change that needs
  them, so none is lost when product_svc is down;
* ``payment_events``: the payment processor's events (Stripe webhooks) already
  applied, by id, written in the transaction of their effect;
* ``cart_checkouts``: which order a cart generation became, written in the
  order's transaction, so one cart generation never becomes two orders;
* ``outbox``: the events (common/outbox.py).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    Uuid,
    and_,
    delete,
    false,
    func,
    insert,
    select,
    tuple_,
    update,
)
from sqlalchemy.dialects.postgresql import JSONB, insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from common.money import Money
from common.outbox import outbox_table
from common.validation import Address, Cursor
from order_svc.domain import CancelReason, Line, Priced, ShippingMethod, Status

metadata = MetaData()
TZ = DateTime(timezone=True)

orders = Table(
    "orders",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column("user_id", Uuid, nullable=False),
    Column("status", Text, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("subtotal_minor", BigInteger, nullable=False),
    Column("shipping_minor", BigInteger, nullable=False),
    Column("total_minor", BigInteger, nullable=False),
    Column("shipping_method", Text, nullable=False),
    Column("shipping_address", JSONB, nullable=False),
    Column("carrier", Text),
    Column("tracking_number", Text),
    Column("cancel_reason", Text),
    Column("cancel_note", Text),
    Column("refunded", Boolean, nullable=False, server_default=false()),
    Column("created_at", TZ, nullable=False),
    Column("updated_at", TZ, nullable=False),
    Column("expires_at", TZ),
    Column("paid_at", TZ),
    Column("shipped_at", TZ),
    Column("delivered_at", TZ),
    Column("cancelled_at", TZ),
)
Index("orders_user_created", orders.c.user_id, orders.c.created_at.desc(), orders.c.id.desc())
Index("orders_created", orders.c.created_at.desc(), orders.c.id.desc())
Index("orders_expiring", orders.c.expires_at, postgresql_where=orders.c.status == Status.PENDING_PAYMENT.value)

order_lines = Table(
    "order_lines",
    metadata,
    Column("order_id", Uuid, ForeignKey("orders.id", ondelete="CASCADE"), nullable=False),
    Column("position", Integer, nullable=False),
    Column("product_id", Uuid, nullable=False),
    Column("product_name", Text, nullable=False),
    Column("quantity", Integer, nullable=False),
    Column("unit_price_minor", BigInteger, nullable=False),
    Column("line_total_minor", BigInteger, nullable=False),
    PrimaryKeyConstraint("order_id", "position"),
)
Index("order_lines_product", order_lines.c.product_id)

payments = Table(
    "payments",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column("order_id", Uuid, ForeignKey("orders.id", ondelete="CASCADE"), nullable=False, index=True),
    Column("amount_minor", BigInteger, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("status", Text, nullable=False),
    Column("decline_reason", Text),
    Column("provider_reference", Text, nullable=False, server_default=""),
    Column("created_at", TZ, nullable=False),
    Column("refunded_at", TZ),
    # The processor that took it ("test" | "stripe"): the one that refunds it.
    Column("processor", Text, nullable=False, server_default="test"),
)
# At most one approved charge per order: never charged twice.
Index("payments_one_charge", payments.c.order_id, unique=True, postgresql_where=payments.c.status == "APPROVED")
Index(
    "payments_reference",
    payments.c.processor,
    payments.c.provider_reference,
    postgresql_where=payments.c.provider_reference != "",
)

idempotency_keys = Table(
    "idempotency_keys",
    metadata,
    Column("user_id", Uuid, nullable=False),
    Column("scope", Text, nullable=False),
    Column("key", Text, nullable=False),
    Column("request_hash", Text, nullable=False),
    Column("resource_id", Uuid, nullable=False),
    Column("done", Boolean, nullable=False, server_default=false()),
    Column("response", LargeBinary),
    Column("locked_until", TZ, nullable=False),
    Column("created_at", TZ, nullable=False),
    # This claim's own token: only the current holder completes, releases or lapses the key.
    Column("holder", Uuid, nullable=False, server_default=func.gen_random_uuid()),
    PrimaryKeyConstraint("user_id", "scope", "key"),
)
Index("idempotency_keys_created", idempotency_keys.c.created_at)

pending_reservations = Table(
    "pending_reservations",
    metadata,
    Column("order_id", Uuid, primary_key=True),
    Column("created_at", TZ, nullable=False),
)

stock_actions = Table(
    "stock_actions",
    metadata,
    Column("order_id", Uuid, nullable=False),
    Column("action", Text, nullable=False),  # "release" | "commit"
    Column("created_at", TZ, nullable=False),
    Column("attempts", Integer, nullable=False, server_default="0"),
    PrimaryKeyConstraint("order_id", "action"),
)

payment_events = Table(
    "payment_events",
    metadata,
    Column("processor", Text, nullable=False),
    Column("event_id", Text, nullable=False),
    Column("type", Text, nullable=False),
    Column("order_id", Uuid),
    Column("received_at", TZ, nullable=False),
    PrimaryKeyConstraint("processor", "event_id"),
)
Index("payment_events_received", payment_events.c.received_at)

cart_checkouts = Table(
    "cart_checkouts",
    metadata,
    Column("owner", Text, nullable=False),
    Column("generation", Text, nullable=False),
    Column("order_id", Uuid, nullable=False),
    Column("created_at", TZ, nullable=False),
    PrimaryKeyConstraint("owner", "generation"),
)
Index("cart_checkouts_created", cart_checkouts.c.created_at)

outbox = outbox_table(metadata)


def now() -> datetime:
    return datetime.now(UTC)


# --- records ---------------------------------------------------------------------------


class PaymentStatus(StrEnum):
    APPROVED = "APPROVED"
    DECLINED = "DECLINED"
    FAILED = "FAILED"
    REFUNDED = "REFUNDED"
    # The processor has not said yet: its answer was lost, or it confirms later (a webhook).
    PENDING = "PENDING"


@dataclass
class PaymentRecord:
    id: uuid.UUID
    order_id: uuid.UUID
    amount: Money
    status: PaymentStatus
    decline_reason: str | None
    provider_reference: str
    created_at: datetime
    refunded_at: datetime | None
    processor: str = "test"


@dataclass
class OrderRecord:
    id: uuid.UUID
    user_id: uuid.UUID
    status: Status
    currency: str
    subtotal: Money
    shipping: Money
    total: Money
    shipping_method: ShippingMethod
    shipping_address: Address
    carrier: str | None
    tracking_number: str | None
    cancel_reason: CancelReason | None
    cancel_note: str | None
    refunded: bool
    created_at: datetime
    updated_at: datetime
    expires_at: datetime | None
    paid_at: datetime | None
    shipped_at: datetime | None
    delivered_at: datetime | None
    cancelled_at: datetime | None
    lines: list[Line] = field(default_factory=list)
    payments: list[PaymentRecord] = field(default_factory=list)

    @property
    def approved_payment(self) -> PaymentRecord | None:
        return next((p for p in self.payments if p.status is PaymentStatus.APPROVED), None)


def _order(row: Any) -> OrderRecord:
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


def _payment(row: Any) -> PaymentRecord:
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


# --- idempotency keys ----------------------------------------------------------------------


@dataclass(frozen=True)
class Claim:
    """What a request holding an idempotency key must do."""

    resource_id: uuid.UUID
    replay: bytes | None = None  # the stored response of a completed request
    busy: bool = False  # another request with this key is running right now
    noted: bool = False  # the pending-reservation note for resource_id was written with the claim
    holder: uuid.UUID | None = None  # this claim's token (None: no key, a replay, or busy)


class Store:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def claim_key(
        self,
        user_id: uuid.UUID,
        scope: str,
        key: str,
        request_hash: str,
        resource_id: uuid.UUID,
        lease: float,
        *,
        reserving: bool = False,
    ) -> Claim | str:
        """Claim a key for a new request, or learn what became of an earlier one.
        Returns the string "mismatch" when the key was used for another request.

        ``reserving``: the request reserves stock under its resource id.  The
        claim then notes that id as a pending reservation in the same
        transaction (one round trip less than noting it afterwards), and a
        takeover of a key whose holder outlived its lease works under a fresh
        id: a reservation is never shared by two holders, the earlier holder's
        note stays for the sweeper, and should the earlier holder still finish,
        it finds the key no longer its own (:meth:`complete_key`).  Without it
        a takeover keeps the earlier holder's resource id (a payment id: a
        retry reaches the processor with the same idempotency key, and finds
        the payment recorded under it, if any).

        Every claim gets a holder token of its own, a takeover too: only the
        current holder completes, releases or lapses the key."""
        t = idempotency_keys
        moment = now()
        holder = uuid.uuid4()

        async def start(conn: AsyncConnection, claimed: uuid.UUID) -> Claim:
            if reserving:
                await self._note_pending_reservation(conn, claimed)
            return Claim(resource_id=claimed, noted=reserving, holder=holder)

        async with self.engine.begin() as conn:
            inserted = await conn.scalar(
                pg_insert(t)
                .values(
                    user_id=user_id,
                    scope=scope,
                    key=key,
                    request_hash=request_hash,
                    resource_id=resource_id,
                    locked_until=moment + timedelta(seconds=lease),
                    created_at=moment,
                    holder=holder,
                )
                .on_conflict_do_nothing()
                .returning(t.c.resource_id)
            )
            if inserted is not None:
                return await start(conn, inserted)
            row = (
                await conn.execute(
                    select(t).where(t.c.user_id == user_id, t.c.scope == scope, t.c.key == key).with_for_update()
                )
            ).one_or_none()
            if row is None:  # expired and removed in between: claim afresh
                await conn.execute(
                    insert(t).values(
                        user_id=user_id,
                        scope=scope,
                        key=key,
                        request_hash=request_hash,
                        resource_id=resource_id,
                        locked_until=moment + timedelta(seconds=lease),
                        created_at=moment,
                        holder=holder,
                    )
                )
                return await start(conn, resource_id)
            if row.request_hash != request_hash:
                return "mismatch"
            if row.done:
                return Claim(resource_id=row.resource_id, replay=row.response)
            if row.locked_until > moment:
                return Claim(resource_id=row.resource_id, busy=True)
            # The earlier holder outlived its lease (it died, or is too slow to wait for): take over.
            taken = resource_id if reserving else row.resource_id
            await conn.execute(
                update(t)
                .where(t.c.user_id == user_id, t.c.scope == scope, t.c.key == key)
                .values(locked_until=moment + timedelta(seconds=lease), resource_id=taken, holder=holder)
            )
            return await start(conn, taken)

    async def completed(self, user_id: uuid.UUID, scope: str, key: str, request_hash: str) -> bytes | str | None:
        """The stored response of a completed request with this key (None if there
        is none; "mismatch" when the key was used for another request)."""
        t = idempotency_keys
        async with self.engine.connect() as conn:
            row = (
                await conn.execute(
                    select(t.c.request_hash, t.c.response).where(
                        t.c.user_id == user_id, t.c.scope == scope, t.c.key == key, t.c.done.is_(True)
                    )
                )
            ).one_or_none()
        if row is None:
            return None
        return "mismatch" if row.request_hash != request_hash else bytes(row.response)

    @staticmethod
    def _held(user_id: uuid.UUID, scope: str, key: str, holder: uuid.UUID) -> Any:
        t = idempotency_keys
        return and_(t.c.user_id == user_id, t.c.scope == scope, t.c.key == key, t.c.holder == holder,
                    t.c.done.is_(False))  # fmt: skip

    @staticmethod
    async def complete_key(
        conn: AsyncConnection, user_id: uuid.UUID, scope: str, key: str, holder: uuid.UUID, response: bytes
    ) -> bool:
        """Store the response of the request holding the key; False when the key is
        no longer ``holder``'s (released, completed, or taken over by a retry)."""
        result = await conn.execute(
            update(idempotency_keys)
            .where(Store._held(user_id, scope, key, holder))
            .values(done=True, response=response)
        )
        return bool(result.rowcount)  # type: ignore[attr-defined]

    async def release_key(self, user_id: uuid.UUID, scope: str, key: str, holder: uuid.UUID) -> None:
        """Forget a claimed key whose request failed, so a retry runs again; a
        key taken over in the meantime (see :meth:`claim_key`) is left to its new holder."""
        async with self.engine.begin() as conn:
            await conn.execute(delete(idempotency_keys).where(self._held(user_id, scope, key, holder)))

    async def lapse_key(self, user_id: uuid.UUID, scope: str, key: str, holder: uuid.UUID) -> None:
        """End ``holder``'s lease now and keep the key: a retry takes it over at once
        under the same resource id (a payment whose outcome the processor has not
        given yet is asked about again with the same idempotency key)."""
        async with self.engine.begin() as conn:
            await conn.execute(
                update(idempotency_keys).where(self._held(user_id, scope, key, holder)).values(locked_until=now())
            )

    async def purge_keys(self, older_than: datetime) -> int:
        async with self.engine.begin() as conn:
            result = await conn.execute(delete(idempotency_keys).where(idempotency_keys.c.created_at < older_than))
        return int(result.rowcount or 0)  # type: ignore[attr-defined]

    async def purge_history(self, events_before: datetime, checkouts_before: datetime) -> None:
        """Forget processor events and cart checkouts too old to come back
        (processors stop redelivering after days; a cart expires)."""
        async with self.engine.begin() as conn:
            await conn.execute(delete(payment_events).where(payment_events.c.received_at < events_before))
            await conn.execute(delete(cart_checkouts).where(cart_checkouts.c.created_at < checkouts_before))

    # --- processor events and cart checkouts ---------------------------------------------

    @staticmethod
    async def record_payment_event(
        conn: AsyncConnection, processor: str, event_id: str, type_: str, order_id: uuid.UUID | None
    ) -> bool:
        """Note a processor event as applied; False when it was already (a redelivery)."""
        inserted = await conn.scalar(
            pg_insert(payment_events)
            .values(processor=processor, event_id=event_id, type=type_, order_id=order_id, received_at=now())
            .on_conflict_do_nothing()
            .returning(payment_events.c.event_id)
        )
        return inserted is not None

    @staticmethod
    async def record_cart_checkout(
        conn: AsyncConnection, owner: str, generation: str, order_id: uuid.UUID
    ) -> uuid.UUID | None:
        """Note that this cart generation became ``order_id``; the order it already
        became when it did (the caller must roll back), else None."""
        c = cart_checkouts
        inserted = await conn.scalar(
            pg_insert(c)
            .values(owner=owner, generation=generation, order_id=order_id, created_at=now())
            .on_conflict_do_nothing()
            .returning(c.c.order_id)
        )
        if inserted is not None:
            return None
        earlier: uuid.UUID | None = await conn.scalar(
            select(c.c.order_id).where(c.c.owner == owner, c.c.generation == generation)
        )
        return earlier or order_id

    # --- the reservation safety net -------------------------------------------------------

    async def note_pending_reservation(self, order_id: uuid.UUID) -> None:
        async with self.engine.begin() as conn:
            await self._note_pending_reservation(conn, order_id)

    @staticmethod
    async def _note_pending_reservation(conn: AsyncConnection, order_id: uuid.UUID) -> None:
        await conn.execute(
            pg_insert(pending_reservations).values(order_id=order_id, created_at=now()).on_conflict_do_nothing()
        )

    async def drop_pending_reservation(self, order_id: uuid.UUID) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(delete(pending_reservations).where(pending_reservations.c.order_id == order_id))

    async def orphaned_reservations(self, older_than: datetime, limit: int = 100) -> list[uuid.UUID]:
        """Pending reservations whose order never got written (and never will:
        the order's transaction needs the row this removes)."""
        p = pending_reservations
        async with self.engine.begin() as conn:
            rows = await conn.execute(
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
            orphans = [row.order_id for row in rows]
            await self._queue_releases(conn, orphans)
        return orphans

    async def abandon_reservation(self, order_id: uuid.UUID) -> bool:
        """Take the note of an order that is not going to be written and queue the
        release of its reservation, together; False when there is no note: the
        order was written after all (its transaction takes the note; one still
        committing is waited for), or the sweeper already took it."""
        p = pending_reservations
        async with self.engine.begin() as conn:
            taken = await conn.scalar(delete(p).where(p.c.order_id == order_id).returning(p.c.order_id))
            if taken is not None:
                await self._queue_releases(conn, [taken])
        return taken is not None

    @staticmethod
    async def _queue_releases(conn: AsyncConnection, order_ids: list[uuid.UUID]) -> None:
        if order_ids:
            await conn.execute(
                pg_insert(stock_actions)
                .values([{"order_id": o, "action": "release", "created_at": now()} for o in order_ids])
                .on_conflict_do_nothing()
            )

    @staticmethod
    async def add_stock_action(conn: AsyncConnection, order_id: uuid.UUID, action: str) -> None:
        await conn.execute(
            pg_insert(stock_actions).values(order_id=order_id, action=action, created_at=now()).on_conflict_do_nothing()
        )

    async def due_stock_actions(self, limit: int = 100) -> list[tuple[uuid.UUID, str]]:
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                select(stock_actions.c.order_id, stock_actions.c.action)
                .order_by(stock_actions.c.created_at)
                .limit(limit)
            )
            return [(row.order_id, row.action) for row in rows]

    async def finish_stock_action(self, order_id: uuid.UUID, action: str) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(
                delete(stock_actions).where(stock_actions.c.order_id == order_id, stock_actions.c.action == action)
            )

    async def count_stock_actions(self) -> int:
        async with self.engine.connect() as conn:
            return int(await conn.scalar(select(func.count()).select_from(stock_actions)) or 0)

    # --- orders ---------------------------------------------------------------------------

    @staticmethod
    async def unpaid_orders(conn: AsyncConnection, user_id: uuid.UUID, *, lock: bool = False) -> int:
        """How many orders of the user await payment; ``lock`` serialises this user's
        order placements until the transaction ends (so a cap on the count holds)."""
        if lock:
            await conn.execute(select(func.pg_advisory_xact_lock(func.hashtextextended(str(user_id), 0))))
        count = await conn.scalar(
            select(func.count())
            .select_from(orders)
            .where(orders.c.user_id == user_id, orders.c.status == Status.PENDING_PAYMENT.value)
        )
        return int(count or 0)

    async def unpaid_count(self, user_id: uuid.UUID) -> int:
        async with self.engine.connect() as conn:
            return await self.unpaid_orders(conn, user_id)

    @staticmethod
    async def insert_order(
        conn: AsyncConnection,
        *,
        order_id: uuid.UUID,
        user_id: uuid.UUID,
        priced: Priced,
        method: ShippingMethod,
        address: Address,
        created_at: datetime,
        expires_at: datetime,
    ) -> OrderRecord | None:
        """Write a new order and its lines and return it as written; None when its
        reservation was already given up as orphaned (the caller must roll back)."""
        claimed = await conn.scalar(
            delete(pending_reservations)
            .where(pending_reservations.c.order_id == order_id)
            .returning(pending_reservations.c.order_id)
        )
        if claimed is None:
            return None
        row = (
            await conn.execute(
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
        await conn.execute(
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
        order = _order(row)
        order.lines = list(priced.lines)  # a new order has no payments yet
        return order

    @staticmethod
    async def lock_order(conn: AsyncConnection, order_id: uuid.UUID) -> OrderRecord | None:
        row = (await conn.execute(select(orders).where(orders.c.id == order_id).with_for_update())).one_or_none()
        return _order(row) if row else None

    @staticmethod
    async def update_order(conn: AsyncConnection, order_id: uuid.UUID, **values: Any) -> None:
        await conn.execute(update(orders).where(orders.c.id == order_id).values(updated_at=now(), **values))

    @staticmethod
    async def add_payment(conn: AsyncConnection, payment: PaymentRecord) -> None:
        await conn.execute(
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

    @staticmethod
    async def get_payment(conn: AsyncConnection, payment_id: uuid.UUID) -> PaymentRecord | None:
        row = (await conn.execute(select(payments).where(payments.c.id == payment_id))).one_or_none()
        return _payment(row) if row else None

    @staticmethod
    async def payment_by_reference(conn: AsyncConnection, processor: str, reference: str) -> PaymentRecord | None:
        if not reference:
            return None
        row = (
            await conn.execute(
                select(payments).where(payments.c.processor == processor, payments.c.provider_reference == reference)
            )
        ).first()
        return _payment(row) if row else None

    @staticmethod
    async def update_payment(conn: AsyncConnection, payment_id: uuid.UUID, **values: Any) -> None:
        await conn.execute(update(payments).where(payments.c.id == payment_id).values(**values))

    @staticmethod
    async def refund_payment(conn: AsyncConnection, payment_id: uuid.UUID) -> None:
        await conn.execute(
            update(payments)
            .where(payments.c.id == payment_id)
            .values(status=PaymentStatus.REFUNDED.value, refunded_at=now())
        )

    async def get(self, order_id: uuid.UUID, conn: AsyncConnection | None = None) -> OrderRecord | None:
        if conn is not None:
            return (await self._with_details(conn, [order_id])).get(order_id)
        async with self.engine.connect() as own:
            return (await self._with_details(own, [order_id])).get(order_id)

    @staticmethod
    async def _with_details(conn: AsyncConnection, ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, OrderRecord]:
        if not ids:
            return {}
        found = {row.id: _order(row) for row in await conn.execute(select(orders).where(orders.c.id.in_(ids)))}
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
            found[row.order_id].payments.append(_payment(row))
        return found

    async def page(
        self,
        *,
        limit: int,
        after: Cursor | None,
        user_id: uuid.UUID | None = None,
        statuses: Sequence[Status] = (),
        created_after: datetime | None = None,
        created_before: datetime | None = None,
    ) -> list[OrderRecord]:
        """Newest first, keyset-paged on (created_at, id)."""
        query = select(orders.c.id).order_by(orders.c.created_at.desc(), orders.c.id.desc()).limit(limit)
        if user_id is not None:
            query = query.where(orders.c.user_id == user_id)
        if statuses:
            query = query.where(orders.c.status.in_([s.value for s in statuses]))
        if created_after is not None:
            query = query.where(orders.c.created_at >= created_after)
        if created_before is not None:
            query = query.where(orders.c.created_at < created_before)
        if after is not None:
            query = query.where(tuple_(orders.c.created_at, orders.c.id) < tuple_(after.created_at, after.id))
        async with self.engine.connect() as conn:
            ids = list((await conn.execute(query)).scalars())
            details = await self._with_details(conn, ids)
        return [details[order_id] for order_id in ids]

    async def expired(self, at: datetime, limit: int = 100) -> list[uuid.UUID]:
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                select(orders.c.id)
                .where(orders.c.status == Status.PENDING_PAYMENT.value, orders.c.expires_at < at)
                .order_by(orders.c.expires_at)
                .limit(limit)
            )
            return list(rows.scalars())

    async def first_delivery(self, user_id: uuid.UUID, product_id: uuid.UUID) -> datetime | None:
        async with self.engine.connect() as conn:
            delivered: datetime | None = await conn.scalar(
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
