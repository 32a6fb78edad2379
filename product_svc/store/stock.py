"""Stock holds on ``products`` documents: the single-document steps reservations
are made of.

A *hold* is ``{stock: {$gte: q}, holds.<rid>: absent} -> {$inc: {stock: -q}, $set:
{holds.<rid>: q}}``, so the decrement and the record of which reservation made
it are one atomic write, and repeating it can never take stock twice.  Undoing a
hold is the mirror image.
"""

from __future__ import annotations

from product_svc.domain.products import ACTIVE
from product_svc.domain.reservations import ReservationItem, StockLevel
from product_svc.store.mongo import Collection, mongo_errors, update_where


class StockStore:
    def __init__(self, products: Collection) -> None:
        self.products = products

    @mongo_errors
    async def hold(self, reservation_id: str, item: ReservationItem) -> bool:
        """Take the item's units for the reservation, once; answers whether this call took them."""
        hold = f"holds.{reservation_id}"
        taken = await update_where(
            self.products,
            item.product_id,
            {"status": ACTIVE, "stock": {"$gte": item.quantity}, hold: {"$exists": False}},
            {"$inc": {"stock": -item.quantity}, "$set": {hold: item.quantity}},
        )
        return taken is not None

    @mongo_errors
    async def level(self, reservation_id: str, product_id: str) -> StockLevel | None:
        """The product as a hold for the reservation sees it; None when there is no such product."""
        hold = f"holds.{reservation_id}"
        doc = await self.products.find_one({"_id": product_id}, {"stock": 1, "status": 1, hold: 1})
        if doc is None:
            return None
        held = reservation_id in (doc.get("holds") or {})
        return StockLevel(stock=int(doc["stock"]), status=doc["status"], held=held)

    @mongo_errors
    async def unhold(self, product_id: str, reservation_id: str, *, restock: bool) -> bool:
        """Drop the reservation's hold on a product (if any), returning its units to
        stock when ``restock`` (release) or not (commit: the units are sold).
        Answers whether there was a hold to drop."""
        hold = f"holds.{reservation_id}"
        doc = await self.products.find_one({"_id": product_id}, {hold: 1})
        if doc is None or reservation_id not in (doc.get("holds") or {}):
            return False
        quantity = int(doc["holds"][reservation_id])
        # Conditional on the same hold, so two undoers cannot both restock it.
        done = await update_where(
            self.products,
            product_id,
            {hold: quantity},
            {"$unset": {hold: ""}, "$inc": {"stock": quantity if restock else 0}},
        )
        return done is not None

    @mongo_errors
    async def held(self) -> list[tuple[str, list[str]]]:
        """Every product some reservation holds stock of, with those reservations' ids."""
        found = self.products.find({"holds": {"$nin": [{}, None]}}, {"holds": 1})
        return [(doc["_id"], list(doc["holds"])) for doc in await found.to_list()]
