"""Two product_svc processes on one catalog database, with order_svc balancing
over both: buyers racing for the last units get exactly the stock, each
reservation holds once whichever replica it reaches (and however often), and
the recovery sweeps of both replicas undo an abandoned reservation once
(issue 18)."""

from __future__ import annotations

import asyncio
import functools
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, Any

import grpc
import pytest
from shop.common.v1 import address_pb2, money_pb2
from shop.order.v1 import order_pb2, order_pb2_grpc
from shop.product.v1 import product_pb2, product_pb2_grpc

from common.clients import mongo_client
from devstack.cluster import Cluster
from devstack.paths import REPO
from devstack.process import Process, free_port
from product_svc.domain import reservations
from product_svc.reservations import Reservations
from product_svc.store import Store
from tests.callers import CallerStub
from tests.catalog_helpers import held
from tests.tokens import Identities
from tests.waiting import eventually

if TYPE_CHECKING:
    Products = product_pb2_grpc.ProductServiceAsyncStub
    Orders = order_pb2_grpc.OrderServiceAsyncStub
else:
    Products = product_pb2_grpc.ProductServiceStub
    Orders = order_pb2_grpc.OrderServiceStub

ADDRESS = address_pb2.Address(
    recipient_name="Ann Buyer", line1="1 Main St", city="Berlin", postal_code="10115", country_code="DE"
)


def _extra(cluster: Cluster, name: str, log: str, **env: str) -> tuple[Process, str]:
    port = free_port()
    full = {**cluster.service_env_for(name), "SHOP_PORT": str(port), "SHOP_METRICS_PORT": "0", **env}
    process = Process(log, [sys.executable, "-m", name], cluster.root / "logs" / f"{log}.log", env=full, cwd=REPO)
    process.start().wait_ready(functools.partial(cluster.grpc_serving, f"127.0.0.1:{port}"), 30)
    return process, f"127.0.0.1:{port}"


@pytest.fixture(scope="module")
def replicas(services) -> Iterator[tuple[Cluster, list[str], str]]:
    """The cluster's product_svc, a second one, and an order_svc that balances over both."""
    cluster = services("product_svc", "order_svc")
    second, second_addr = _extra(cluster, "product_svc", "product_svc-2")
    products = [cluster.addr("product_svc"), second_addr]
    # One gRPC target naming both replicas; the client's round_robin policy spreads calls over them.
    orders, orders_addr = _extra(
        cluster, "order_svc", "order_svc-replicas", SHOP_PRODUCT_SVC_ADDR=f"ipv4:{','.join(products)}"
    )
    try:
        yield cluster, products, orders_addr
    finally:
        orders.stop()
        second.stop()


@pytest.fixture
async def stubs(
    replicas,
) -> AsyncIterator[tuple[list[Products], Orders]]:
    cluster, products, orders = replicas
    # The catalog as the edge, reservations as order_svc (as the servicer's callers say).
    stubs = [CallerStub(cluster, addr, product_pb2_grpc.ProductServiceStub) for addr in products]
    order_stub = CallerStub(cluster, orders, order_pb2_grpc.OrderServiceStub)
    try:
        yield stubs, order_stub  # type: ignore[misc]
    finally:
        for stub in [*stubs, order_stub]:
            await stub.close()


async def new_product(stub: Products, admin: Any, stock: int) -> str:
    category = await stub.CreateCategory(
        product_pb2.CreateCategoryRequest(name="Replicas", slug=f"replicas-{uuid.uuid4().hex[:8]}"), metadata=admin
    )
    created = await stub.CreateProduct(
        product_pb2.CreateProductRequest(
            name="Last units", category_id=category.category.id, stock=stock,
            price=money_pb2.Money(amount_minor=900, currency_code="EUR"),
        ),
        metadata=admin,
    )  # fmt: skip
    return str(created.product.id)


async def product(stub: Products, product_id: str) -> product_pb2.Product:
    return (await stub.GetProduct(product_pb2.GetProductRequest(product_id=product_id))).product


async def test_buyers_racing_for_the_last_units_through_two_replicas(replicas, stubs) -> None:
    cluster, _, _ = replicas
    products, orders = stubs
    ids = Identities(cluster)
    product_id = await new_product(products[0], ids.admin(), stock=10)

    async def buy() -> order_pb2.Order | grpc.StatusCode:
        _, buyer = ids.customer()
        try:
            reply = await orders.CreateOrder(
                order_pb2.CreateOrderRequest(
                    items=[order_pb2.OrderItem(product_id=product_id, quantity=1)], shipping_address=ADDRESS
                ),
                metadata=buyer,
            )
            return reply.order
        except grpc.aio.AioRpcError as exc:
            return exc.code()

    results = await asyncio.gather(*(buy() for _ in range(40)))
    bought = [r for r in results if isinstance(r, order_pb2.Order)]
    refused = [r for r in results if not isinstance(r, order_pb2.Order)]
    assert len(bought) == 10, results
    assert set(refused) == {grpc.StatusCode.FAILED_PRECONDITION}
    # Exactly the stock was sold: one hold per order, named by its order id, on whichever replica.
    assert (await product(products[0], product_id)).stock == 0
    assert (await product(products[1], product_id)).stock == 0
    assert await held(cluster, product_id) == {order.id: 1 for order in bought}


async def test_one_reservation_sent_to_both_replicas_holds_once(replicas, stubs) -> None:
    cluster, _, _ = replicas
    products, _ = stubs
    product_id = await new_product(products[0], Identities(cluster).admin(), stock=10)
    reservation_ids = [str(uuid.uuid4()) for _ in range(20)]

    async def reserve(stub: Products, reservation_id: str) -> str:
        request = product_pb2.ReserveStockRequest(
            reservation_id=reservation_id, items=[product_pb2.ReservationItem(product_id=product_id, quantity=1)]
        )
        try:
            await stub.ReserveStock(request)
            return "reserved"
        except grpc.aio.AioRpcError as exc:
            assert exc.code() == grpc.StatusCode.FAILED_PRECONDITION, exc.details()
            return "refused"

    # Every reservation id reaches both replicas at once (a client retrying on another replica).
    outcomes = await asyncio.gather(*(reserve(stub, rid) for rid in reservation_ids for stub in products))
    per_id = dict(zip(reservation_ids, zip(outcomes[::2], outcomes[1::2], strict=True), strict=True))
    assert all(first == second for first, second in per_id.values()), per_id
    reserved = [rid for rid, (first, _) in per_id.items() if first == "reserved"]
    assert len(reserved) == 10, per_id
    # Both answers for one id agree once it has settled: a repeat answers the stored result.
    for rid in reservation_ids:
        repeats = {await reserve(stub, rid) for stub in products}
        assert repeats == {"reserved" if rid in reserved else "refused"}, rid
    assert (await product(products[1], product_id)).stock == 0
    assert await held(cluster, product_id) == dict.fromkeys(reserved, 1)

    # Released through one replica and released again through the other: the units come back once.
    await asyncio.gather(
        *(stub.ReleaseReservation(product_pb2.ReleaseReservationRequest(reservation_id=rid))
          for rid in reserved for stub in products)
    )  # fmt: skip
    assert (await product(products[0], product_id)).stock == 10
    assert await held(cluster, product_id) == {}


async def test_the_recovery_sweeps_of_both_replicas_undo_an_abandoned_reservation_once(replicas, stubs) -> None:
    cluster, _, _ = replicas
    products, _ = stubs
    product_id = await new_product(products[0], Identities(cluster).admin(), stock=5)
    client = mongo_client(cluster.service_env_for("product_svc")["SHOP_MONGO_URL"])
    try:
        store = Store(client["shop_product"])
        abandoned = [str(uuid.uuid4()) for _ in range(3)]
        for rid in abandoned:
            await Reservations(store).reserve_items(rid, [reservations.ReservationItem(product_id, 1)])
            # A caller that crashed midway: the record back to pending, the hold still taken.
            await store.reservations.collection.update_one({"_id": rid}, {"$set": {"state": reservations.PENDING}})
        assert (await product(products[0], product_id)).stock == 2

        # Both replicas sweep every second and roll back what is pending for over 3 s.
        async def swept() -> bool:
            docs = await store.reservations.collection.find({"_id": {"$in": abandoned}}).to_list()
            return all(doc["state"] == reservations.FAILED for doc in docs)

        await eventually(swept, 20, "both sweeps to fail the abandoned reservations")
        await asyncio.sleep(2.5)  # a few more rounds of both sweeps
        assert (await product(products[1], product_id)).stock == 5
        assert await held(cluster, product_id) == {}
    finally:
        await client.close()
