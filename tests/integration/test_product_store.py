"""product_svc's store against the real MongoDB-wire server, both ways it writes:
with the condition in the filter (MongoDB) and with the condition checked in
the process under the document's lock (FerretDB v1, which scans the collection
for any filter other than ``{_id}``)."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pymongo
import pytest

from common.clients import mongo_client
from common.errors import DeadlineExceeded, FailedPrecondition
from devstack.cluster import Cluster
from devstack.servers import Mongo
from product_svc import domain
from product_svc.domain import NewCategory, ProductInput, ProductQuery, ReservationItem
from product_svc.store import Store


@pytest.fixture(scope="module")
def mongo(services) -> Mongo:
    cluster: Cluster = services("product_svc")
    server = cluster.servers["mongo"]
    assert isinstance(server, Mongo)
    return server


@pytest.fixture(scope="module")
def mongo_url(mongo: Mongo) -> str:
    return mongo.url


@pytest.fixture
async def client(mongo_url: str) -> AsyncIterator[Any]:
    client = mongo_client(mongo_url)
    try:
        yield client
    finally:
        await client.close()


@pytest.fixture(params=[True, False], ids=["conditions-in-filter", "conditions-checked-here"])
async def store(request: pytest.FixtureRequest, client: Any) -> AsyncIterator[Store]:
    name = f"store_test_{uuid.uuid4().hex[:10]}"
    store = Store(client[name])
    store.atomic_conditions = request.param
    await store.ensure_indexes()
    try:
        yield store
    finally:
        await client.drop_database(name)


async def new_product(store: Store, stock: int) -> str:
    category = await store.create_category(NewCategory(name="Shoes", slug=f"c-{uuid.uuid4().hex[:10]}", parent_id=None))
    fields = domain.validate_new_product(
        ProductInput(name="Trail Runner", category_id=category.id, price=(1999, "EUR"), stock=stock)
    )
    return (await store.create_product(fields)).id


async def test_the_local_server_is_detected_as_ferretdb(client: Any) -> None:
    store = Store(client["shop_product"])
    assert store.atomic_conditions
    name = await store.detect_server()
    assert name.startswith("FerretDB "), name
    assert not store.atomic_conditions


def test_lookups_by_id_use_an_index(mongo: Mongo) -> None:
    """devstack indexed what product_svc created at its start (see Mongo.add_id_lookup_indexes)."""
    assert mongo.add_id_lookup_indexes() == []  # nothing left to do
    with contextlib.closing(sqlite3.connect(mongo.data / "sqlite" / "shop_product.sqlite")) as db:
        tables = dict(db.execute("SELECT name, table_name FROM _ferretdb_collections").fetchall())
        assert {"products", "categories", "reservations"} <= set(tables)
        for name in ("products", "reservations"):
            # The statement FerretDB v1 runs for a filter of exactly {_id: <string>}.
            plan = db.execute(
                f"EXPLAIN QUERY PLAN SELECT _ferretdb_sjson FROM \"{tables[name]}\" WHERE _ferretdb_sjson->'$._id' = ?",
                ('"some-id"',),
            ).fetchall()
            assert "USING INDEX" in plan[0][3], (name, plan)


async def test_concurrent_holds_never_oversell(store: Store) -> None:
    product_id = await new_product(store, stock=7)
    results = await asyncio.gather(
        *(store.reserve(str(uuid.uuid4()), [ReservationItem(product_id, 1)]) for _ in range(20)),
        return_exceptions=True,
    )
    reserved = [r for r in results if isinstance(r, domain.Reservation)]
    refused = [r for r in results if isinstance(r, FailedPrecondition)]
    assert (len(reserved), len(refused)) == (7, 13), results
    product = await store.product(product_id)
    assert product is not None
    assert product.stock == 0
    assert sorted(product.holds) == sorted(r.id for r in reserved)


async def test_release_and_commit_move_each_hold_once(store: Store) -> None:
    product_id = await new_product(store, stock=10)
    kept, returned = str(uuid.uuid4()), str(uuid.uuid4())
    await store.reserve(kept, [ReservationItem(product_id, 3)])
    await store.reserve(returned, [ReservationItem(product_id, 4)])
    # Repeats (also concurrent ones) change nothing more.
    await asyncio.gather(*(store.commit(kept) for _ in range(3)), *(store.release(returned) for _ in range(3)))
    assert (await store.commit(kept)).state == domain.COMMITTED
    assert (await store.release(returned)).state == domain.RELEASED
    product = await store.product(product_id)
    assert product is not None
    assert (product.stock, dict(product.holds)) == (7, {})
    # A committed reservation cannot be released, nor a released one committed.
    with pytest.raises(FailedPrecondition):
        await store.release(kept)
    with pytest.raises(FailedPrecondition):
        await store.commit(returned)


async def test_a_product_with_holds_is_not_deleted(store: Store) -> None:
    product_id = await new_product(store, stock=5)
    reservation_id = str(uuid.uuid4())
    await store.reserve(reservation_id, [ReservationItem(product_id, 2)])
    with pytest.raises(FailedPrecondition, match="open stock reservation"):
        await store.delete_product(product_id)
    await store.release(reservation_id)
    deleted = await store.delete_product(product_id)
    assert deleted.id == product_id
    assert await store.product(product_id) is None


async def test_rewrites_and_batch_reads(store: Store) -> None:
    first, second = await new_product(store, stock=1), await new_product(store, stock=2)
    renamed = await asyncio.gather(*(store.update_product(first, {"name": f"Name {i}"}) for i in range(5)))
    assert all(p is not None for p in renamed)
    product = await store.product(first)
    assert product is not None
    assert product.name in {f"Name {i}" for i in range(5)}
    assert await store.update_product(str(uuid.uuid4()), {"name": "nobody"}) is None
    missing = str(uuid.uuid4())
    found = await store.products_by_id([first, second, missing, first])
    assert sorted(found) == sorted([first, second])
    assert found[second].stock == 2


async def test_a_pending_reservation_is_rolled_back_by_recovery(store: Store) -> None:
    product_id = await new_product(store, stock=5)
    reservation_id = str(uuid.uuid4())
    await store.reserve(reservation_id, [ReservationItem(product_id, 2)])
    # Play a crash midway: the record back to pending, the hold still taken.
    await store.reservations.update_one({"_id": reservation_id}, {"$set": {"state": domain.PENDING}})
    await asyncio.sleep(0.01)  # strictly older than the cutoff of "now"
    assert await store.recover(timedelta(0)) == 1
    product = await store.product(product_id)
    assert product is not None
    assert (product.stock, dict(product.holds)) == (5, {})
    # It is over for good: a late release answers the failed record and returns nothing twice.
    assert (await store.release(reservation_id)).state == domain.FAILED
    product = await store.product(product_id)
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
    assert len((await store.list_products(query))[0]) == 1
    # What server.within_deadline does with a gRPC call's remaining time.
    with pymongo.timeout(0.000001), pytest.raises(DeadlineExceeded, match="deadline"):
        await store.list_products(query)
