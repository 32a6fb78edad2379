"""product_svc's store against the real MongoDB-wire server (FerretDB v2 on
PostgreSQL with DocumentDB locally): atomic conditional writes, and listings
that walk their indexes."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pymongo
import pytest
from pydantic import SecretStr

from common.clients import mongo_client
from common.errors import DeadlineExceededError, FailedPreconditionError
from devstack.cluster import Cluster
from devstack.docstore import FerretDB
from devstack.servers import S3
from product_svc.catalog import Catalog, ImageLimits
from product_svc.domain import listing, products, reservations
from product_svc.domain.categories import NewCategory
from product_svc.domain.listing import ProductQuery
from product_svc.domain.products import ProductInput
from product_svc.domain.reservations import ReservationItem
from product_svc.images import ImageStorage
from product_svc.reservations import Reservations
from product_svc.settings import ProductSettings
from product_svc.store import Store
from product_svc.store.listing import listing_index
from product_svc.store.mongo import to_millis


@pytest.fixture(scope="module")
def mongo(services) -> FerretDB:
    cluster: Cluster = services("product_svc")
    server = cluster.servers["mongo"]
    assert isinstance(server, FerretDB)
    return server


@pytest.fixture(scope="module")
def mongo_url(mongo: FerretDB) -> str:
    return mongo.url


@pytest.fixture
async def client(mongo_url: str) -> AsyncIterator[Any]:
    client = mongo_client(mongo_url)
    try:
        yield client
    finally:
        await client.close()


@pytest.fixture
async def store(client: Any) -> AsyncIterator[Store]:
    name = f"store_test_{uuid.uuid4().hex[:10]}"
    store = Store(client[name])
    await store.ensure_indexes()
    try:
        yield store
    finally:
        await client.drop_database(name)


@pytest.fixture(scope="module")
def images(services) -> ImageStorage:
    """The real object storage of the test cluster (MinIO), as product_svc's user."""
    cluster: Cluster = services("product_svc")
    server = cluster.servers["s3"]
    assert isinstance(server, S3)
    env = server.admin_env()
    return ImageStorage(
        ProductSettings(
            s3_endpoint=env["SHOP_S3_ENDPOINT"],
            s3_access_key=env["SHOP_S3_ACCESS_KEY"],
            s3_secret_key=SecretStr(env["SHOP_S3_SECRET_KEY"]),
        )
    )


def catalog(store: Store, images: ImageStorage) -> Catalog:
    return Catalog(store=store, images=images, limits=ImageLimits(max_bytes=1024, max_count=1))


async def new_product(store: Store, stock: int) -> str:
    category = await store.categories.create(
        NewCategory(name="Shoes", slug=f"c-{uuid.uuid4().hex[:10]}", parent_id=None), ()
    )
    fields = products.validate_new_product(
        ProductInput(name="Trail Runner", category_id=category.id, price=(1999, "EUR"), stock=stock)
    )
    return (await store.products.create(fields)).id


async def test_the_local_server_is_ferretdb_v2(client: Any) -> None:
    name = await Store(client["shop_product"]).server_name()
    assert name.startswith("FerretDB v2."), name


async def test_concurrent_holds_never_oversell(store: Store) -> None:
    product_id = await new_product(store, stock=10)
    results = await asyncio.gather(
        *(Reservations(store).reserve_items(str(uuid.uuid4()), [ReservationItem(product_id, 1)]) for _ in range(50)),
        return_exceptions=True,
    )
    reserved = [r for r in results if isinstance(r, reservations.Reservation)]
    refused = [r for r in results if isinstance(r, FailedPreconditionError)]
    assert (len(reserved), len(refused)) == (10, 40), results
    product = await store.products.get(product_id)
    assert product is not None
    assert product.stock == 0
    assert sorted(product.holds) == sorted(r.id for r in reserved)


async def test_release_and_commit_move_each_hold_once(store: Store) -> None:
    product_id = await new_product(store, stock=10)
    kept, returned = str(uuid.uuid4()), str(uuid.uuid4())
    await Reservations(store).reserve_items(kept, [ReservationItem(product_id, 3)])
    await Reservations(store).reserve_items(returned, [ReservationItem(product_id, 4)])
    # Repeats (also concurrent ones) change nothing more.
    await asyncio.gather(
        *(Reservations(store).commit(kept) for _ in range(3)),
        *(Reservations(store).release(returned) for _ in range(3)),
    )
    assert (await Reservations(store).commit(kept)).state == reservations.COMMITTED
    assert (await Reservations(store).release(returned)).state == reservations.RELEASED
    product = await store.products.get(product_id)
    assert product is not None
    assert (product.stock, dict(product.holds)) == (7, {})
    # A committed reservation cannot be released, nor a released one committed.
    with pytest.raises(FailedPreconditionError):
        await Reservations(store).release(kept)
    with pytest.raises(FailedPreconditionError):
        await Reservations(store).commit(returned)


async def test_a_product_with_holds_is_not_deleted(store: Store, images: ImageStorage) -> None:
    product_id = await new_product(store, stock=5)
    reservation_id = str(uuid.uuid4())
    await Reservations(store).reserve_items(reservation_id, [ReservationItem(product_id, 2)])
    with pytest.raises(FailedPreconditionError, match="open stock reservation"):
        await catalog(store, images).delete_product(product_id)
    await Reservations(store).release(reservation_id)
    deleted = await catalog(store, images).delete_product(product_id)
    assert deleted.id == product_id
    assert await store.products.get(product_id) is None


async def test_rewrites_and_batch_reads(store: Store) -> None:
    first, second = await new_product(store, stock=1), await new_product(store, stock=2)
    renamed = await asyncio.gather(*(store.products.update(first, {"name": f"Name {i}"}) for i in range(5)))
    assert all(p is not None for p in renamed)
    product = await store.products.get(first)
    assert product is not None
    assert product.name in {f"Name {i}" for i in range(5)}
    assert await store.products.update(str(uuid.uuid4()), {"name": "nobody"}) is None
    missing = str(uuid.uuid4())
    found = await store.products.by_ids([first, second, missing, first])
    assert sorted(found) == sorted([first, second])
    assert found[second].stock == 2


async def test_a_pending_reservation_is_rolled_back_by_recovery(store: Store) -> None:
    product_id = await new_product(store, stock=5)
    reservation_id = str(uuid.uuid4())
    await Reservations(store).reserve_items(reservation_id, [ReservationItem(product_id, 2)])
    # Play a crash midway: the record back to pending, the hold still taken.
    await store.reservations.collection.update_one({"_id": reservation_id}, {"$set": {"state": reservations.PENDING}})
    await asyncio.sleep(0.01)  # strictly older than the cutoff of "now"
    assert await Reservations(store).recover(timedelta(0)) == 1
    product = await store.products.get(product_id)
    assert product is not None
    assert (product.stock, dict(product.holds)) == (5, {})
    # It is over for good: a late release answers the failed record and returns nothing twice.
    assert (await Reservations(store).release(reservation_id)).state == reservations.FAILED
    product = await store.products.get(product_id)
    assert product is not None
    assert product.stock == 5


async def test_a_read_past_the_callers_deadline_is_deadline_exceeded(store: Store) -> None:
    await new_product(store, stock=1)
    query = ProductQuery(
        category_id=None,
        currency=None,
        min_price=None,
        max_price=None,
        in_stock_only=False,
        terms=("runner",),
        sort="newest",
        include_archived=False,
        page_size=10,
        after=None,
    )
    assert len((await store.products.page(query))[0]) == 1
    # What Store.deadline does with a gRPC call's remaining time.
    with pymongo.timeout(0.000001), pytest.raises(DeadlineExceededError, match="deadline"):
        await store.products.page(query)


def _nodes(plan: dict[str, Any]) -> list[dict[str, Any]]:
    """Every node of a PostgreSQL plan (FerretDB v2's explain answers DocumentDB's)."""
    return [plan, *(node for child in plan.get("Plans", ()) for node in _nodes(child))]


def _index_name(keys: list[tuple[str, int]]) -> str:
    return "_".join(f"{field}_{direction}" for field, direction in keys)


LISTING_SHAPES: dict[str, dict[str, Any]] = {
    "newest": {"sort": "newest"},
    "oldest": {"sort": "oldest"},
    "price": {"sort": "price_asc"},
    "price descending": {"sort": "price_desc"},
    "name": {"sort": "name_asc"},
    "name descending": {"sort": "name_desc"},
    "category subtree": {"sort": "newest", "category": True},
    "price range": {"sort": "price_asc", "currency": "EUR", "min_price": 1000, "max_price": 5000},
    "in stock": {"sort": "newest", "in_stock_only": True},
    "words": {"sort": "name_asc", "terms": ("trail", "runner")},
    "next page": {"sort": "newest", "after": True},
    "with archived (admin)": {"sort": "newest", "include_archived": True},
}


@pytest.mark.parametrize("shape", list(LISTING_SHAPES))
async def test_every_listing_shape_walks_its_index_in_order(store: Store, shape: str) -> None:
    """No listing scans the collection: each reads the index it is hinted to."""
    product_id = await new_product(store, stock=3)
    product = await store.products.get(product_id)
    assert product is not None
    spec = dict(LISTING_SHAPES[shape])
    sort = spec.pop("sort")
    category = spec.pop("category", False)
    after = spec.pop("after", False)
    query = ProductQuery(
        category_id=product.category_id if category else None,
        currency=spec.pop("currency", None),
        min_price=spec.pop("min_price", None),
        max_price=spec.pop("max_price", None),
        in_stock_only=spec.pop("in_stock_only", False),
        terms=spec.pop("terms", ()),
        sort=sort,
        include_archived=spec.pop("include_archived", False),
        page_size=20,
        after=listing.Cursor(key=str(to_millis(product.created_at)), id=product.id) if after else None,
    )
    assert not spec
    plan = (await (await store.products.listing(query)).explain())["queryPlanner"]["Plan"]
    nodes = _nodes(plan)
    assert "Seq Scan" not in [node["Node Type"] for node in nodes], nodes
    wanted = _index_name(listing_index(query))
    assert [node.get("Index Name") for node in nodes if "Index Scan" in node["Node Type"]] == [wanted], nodes
