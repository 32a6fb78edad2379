"""Persistence of orders (SQLAlchemy Core, async, PostgreSQL): the only package
that knows the tables (``tables.py``).

The use cases work through a unit of work the store hands out::

    async with store.unit_of_work() as work:
        order = await work.lock_order(order_id)
        ...

one transaction, committed when the block ends and rolled back when it raises;
its methods come by concept (``orders.py``, ``payments.py``, ``keys.py``,
``stock.py``).  Carts live in Redis (``carts.py``), where each store method is
atomic on its own.
"""

from __future__ import annotations

import uuid
from contextlib import AbstractAsyncContextManager

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from common.unit_of_work import unit_of_work
from order_svc.domain import Abandoned, OrderRecord
from order_svc.store.keys import KeyRows
from order_svc.store.orders import OrderRows
from order_svc.store.payments import PaymentRows
from order_svc.store.stock import StockRows


class Work(OrderRows, PaymentRows, KeyRows, StockRows):
    """One transaction's reads and writes."""

    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn


class Store:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    def unit_of_work(self) -> AbstractAsyncContextManager[Work]:
        """One transaction: committed when the block ends, rolled back when it raises."""
        return unit_of_work(self.engine, Work)

    async def order(self, order_id: uuid.UUID) -> OrderRecord | None:
        """The order with its lines and payments, read on its own."""
        async with self.unit_of_work() as work:
            return await work.order(order_id)

    async def abandon_reservation(self, order_id: uuid.UUID) -> Abandoned:
        """Take the note of an order that is not going to be written and queue the
        release of its reservation, together (see :class:`Abandoned`)."""
        try:
            async with self.unit_of_work() as work:
                if not await work.take_pending_reservation(order_id):
                    return Abandoned.NO_NOTE
                await work.add_stock_actions([order_id], "release")
                return Abandoned.RELEASE_QUEUED
        except SQLAlchemyError:
            return Abandoned.UNSETTLED
