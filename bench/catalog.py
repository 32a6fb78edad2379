"""Seeding the catalog in bulk, straight into the MongoDB-wire server.

Documents are built by product_svc's own ``product_doc`` (so they have exactly
the schema product_svc reads and writes) and sent with PyMongo ``insert_many``
in large unordered batches: one round trip per batch, instead of one gRPC call
per product.
"""

from __future__ import annotations

import random
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pymongo

from common.money import Money
from product_svc.domain.products import ProductFields
from product_svc.domain.text import sort_name
from product_svc.store.products import product_doc

DATABASE = "shop_product"  # product_svc's default SHOP_MONGO_DATABASE
BATCH = 5_000

ADJECTIVES = ("sturdy", "compact", "classic", "bright", "quiet", "rugged", "gentle", "swift", "vintage", "modern")
NOUNS = ("kettle", "lamp", "backpack", "notebook", "jacket", "speaker", "blender", "chair", "bottle", "camera")
COLORS = ("red", "blue", "green", "black", "white")
# Words the browse mix searches for: every product has one adjective and one noun.
SEARCH_WORDS = (*ADJECTIVES[:5], *NOUNS[:5])


@dataclass
class Catalog:
    """What was seeded: the ids the load scripts pick from, and every product's initial stock."""

    categories: list[str] = field(default_factory=list)
    leaves: list[str] = field(default_factory=list)
    product_ids: list[str] = field(default_factory=list)
    initial_stock: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def size(self) -> int:
        return len(self.product_ids)


def _client(url: str) -> pymongo.MongoClient[dict[str, Any]]:
    return pymongo.MongoClient(url, serverSelectionTimeoutMS=5000)


def seed_categories(url: str, catalog: Catalog, roots: int = 5, children: int = 4) -> None:
    """A two-level tree: ``roots`` top categories with ``children`` each."""
    now = datetime.now(UTC).replace(microsecond=0)
    docs: list[dict[str, Any]] = []
    for r in range(roots):
        root_id = str(uuid.uuid4())
        name = f"Bench department {r}"
        docs.append(_category(root_id, name, f"bench-dept-{r}", parent=None, ancestors=[], now=now))
        catalog.categories.append(root_id)
        for c in range(children):
            child_id = str(uuid.uuid4())
            docs.append(
                _category(
                    child_id,
                    f"{name} aisle {c}",
                    f"bench-dept-{r}-aisle-{c}",
                    parent=root_id,
                    ancestors=[root_id],
                    now=now,
                )
            )
            catalog.categories.append(child_id)
            catalog.leaves.append(child_id)
    with _client(url) as client:
        client[DATABASE]["categories"].insert_many(docs, ordered=False)


def _category(
    category_id: str, name: str, slug: str, *, parent: str | None, ancestors: list[str], now: datetime
) -> dict[str, Any]:
    return {
        "_id": category_id,
        "name": name,
        "name_key": sort_name(name),
        "slug": slug,
        "parent_id": parent,
        "ancestors": ancestors,
        "created_at": now,
    }


def seed_products(url: str, catalog: Catalog, count: int, *, stock: int | None = None, seed: int = 9) -> list[str]:
    """Add ``count`` products in the leaf categories; answers their ids.  ``stock``
    fixes every product's stock, otherwise it is random (about 1 in 10 sold out)."""
    rng = random.Random(seed + catalog.size)
    start = time.perf_counter()
    now = datetime.now(UTC).replace(microsecond=0)
    first = catalog.size
    new_ids: list[str] = []
    with _client(url) as client:
        products = client[DATABASE]["products"]
        batch: list[dict[str, Any]] = []
        for n in range(first, first + count):
            adjective, noun = rng.choice(ADJECTIVES), rng.choice(NOUNS)
            units = stock if stock is not None else (0 if rng.random() < 0.1 else rng.randint(1, 500))
            fields = ProductFields(
                name=f"{adjective.title()} {noun} {n:06d}",
                description=f"A {adjective} {noun} for everyday use, seeded by the benchmark.",
                category_id=rng.choice(catalog.leaves),
                price=Money(rng.randint(1, 50) * 100 - 1, "EUR"),
                stock=units,
                attributes={"color": rng.choice(COLORS)},
                weight_grams=rng.randint(50, 5000),
            )
            product_id = str(uuid.uuid4())
            # Older products first: "newest" listings see the last ones seeded.
            batch.append(product_doc(product_id, fields, now - timedelta(seconds=10 * (first + count - n))))
            new_ids.append(product_id)
            catalog.initial_stock[product_id] = units
            if len(batch) == BATCH:
                products.insert_many(batch, ordered=False)
                batch = []
        if batch:
            products.insert_many(batch, ordered=False)
    catalog.product_ids.extend(new_ids)
    catalog.seconds += time.perf_counter() - start
    return new_ids


def stock_of(url: str, product_ids: list[str]) -> dict[str, tuple[int, int]]:
    """(stock, units held by open reservations) of each product."""
    found: dict[str, tuple[int, int]] = {}
    with _client(url) as client:
        products = client[DATABASE]["products"]
        for doc in products.find({"_id": {"$in": product_ids}}, {"stock": 1, "holds": 1}):
            holds = sum(int(q) for q in (doc.get("holds") or {}).values())
            found[doc["_id"]] = (int(doc["stock"]), holds)
    return found
