"""Persistence of the catalog in MongoDB (PyMongo's async client): the only module
that knows the database.

Collections (see ``ensure_indexes`` for their indexes):

``categories``    ``{_id, name, name_key, slug, parent_id, ancestors: [ids root..parent], created_at}``
``products``      ``{_id, name, name_key, description, search, category_id, price_minor, currency,
                  stock, attributes: [{k, v}], images: [{id, key, content_type, size_bytes, filename,
                  created_at}], status, weight_grams, holds: {reservation_id: quantity}, rev,
                  created_at, updated_at}``
``reservations``  ``{_id: reservation_id, items: [{product_id, quantity}], product_ids, state,
                  failure, created_at, updated_at}``

Stock moves only through single-document conditional updates of a product:
a *hold* is ``{stock: {$gte: q}, holds.<rid>: absent} -> {$inc: {stock: -q}, $set:
{holds.<rid>: q}}``, so the decrement and the record of which reservation made
it are one atomic write, and repeating it can never take stock twice.  Undoing a
hold is the mirror image.  The reservation record (written first, as
``pending``) says which holds a reservation should have; see
:mod:`product_svc.domain` for its state machine.

Nothing here locks in the process: every write is one conditional update of one
document, atomic on the server, so any number of product_svc instances can run
against the same database (tests/integration/test_product_replicas.py).  The
same code runs on MongoDB and on the local cluster's FerretDB v2 over
PostgreSQL with DocumentDB.

Every listing names its index with a hint (plain MongoDB; ``listing_index``),
the one that narrows its filter most: a category subtree its ``category_id``
index, a price range its ``(currency, price_minor)`` index, anything else the
``(status, <sort field>, _id)`` index of its sort.
No listing scans the collection (checked by ``explain()`` in
tests/integration/test_product_store.py).  MongoDB walks the sort index in
order and stops after a page; DocumentDB as FerretDB ships it still sorts the
rows the index yields, so a page there costs in proportion to its matches
(README "The document store").
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, ParamSpec, TypeVar

from pymongo import ASCENDING, DESCENDING, ReturnDocument
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.cursor import AsyncCursor
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import ConnectionFailure, DuplicateKeyError, ExecutionTimeout, NetworkTimeout

from common.errors import (
    AlreadyExistsError,
    DeadlineExceededError,
    FailedPreconditionError,
    FieldViolation,
    NotFoundError,
    UnavailableError,
)
from common.money import Money
from product_svc import domain
from product_svc.domain import (
    Category,
    Cursor,
    Image,
    NewCategory,
    Product,
    ProductFields,
    ProductQuery,
    Reservation,
    ReservationFailure,
    ReservationItem,
)

log = logging.getLogger("shop.product.store")

Doc = Mapping[str, Any]
Collection = AsyncCollection[Doc]

P = ParamSpec("P")
T = TypeVar("T")

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# Optimistic-concurrency retries of a read-modify-write (only contended across instances).
REV_RETRIES = 20

SORT_FIELDS: dict[domain.SortField, str] = {"created": "created_at", "price": "price_minor", "name": "name_key"}
# Fields readers never need.
PRODUCT_PROJECTION = {"search": 0}
IndexKeys = list[tuple[str, int]]


CATEGORY_INDEX: IndexKeys = [("category_id", ASCENDING)]
PRICE_INDEX: IndexKeys = [("currency", ASCENDING), ("price_minor", ASCENDING)]


def sort_index(field: domain.SortField) -> IndexKeys:
    """The index that yields a listing in its sort order: the status it filters on, then
    the sort keys (MongoDB walks it either way; with archived products included, the
    filter names both statuses and MongoDB merges the two ranges in order)."""
    return [("status", ASCENDING), (SORT_FIELDS[field], ASCENDING), ("_id", ASCENDING)]


def listing_index(query: ProductQuery) -> IndexKeys:
    """The index a listing is hinted to: the one that narrows its filter most."""
    if query.category_id is not None:
        return CATEGORY_INDEX
    if query.currency is not None and (query.min_price is not None or query.max_price is not None):
        return PRICE_INDEX
    return sort_index(query.sort_spec.field)


# Few indexes on purpose: DocumentDB keeps a document in one column, so every write of a
# product (each stock hold) adds an entry to every one of its indexes.
LISTING_INDEXES: list[IndexKeys] = [CATEGORY_INDEX, PRICE_INDEX, *(sort_index(field) for field in SORT_FIELDS)]


def utcnow() -> datetime:
    """Now, at the millisecond precision BSON dates keep (so keys read back compare equal)."""
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def to_millis(value: datetime) -> int:
    return (value - EPOCH) // timedelta(milliseconds=1)


def from_millis(value: int) -> datetime:
    return EPOCH + timedelta(milliseconds=value)


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def mongo_errors(method: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
    """The database being unreachable is UNAVAILABLE for the caller, not an internal
    error; a read stopped at the caller's deadline is DEADLINE_EXCEEDED."""

    @functools.wraps(method)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await method(*args, **kwargs)
        except (ExecutionTimeout, NetworkTimeout) as exc:  # the caller's deadline (see server.py)
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


# --- documents <-> domain ---------------------------------------------------------------------------


def category_of(doc: Doc) -> Category:
    return Category(
        id=doc["_id"],
        name=doc["name"],
        slug=doc["slug"],
        parent_id=doc.get("parent_id"),
        ancestors=tuple(doc.get("ancestors", ())),
        created_at=_aware(doc["created_at"]),
    )


def image_of(doc: Doc) -> Image:
    return Image(
        id=doc["id"],
        key=doc["key"],
        content_type=doc["content_type"],
        size_bytes=int(doc["size_bytes"]),
        filename=doc.get("filename", ""),
        created_at=_aware(doc["created_at"]),
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
        created_at=_aware(doc["created_at"]),
        updated_at=_aware(doc["updated_at"]),
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
        "name_key": domain.sort_name(fields.name),
        "description": fields.description,
        "search": domain.search_text(fields.name, fields.description),
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


def _failure_doc(failure: ReservationFailure | None) -> dict[str, Any] | None:
    if failure is None:
        return None
    return {
        "kind": failure.kind,
        "product_id": failure.product_id,
        "requested": failure.requested,
        "available": failure.available,
    }


def reservation_of(doc: Doc) -> Reservation:
    failure = doc.get("failure")
    return Reservation(
        id=doc["_id"],
        items=tuple(ReservationItem(item["product_id"], int(item["quantity"])) for item in doc.get("items", ())),
        state=doc["state"],
        created_at=_aware(doc["created_at"]),
        updated_at=_aware(doc["updated_at"]),
        failure=ReservationFailure(
            kind=failure["kind"],
            product_id=failure.get("product_id", ""),
            requested=int(failure.get("requested", 0)),
            available=int(failure.get("available", 0)),
        )
        if failure
        else None,
    )


def reservation_doc(reservation: Reservation) -> dict[str, Any]:
    return {
        "_id": reservation.id,
        "items": [{"product_id": i.product_id, "quantity": i.quantity} for i in reservation.items],
        "product_ids": [i.product_id for i in reservation.items],
        "state": reservation.state,
        "failure": _failure_doc(reservation.failure),
        "created_at": reservation.created_at,
        "updated_at": reservation.updated_at,
    }


def cursor_key(product: Product, field: domain.SortField) -> int | str:
    if field == "created":
        return to_millis(product.created_at)
    if field == "price":
        return product.price.amount_minor
    return domain.sort_name(product.name)


def _keyset(field: str, descending: bool, after: Cursor) -> dict[str, Any]:
    """Items strictly after the cursor in (field, _id) order.  The bound on ``field``
    alone says the same as the ``$or`` less its tie, and lets an index scan start at
    the cursor instead of walking the pages before it."""
    op, bound = ("$lt", "$lte") if descending else ("$gt", "$gte")
    return {
        field: {bound: after.key},
        "$or": [{field: {op: after.key}}, {field: after.key, "_id": {op: after.id}}],
    }


# --- the store ------------------------------------------------------------------------------------------


class Store:
    def __init__(self, db: AsyncDatabase[Doc]) -> None:
        self.db = db
        self.categories: Collection = db["categories"]
        self.products: Collection = db["products"]
        self.reservations: Collection = db["reservations"]

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

    async def _update_where(
        self,
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

    @mongo_errors
    async def ensure_indexes(self) -> None:
        """Create the indexes (idempotent: an existing index with the same spec is kept)."""
        await self.categories.create_index([("slug", ASCENDING)], unique=True, name="slug_unique")
        await self.categories.create_index([("parent_id", ASCENDING), ("name_key", ASCENDING), ("_id", ASCENDING)])
        await self.categories.create_index([("ancestors", ASCENDING)])
        await self.categories.create_index([("name_key", ASCENDING), ("_id", ASCENDING)])
        for keys in LISTING_INDEXES:
            await self.products.create_index(keys)
        await self.reservations.create_index([("state", ASCENDING), ("updated_at", ASCENDING)])

    # -- categories

    @mongo_errors
    async def create_category(self, new: NewCategory) -> Category:
        parent = None
        if new.parent_id is not None:
            parent = await self.category(new.parent_id)
            if parent is None:
                raise NotFoundError(
                    f"no parent category {new.parent_id}",
                    violations=[FieldViolation("parent_id", "no such category")],
                )
        category = Category(
            id=domain.new_id(),
            name=new.name,
            slug=new.slug,
            parent_id=new.parent_id,
            ancestors=domain.child_ancestors(parent),
            created_at=utcnow(),
        )
        try:
            await self.categories.insert_one(
                {
                    "_id": category.id,
                    "name": category.name,
                    "name_key": domain.sort_name(category.name),
                    "slug": category.slug,
                    "parent_id": category.parent_id,
                    "ancestors": list(category.ancestors),
                    "created_at": category.created_at,
                }
            )
        except DuplicateKeyError as exc:
            raise AlreadyExistsError(
                f"the slug {new.slug!r} is taken",
                violations=[FieldViolation("slug", "is taken by another category")],
            ) from exc
        return category

    @mongo_errors
    async def category(self, category_id: str) -> Category | None:
        doc = await self.categories.find_one({"_id": category_id})
        return category_of(doc) if doc else None

    @mongo_errors
    async def category_by_slug(self, slug: str) -> Category | None:
        doc = await self.categories.find_one({"slug": slug})
        return category_of(doc) if doc else None

    @mongo_errors
    async def list_categories(self, parent_id: str | None, limit: int, after: Cursor | None) -> list[Category]:
        clauses: list[dict[str, Any]] = []
        if parent_id is not None:
            clauses.append({"parent_id": parent_id})
        if after is not None:
            clauses.append(_keyset("name_key", False, after))
        query = {"$and": clauses} if clauses else {}
        cursor = self.categories.find(query).sort([("name_key", ASCENDING), ("_id", ASCENDING)]).limit(limit)
        return [category_of(doc) async for doc in cursor]

    async def _category_tree(self, category_id: str) -> list[str]:
        """The category and every category below it."""
        below = self.categories.find({"ancestors": category_id}, {"_id": 1})
        return [category_id, *[doc["_id"] async for doc in below]]

    # -- products: reads

    @mongo_errors
    async def product(self, product_id: str) -> Product | None:
        doc = await self.products.find_one({"_id": product_id}, PRODUCT_PROJECTION)
        return product_of(doc) if doc else None

    @mongo_errors
    async def products_by_id(self, product_ids: Sequence[str]) -> dict[str, Product]:
        cursor = self.products.find({"_id": {"$in": list(set(product_ids))}}, PRODUCT_PROJECTION)
        return {doc["_id"]: product_of(doc) async for doc in cursor}

    @mongo_errors
    async def list_products(self, query: ProductQuery) -> tuple[list[Product], Cursor | None]:
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
        clauses: list[dict[str, Any]] = [
            {"status": {"$in": list(domain.STATUSES)} if query.include_archived else domain.ACTIVE}
        ]
        if query.category_id is not None:
            clauses.append({"category_id": {"$in": await self._category_tree(query.category_id)}})
        if query.currency is not None:
            price: dict[str, int] = {}
            if query.min_price is not None:
                price["$gte"] = query.min_price
            if query.max_price is not None:
                price["$lte"] = query.max_price
            clauses.append({"currency": query.currency, "price_minor": price})
        if query.in_stock_only:
            clauses.append({"stock": {"$gt": 0}})
        for term in query.terms:
            # On a normalized (case-folded) copy of name + description: no $text
            # index needed, and the input is matched literally.
            clauses.append({"search": {"$regex": domain.regex_literal(term)}})
        spec = query.sort_spec
        field = SORT_FIELDS[spec.field]
        if query.after is not None:
            key: Any = from_millis(int(query.after.key)) if spec.field == "created" else query.after.key
            clauses.append(_keyset(field, spec.descending, Cursor(key=key, id=query.after.id)))
        direction = DESCENDING if spec.descending else ASCENDING
        return (
            self.products.find({"$and": clauses}, PRODUCT_PROJECTION)
            .sort([(field, direction), ("_id", direction)])
            .hint(listing_index(query))
            .limit(query.page_size + 1)
        )

    # -- products: writes

    async def _require_category(self, category_id: str) -> None:
        if await self.categories.find_one({"_id": category_id}, {"_id": 1}) is None:
            raise NotFoundError(
                f"no category {category_id}", violations=[FieldViolation("category_id", "no such category")]
            )

    @mongo_errors
    async def create_product(self, fields: ProductFields) -> Product:
        await self._require_category(fields.category_id)
        doc = product_doc(domain.new_id(), fields, utcnow())
        await self.products.insert_one(doc)
        return product_of(doc)

    async def _rewrite(
        self, product_id: str, change: Callable[[Doc], Awaitable[dict[str, Any] | None]]
    ) -> Product | None:
        """Read-modify-write of one product, guarded by its ``rev`` (a write made
        meanwhile, by any instance, makes this one read again).  ``change`` gets the
        current document and answers the update (None: nothing to write)."""
        for _ in range(REV_RETRIES):
            doc = await self.products.find_one({"_id": product_id})
            if doc is None:
                return None
            update = await change(doc)
            if update is None:
                return product_of(doc)
            update.setdefault("$inc", {})["rev"] = 1
            updated = await self._update_where(self.products, product_id, {"rev": doc["rev"]}, update, after=True)
            if updated is not None:
                return product_of(updated)
        raise UnavailableError("the product is being changed by many callers at once; try again")

    @mongo_errors
    async def update_product(self, product_id: str, changes: Mapping[str, Any]) -> Product | None:
        if "category_id" in changes:
            await self._require_category(changes["category_id"])

        async def change(doc: Doc) -> dict[str, Any]:
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
            values["name_key"] = domain.sort_name(name)
            values["search"] = domain.search_text(name, description)
            return {"$set": values}

        return await self._rewrite(product_id, change)

    @mongo_errors
    async def archive_product(self, product_id: str) -> Product | None:
        async def change(doc: Doc) -> dict[str, Any] | None:
            if doc["status"] == domain.ARCHIVED:
                return None  # idempotent
            return {"$set": {"status": domain.ARCHIVED, "updated_at": utcnow()}}

        return await self._rewrite(product_id, change)

    @mongo_errors
    async def delete_product(self, product_id: str) -> Product:
        """Delete a product without open reservations; answers what was deleted."""
        doc = await self.products.find_one({"_id": product_id})
        if doc is None:
            raise NotFoundError(f"no product {product_id}")
        product = product_of(doc)
        if not product.holds:
            # The condition keeps a hold made meanwhile (by any instance) from vanishing.
            deleted = await self.products.delete_one({"_id": product_id, "holds": {}})
            if deleted.deleted_count == 1:
                return product
            product = await self.product(product_id) or product
        raise FailedPreconditionError(
            f"product {product_id} has {len(product.holds) or 'open'} open stock reservation(s); "
            "archive it instead, or delete it once they are committed or released",
            reason=domain.INVALID_STATE,
            metadata={"current_state": "OPEN_RESERVATIONS"},
        )

    @mongo_errors
    async def add_image(self, product_id: str, image: Image, max_images: int) -> Product | None:
        async def change(doc: Doc) -> dict[str, Any]:
            if len(doc.get("images", ())) >= max_images:
                raise FailedPreconditionError(f"a product has at most {max_images} images; delete one first")
            return {"$push": {"images": image_doc(image)}, "$set": {"updated_at": utcnow()}}

        return await self._rewrite(product_id, change)

    @mongo_errors
    async def remove_image(self, product_id: str, image_id: str) -> Product | None:
        async def change(doc: Doc) -> dict[str, Any]:
            kept = [item for item in doc.get("images", ()) if item["id"] != image_id]
            if len(kept) == len(doc.get("images", ())):
                raise NotFoundError(f"product {product_id} has no image {image_id}")
            return {"$set": {"images": kept, "updated_at": utcnow()}}

        return await self._rewrite(product_id, change)

    # -- stock holds: the single-document steps reservations are made of

    async def _hold(self, product_id: str, reservation_id: str, quantity: int) -> ReservationFailure | None:
        """Take ``quantity`` units for the reservation, once.  None when held (now or before)."""
        hold = f"holds.{reservation_id}"
        taken = await self._update_where(
            self.products,
            product_id,
            {"status": domain.ACTIVE, "stock": {"$gte": quantity}, hold: {"$exists": False}},
            {"$inc": {"stock": -quantity}, "$set": {hold: quantity}},
        )
        if taken is not None:
            return None
        doc = await self.products.find_one({"_id": product_id}, {"stock": 1, "status": 1, hold: 1})
        if doc is None:
            return ReservationFailure("not_found", product_id)
        if reservation_id in (doc.get("holds") or {}):
            return None  # held by an earlier attempt of this reservation
        if doc["status"] != domain.ACTIVE:
            return ReservationFailure("archived", product_id)
        return ReservationFailure("out_of_stock", product_id, requested=quantity, available=int(doc["stock"]))

    async def _unhold(self, product_id: str, reservation_id: str, *, restock: bool) -> bool:
        """Drop the reservation's hold on a product (if any), returning its units to
        stock when ``restock`` (release) or not (commit: the units are sold).
        Answers whether there was a hold to drop."""
        hold = f"holds.{reservation_id}"
        doc = await self.products.find_one({"_id": product_id}, {hold: 1})
        if doc is None or reservation_id not in (doc.get("holds") or {}):
            return False
        quantity = int(doc["holds"][reservation_id])
        # Conditional on the same hold, so two undoers cannot both restock it.
        done = await self._update_where(
            self.products,
            product_id,
            {hold: quantity},
            {"$unset": {hold: ""}, "$inc": {"stock": quantity if restock else 0}},
        )
        return done is not None

    async def _unhold_all(self, reservation: Reservation, *, restock: bool) -> None:
        for item in reservation.items:
            await self._unhold(item.product_id, reservation.id, restock=restock)

    # -- reservations

    async def _reservation(self, reservation_id: str) -> Reservation | None:
        doc = await self.reservations.find_one({"_id": reservation_id})
        return reservation_of(doc) if doc else None

    async def _move(
        self,
        reservation_id: str,
        from_states: Sequence[str],
        to_state: str,
        failure: ReservationFailure | None = None,
    ) -> Reservation | None:
        """One state transition, only from the given states; None when the record was elsewhere."""
        update: dict[str, Any] = {"state": to_state, "updated_at": utcnow()}
        if failure is not None:
            update["failure"] = _failure_doc(failure)
        doc = await self._update_where(
            self.reservations, reservation_id, {"state": {"$in": list(from_states)}}, {"$set": update}, after=True
        )
        return reservation_of(doc) if doc else None

    @mongo_errors
    async def reserve(self, reservation_id: str, items: Sequence[ReservationItem]) -> Reservation:
        """Hold every item or none; a repeat with the same id and items answers the
        same result without holding anything twice."""
        now = utcnow()
        record = Reservation(reservation_id, tuple(items), domain.PENDING, created_at=now, updated_at=now)
        try:
            await self.reservations.insert_one(reservation_doc(record))
        except DuplicateKeyError:
            existing = await self._reservation(reservation_id)
            assert existing is not None  # records are never deleted
            stored = domain.replay(existing, items)
            if stored is not None:
                return stored
            record = existing  # pending: an attempt crashed or timed out midway; finish it
        return await self._complete(record)

    async def _complete(self, record: Reservation) -> Reservation:
        """Hold each item, then move the record on.  The record moves first and the
        holds are undone after, so an attempt that lost a race (another attempt of
        the same id, a release, the recovery sweep) can never undo the holds of a
        reservation that ended up reserved."""
        failure = None
        for item in record.items:
            failure = await self._hold(item.product_id, record.id, item.quantity)
            if failure is not None:
                break
        if failure is not None:
            if await self._move(record.id, [domain.PENDING], domain.FAILED, failure) is not None:
                await self._unhold_all(record, restock=True)
                raise failure.error()
        else:
            reserved = await self._move(record.id, [domain.PENDING], domain.RESERVED)
            if reserved is not None:
                return reserved
        return await self._settle(record)

    async def _settle(self, record: Reservation) -> Reservation:
        """The record moved on while this attempt held stock: if it ended without its
        holds, what this attempt held goes back; answer from where it is now."""
        current = await self._reservation(record.id)
        assert current is not None
        if current.state in (domain.FAILED, domain.RELEASING, domain.RELEASED):
            await self._unhold_all(record, restock=True)
        stored = domain.replay(current, record.items)
        assert stored is not None
        return stored

    @mongo_errors
    async def release(self, reservation_id: str) -> Reservation:
        existing = await self._reservation(reservation_id)
        if domain.release_plan(existing) == "record_tombstone":
            # Never reserved (yet): remember the release, so a reserve arriving
            # late with this id cannot hold stock nobody will release.
            now = utcnow()
            tombstone = Reservation(reservation_id, (), domain.RELEASED, created_at=now, updated_at=now)
            try:
                await self.reservations.insert_one(reservation_doc(tombstone))
                return tombstone
            except DuplicateKeyError:  # a reserve (another instance) got there first
                existing = await self._reservation(reservation_id)
        assert existing is not None
        if domain.release_plan(existing) == "done":
            return existing
        return await self._finish_release(existing)

    async def _finish_release(self, record: Reservation) -> Reservation:
        releasing = await self._move(record.id, [domain.PENDING, domain.RESERVED, domain.RELEASING], domain.RELEASING)
        if releasing is None:  # moved on meanwhile; answer from where it is now
            current = await self._reservation(record.id)
            assert current is not None
            if domain.release_plan(current) == "done":
                return current
            raise domain.invalid_state(record.id, current.state, "released")
        await self._unhold_all(record, restock=True)
        released = await self._move(record.id, [domain.RELEASING], domain.RELEASED)
        return released or releasing

    @mongo_errors
    async def commit(self, reservation_id: str) -> Reservation:
        existing = await self._reservation(reservation_id)
        if domain.commit_plan(reservation_id, existing) == "done":
            assert existing is not None
            return existing
        assert existing is not None
        return await self._finish_commit(existing)

    async def _finish_commit(self, record: Reservation) -> Reservation:
        committing = await self._move(record.id, [domain.RESERVED, domain.COMMITTING], domain.COMMITTING)
        if committing is None:
            current = await self._reservation(record.id)
            if domain.commit_plan(record.id, current) == "done":
                assert current is not None
                return current
            raise AssertionError("unreachable: commit_plan raises for every other state")
        await self._unhold_all(record, restock=False)
        committed = await self._move(record.id, [domain.COMMITTING], domain.COMMITTED)
        return committed or committing

    @mongo_errors
    async def recover(self, older_than: timedelta, *, scan_holds: bool = True) -> int:
        """Finish what crashed callers left behind: a reservation stuck ``pending`` for
        longer than ``older_than`` is rolled back (its holds return to stock) and
        marked failed; one stuck ``releasing``/``committing`` is finished; with
        ``scan_holds``, a hold whose reservation is already over is dropped (only
        concurrent instances racing on one reservation can leave one, so this scan
        over every product runs less often).  Answers how many were fixed."""
        cutoff = utcnow() - older_than
        fixed = 0
        stuck = self.reservations.find(
            {"state": {"$in": [domain.PENDING, domain.RELEASING, domain.COMMITTING]}, "updated_at": {"$lt": cutoff}}
        )
        for doc in await stuck.to_list():
            reservation_id = doc["_id"]
            record = await self._reservation(reservation_id)
            if record is None or record.updated_at >= cutoff:
                continue
            if record.state == domain.PENDING:
                # Failed first, then undone: an attempt still running sees the record
                # failed and undoes what it holds itself.
                abandoned = ReservationFailure("abandoned")
                if await self._move(record.id, [domain.PENDING], domain.FAILED, abandoned) is None:
                    continue
                await self._unhold_all(record, restock=True)
            elif record.state == domain.RELEASING:
                await self._finish_release(record)
            elif record.state == domain.COMMITTING:
                await self._finish_commit(record)
            else:
                continue
            log.warning("recovered an interrupted reservation", extra={"reservation_id": record.id})
            fixed += 1
        if not scan_holds:
            return fixed
        held = self.products.find({"holds": {"$nin": [{}, None]}}, {"holds": 1})
        for doc in await held.to_list():
            for reservation_id in list(doc["holds"]):
                record = await self._reservation(reservation_id)
                if record is None or record.state not in (domain.FAILED, domain.RELEASED, domain.COMMITTED):
                    continue
                if not await self._unhold(doc["_id"], reservation_id, restock=record.state != domain.COMMITTED):
                    continue  # another instance (or its own caller) dropped it meanwhile
                log.warning(
                    "dropped a stale stock hold", extra={"reservation_id": reservation_id, "product_id": doc["_id"]}
                )
                fixed += 1
        return fixed
