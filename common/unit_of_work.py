"""The unit of work of the PostgreSQL-backed stores: one transaction, handed out
as the store's object of in-transaction steps (``Work(conn)``)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import TypeVar

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

W = TypeVar("W")


@asynccontextmanager
async def unit_of_work(engine: AsyncEngine, work: Callable[[AsyncConnection], W]) -> AsyncIterator[W]:
    """``async with unit_of_work(engine, Work) as work: ...``: committed when the
    block ends, rolled back when it raises."""
    async with engine.begin() as conn:
        yield work(conn)
