"""Persistence of the catalog in MongoDB (PyMongo's async client): the only room
that knows the database.  One store per collection (and the stock holds on
products), each returning domain objects:

:mod:`.categories`    ``categories``
:mod:`.products`      ``products`` (fields, images, listing via :mod:`.listing`)
:mod:`.stock`         the stock holds on ``products``
:mod:`.reservations`  ``reservations``

Nothing here locks in the process: every write is one conditional update of one
document, atomic on the server, so any number of product_svc instances can run
against the same database (tests/integration/test_product_replicas.py).  The
document store spans no transaction: each method is atomic on its own and the
use cases (:mod:`product_svc.catalog`, :mod:`product_svc.reservations`) compose
them.  The same code runs on MongoDB and on the local cluster's FerretDB v2 over
PostgreSQL with DocumentDB.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping

import pymongo
from pymongo.asynchronous.database import AsyncDatabase

from product_svc.store.categories import CategoryStore
from product_svc.store.mongo import Doc, mongo_errors, utcnow
from product_svc.store.products import ProductStore
from product_svc.store.reservations import ReservationStore
from product_svc.store.stock import StockStore

__all__ = ["Store", "utcnow"]


class Store:
    def __init__(self, db: AsyncDatabase[Doc]) -> None:
        self.db = db
        self.categories = CategoryStore(db["categories"])
        self.products = ProductStore(db["products"], self.categories)
        self.stock = StockStore(db["products"])
        self.reservations = ReservationStore(db["reservations"])

    @staticmethod
    def deadline(seconds: float | None) -> contextlib.AbstractContextManager[None]:
        """Reads inside stop at a caller's deadline: PyMongo sends what is left of it
        as ``maxTimeMS``, so the database stops a long scan nobody waits for any more
        (writes are left to finish: reservations must not stop midway)."""
        return pymongo.timeout(seconds)

    @mongo_errors
    async def ping(self) -> None:
        await self.db.command("ping")

    @mongo_errors
    async def server_name(self) -> str:
        """What answers: "MongoDB 8.0.4", or "FerretDB v2.5.0 (speaking MongoDB 7.0.77)"."""
        info = await self.db.command("buildInfo")
        mongodb = f"MongoDB {info.get('version', '?')}"
        ferretdb = info.get("ferretdb", {}).get("version") if isinstance(info.get("ferretdb"), Mapping) else None
        return f"FerretDB {ferretdb} (speaking {mongodb})" if ferretdb else mongodb

    @mongo_errors
    async def ensure_indexes(self) -> None:
        """Create the indexes (idempotent: an existing index with the same spec is kept)."""
        await self.categories.ensure_indexes()
        await self.products.ensure_indexes()
        await self.reservations.ensure_indexes()
