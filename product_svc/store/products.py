"""The ``products`` collection:
``{_id, name, name_key, description, search, category_id, price_minor, currency,
stock, attributes: [{k, v}], images: [{id, key, content_type, size_bytes, filename,
created_at}], status, weight_grams, holds: {reservation_id: quantity}, rev,
created_at, updated_at}``.

A change of a product is a read-modify-write guarded by its ``rev``; stock moves
through :mod:`product_svc.store.stock`.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

from pymongo.asynchronous.cursor import AsyncCursor

from common.errors import NotFoundError, UnavailableError
from common.money import Money
from product_svc.domain.images import Image, too_many_images
from product_svc.domain.listing import Cursor, ProductQuery, SortField
from product_svc.domain.products import ARCHIVED, Product, ProductFields
from product_svc.domain.text import search_text, sort_name
from product_svc.store.categories import CategoryStore
from product_svc.store.listing import LISTING_INDEXES, listing_filter, listing_index, listing_sort
from product_svc.store.mongo import Collection, Doc, aware, mongo_errors, to_millis, update_where, utcnow

# Optimistic-concurrency retries of a read-modify-write (only contended across instances).
REV_RETRIES = 20
# Fields readers never need.
PRODUCT_PROJECTION = {"search": 0}

Change = Callable[[Doc], dict[str, Any] | None]


def image_of(doc: Doc) -> Image:
    return Image(
        id=doc["id"],
        key=doc["key"],
        content_type=doc["content_type"],
        size_bytes=int(doc["size_bytes"]),
        filename=doc.get("filename", ""),
        created_at=aware(doc["created_at"]),
    )


def image_doc(image: Image) -> dict[str, Any]:
    return {
        "id": image.id,
        "key": image.key,
        "content_type": image.content_type,
        "size_bytes": image.size_bytes,
        "filename": image.filename,
        "created_at": image.created_at,
    }


def product_of(doc: Doc) -> Product:
    return Product(
        id=doc["_id"],
        name=doc["name"],
        description=doc.get("description", ""),
        category_id=doc["category_id"],
        price=Money(int(doc["price_minor"]), doc["currency"]),
        stock=int(doc["stock"]),
        attributes={pair["k"]: pair["v"] for pair in doc.get("attributes", ())},
        images=[image_of(item) for item in doc.get("images", ())],
        status=doc["status"],
        weight_grams=int(doc.get("weight_grams", 0)),
        created_at=aware(doc["created_at"]),
        updated_at=aware(doc["updated_at"]),
        holds={key: int(value) for key, value in (doc.get("holds") or {}).items()},
    )


def _attributes_doc(attributes: Mapping[str, str]) -> list[dict[str, str]]:
    # A list of pairs, not a sub-document: attribute names stay free of MongoDB's
    # field-name rules (dots, leading dollars).
    return [{"k": key, "v": value} for key, value in sorted(attributes.items())]


def product_doc(product_id: str, fields: ProductFields, now: datetime) -> dict[str, Any]:
    return {
        "_id": product_id,
        "name": fields.name,
        "name_key": sort_name(fields.name),
        "description": fields.description,
        "search": search_text(fields.name, fields.description),
        "category_id": fields.category_id,
        "price_minor": fields.price.amount_minor,
        "currency": fields.price.currency,
        "stock": fields.stock,
        "attributes": _attributes_doc(fields.attributes),
        "images": [],
        "status": fields.status,
        "weight_grams": fields.weight_grams,
        "holds": {},
        "rev": 0,
        "created_at": now,
        "updated_at": now,
    }


def _changes_doc(doc: Doc, changes: Mapping[str, Any]) -> dict[str, Any]:
    values: dict[str, Any] = {"updated_at": utcnow()}
    for path, value in changes.items():
        if path == "price":
            values["price_minor"], values["currency"] = value.amount_minor, value.currency
        elif path == "attributes":
            values["attributes"] = _attributes_doc(value)
        else:
            values[path] = value
    name = changes.get("name", doc["name"])
    description = changes.get("description", doc.get("description", ""))
    values["name_key"] = sort_name(name)
    values["search"] = search_text(name, description)
    return {"$set": values}


def cursor_key(product: Product, field: SortField) -> int | str:
    if field == "created":
        return to_millis(product.created_at)
    if field == "price":
        return product.price.amount_minor
    return sort_name(product.name)


class ProductStore:
    def __init__(self, collection: Collection, categories: CategoryStore) -> None:
        self.collection = collection
        self.categories = categories

    async def ensure_indexes(self) -> None:
        for keys in LISTING_INDEXES:
            await self.collection.create_index(keys)

    # -- reads

    @mongo_errors
    async def get(self, product_id: str) -> Product | None:
        doc = await self.collection.find_one({"_id": product_id}, PRODUCT_PROJECTION)
        return product_of(doc) if doc else None

    @mongo_errors
    async def by_ids(self, product_ids: Sequence[str]) -> dict[str, Product]:
        cursor = self.collection.find({"_id": {"$in": list(set(product_ids))}}, PRODUCT_PROJECTION)
        return {doc["_id"]: product_of(doc) async for doc in cursor}

    @mongo_errors
    async def page(self, query: ProductQuery) -> tuple[list[Product], Cursor | None]:
        """One page, and the cursor of the next one (None on the last page)."""
        found = [product_of(doc) async for doc in await self.listing(query)]
        page = found[: query.page_size]
        if len(found) <= query.page_size:
            return page, None
        last = page[-1]
        return page, Cursor(key=cursor_key(last, query.sort_spec.field), id=last.id)

    async def listing(self, query: ProductQuery) -> AsyncCursor[Doc]:
        """The find behind a page (one more than the page, to know whether another follows),
        hinted to its listing index."""
        tree = await self.categories.tree(query.category_id) if query.category_id is not None else None
        return (
            self.collection.find(listing_filter(query, tree), PRODUCT_PROJECTION)
            .sort(listing_sort(query))
            .hint(listing_index(query))
            .limit(query.page_size + 1)
        )

    # -- writes

    @mongo_errors
    async def create(self, fields: ProductFields) -> Product:
        doc = product_doc(str(uuid.uuid4()), fields, utcnow())
        await self.collection.insert_one(doc)
        return product_of(doc)

    async def _rewrite(self, product_id: str, change: Change) -> Product | None:
        """Read-modify-write of one product, guarded by its ``rev`` (a write made
        meanwhile, by any instance, makes this one read again).  ``change`` gets the
        current document and answers the update (None: nothing to write)."""
        for _ in range(REV_RETRIES):
            doc = await self.collection.find_one({"_id": product_id})
            if doc is None:
                return None
            update = change(doc)
            if update is None:
                return product_of(doc)
            update.setdefault("$inc", {})["rev"] = 1
            updated = await update_where(self.collection, product_id, {"rev": doc["rev"]}, update, after=True)
            if updated is not None:
                return product_of(updated)
        raise UnavailableError("the product is being changed by many callers at once; try again")

    @mongo_errors
    async def update(self, product_id: str, changes: Mapping[str, Any]) -> Product | None:
        """Apply validated field changes (path -> value); None when there is no such product."""
        return await self._rewrite(product_id, lambda doc: _changes_doc(doc, changes))

    @mongo_errors
    async def archive(self, product_id: str) -> Product | None:
        def change(doc: Doc) -> dict[str, Any] | None:
            if doc["status"] == ARCHIVED:
                return None  # idempotent
            return {"$set": {"status": ARCHIVED, "updated_at": utcnow()}}

        return await self._rewrite(product_id, change)

    @mongo_errors
    async def delete_unheld(self, product_id: str) -> bool:
        """Delete the product if no reservation holds its stock; answers whether it was deleted.
        The condition keeps a hold made meanwhile (by any instance) from vanishing."""
        deleted = await self.collection.delete_one({"_id": product_id, "holds": {}})
        return deleted.deleted_count == 1

    @mongo_errors
    async def add_image(self, product_id: str, image: Image, max_images: int) -> Product | None:
        """List ``image`` on the product while it has fewer than ``max_images``."""

        def change(doc: Doc) -> dict[str, Any]:
            if len(doc.get("images", ())) >= max_images:
                raise too_many_images(max_images)
            return {"$push": {"images": image_doc(image)}, "$set": {"updated_at": utcnow()}}

        return await self._rewrite(product_id, change)

    @mongo_errors
    async def remove_image(self, product_id: str, image_id: str) -> Product | None:
        def change(doc: Doc) -> dict[str, Any]:
            kept = [item for item in doc.get("images", ()) if item["id"] != image_id]
            if len(kept) == len(doc.get("images", ())):
                raise NotFoundError(f"product {product_id} has no image {image_id}")
            return {"$set": {"images": kept, "updated_at": utcnow()}}

        return await self._rewrite(product_id, change)
