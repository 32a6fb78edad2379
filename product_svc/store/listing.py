"""The find behind a ListProducts page, and the indexes it walks.

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

from typing import Any

from pymongo import ASCENDING, DESCENDING

from product_svc.domain.listing import Cursor, ProductQuery, SortField
from product_svc.domain.products import ACTIVE, STATUSES
from product_svc.domain.text import regex_literal
from product_svc.store.mongo import from_millis, keyset

SORT_FIELDS: dict[SortField, str] = {"created": "created_at", "price": "price_minor", "name": "name_key"}
IndexKeys = list[tuple[str, int]]

CATEGORY_INDEX: IndexKeys = [("category_id", ASCENDING)]
PRICE_INDEX: IndexKeys = [("currency", ASCENDING), ("price_minor", ASCENDING)]


def sort_index(field: SortField) -> IndexKeys:
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


def _price(query: ProductQuery) -> dict[str, Any]:
    price: dict[str, int] = {}
    if query.min_price is not None:
        price["$gte"] = query.min_price
    if query.max_price is not None:
        price["$lte"] = query.max_price
    return {"currency": query.currency, "price_minor": price}


def listing_filter(query: ProductQuery, category_tree: list[str] | None) -> dict[str, Any]:
    """The filter of a listing; ``category_tree`` is the filtered category and those below it."""
    clauses: list[dict[str, Any]] = [{"status": {"$in": list(STATUSES)} if query.include_archived else ACTIVE}]
    if category_tree is not None:
        clauses.append({"category_id": {"$in": category_tree}})
    if query.currency is not None:
        clauses.append(_price(query))
    if query.in_stock_only:
        clauses.append({"stock": {"$gt": 0}})
    # On a normalized (case-folded) copy of name + description: no $text
    # index needed, and the input is matched literally.
    clauses.extend({"search": {"$regex": regex_literal(term)}} for term in query.terms)
    spec = query.sort_spec
    if query.after is not None:
        key: Any = from_millis(int(query.after.key)) if spec.field == "created" else query.after.key
        clauses.append(keyset(SORT_FIELDS[spec.field], spec.descending, Cursor(key=key, id=query.after.id)))
    return {"$and": clauses}


def listing_sort(query: ProductQuery) -> list[tuple[str, int]]:
    spec = query.sort_spec
    direction = DESCENDING if spec.descending else ASCENDING
    return [(SORT_FIELDS[spec.field], direction), ("_id", direction)]
