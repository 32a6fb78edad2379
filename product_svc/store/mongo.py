"""What every collection of the catalog shares: the document type, the time
precision BSON keeps, the one-step conditional update, and how driver failures
reach callers."""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, ParamSpec, TypeVar

from pymongo import ReturnDocument
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import ConnectionFailure, ExecutionTimeout, NetworkTimeout

from common.errors import DeadlineExceededError, UnavailableError
from product_svc.domain.listing import Cursor

log = logging.getLogger("shop.product.store")

Doc = Mapping[str, Any]
Collection = AsyncCollection[Doc]

P = ParamSpec("P")
T = TypeVar("T")

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def utcnow() -> datetime:
    """Now, at the millisecond precision BSON dates keep (so keys read back compare equal)."""
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def to_millis(value: datetime) -> int:
    return (value - EPOCH) // timedelta(milliseconds=1)


def from_millis(value: int) -> datetime:
    return EPOCH + timedelta(milliseconds=value)


def aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


async def update_where(
    collection: Collection,
    doc_id: str,
    condition: Mapping[str, Any],
    update: Mapping[str, Any],
    *,
    after: bool = False,
) -> Doc | None:
    """Apply ``update`` to the document ``doc_id`` if it satisfies ``condition``, in one
    atomic step; answers the document (as it was, or ``after`` the update) or None
    when missing or not matching."""
    returned = ReturnDocument.AFTER if after else ReturnDocument.BEFORE
    return await collection.find_one_and_update({"_id": doc_id, **condition}, update, return_document=returned)


def mongo_errors(method: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
    """The database being unreachable is UNAVAILABLE for the caller, not an internal
    error; a read stopped at the caller's deadline is DEADLINE_EXCEEDED."""

    @functools.wraps(method)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await method(*args, **kwargs)
        except (ExecutionTimeout, NetworkTimeout) as exc:  # the caller's deadline (Store.deadline)
            raise DeadlineExceededError(
                "the catalog database did not answer within the caller's deadline; try again or narrow the query"
            ) from exc
        except ConnectionFailure as exc:
            log.warning("MongoDB unreachable", exc_info=exc)
            raise UnavailableError(
                "the catalog database is unavailable; try again shortly",
                reason="DEPENDENCY_UNAVAILABLE",
                metadata={"dependency": "mongodb"},
            ) from exc

    return wrapper


def keyset(field: str, descending: bool, after: Cursor) -> dict[str, Any]:
    """Items strictly after the cursor in (field, _id) order.  The bound on ``field``
    alone says the same as the ``$or`` less its tie, and lets an index scan start at
    the cursor instead of walking the pages before it."""
    op, bound = ("$lt", "$lte") if descending else ("$gt", "$gte")
    return {
        field: {bound: after.key},
        "$or": [{field: {op: after.key}}, {field: after.key, "_id": {op: after.id}}],
    }
