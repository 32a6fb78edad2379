"""order_svc against real PostgreSQL, Kafka and the running product_svc."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import grpc
import psycopg
import pytest
from google.protobuf.field_mask_pb2 import FieldMask
from shop.common.v1 import address_pb2, money_pb2, paging_pb2
from shop.events.v1 import order_events_pb2
from shop.order.v1 import order_pb2, order_pb2_grpc
from shop.product.v1 import product_pb2, product_pb2_grpc

from common import events
from common.clients import pg_engine
from common.errors import AbortedError, problem_from_rpc_error
from common.validation import Address
from devstack.cluster import Cluster
from order_svc import domain as order_domain
from order_svc.clients import ProductClient
from order_svc.domain import Caller, Claim, Item, Keyed, KeyRef, ShippingMethod
from order_svc.orders import Orders, Placement
from order_svc.payments import Processors
from order_svc.payments.testing import TestProcessor
from order_svc.settings import OrderSettings
from order_svc.store import Store
from tests.callers import CallerStub
from tests.kafka_helpers import consume
from tests.tokens import Identities

ADDRESS = address_pb2.Address(
    recipient_name="Ann Buyer", line1="1 Main St", city="Berlin", postal_code="10115", country_code="DE"
)


class Shop:
    """Stubs and identities for one test."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.ids = Identities(cluster)
        self.admin = self.ids.admin()
        # Each call as a process its servicer allows: the edge, order_svc for reservations.
        self.orders = CallerStub(cluster, "order_svc", order_pb2_grpc.OrderServiceStub)
        self.products = CallerStub(cluster, "product_svc", product_pb2_grpc.ProductServiceStub)
        self.category_id = ""

    async def close(self) -> None:
        await self.orders.close()
        await self.products.close()

    async def product(self, *, stock: int = 10, price: int = 1999, currency: str = "EUR") -> str:
        if not self.category_id:
            reply = await self.products.CreateCategory(
                product_pb2.CreateCategoryRequest(name="Things", slug=f"things-{uuid.uuid4().hex[:8]}"),
                metadata=self.admin,
            )
            self.category_id = reply.category.id
        created = await self.products.CreateProduct(
            product_pb2.CreateProductRequest(
                name=f"Thing {uuid.uuid4().hex[:6]}",
                category_id=self.category_id,
                price=money_pb2.Money(amount_minor=price, currency_code=currency),
                stock=stock,
            ),
            metadata=self.admin,
        )
        return created.product.id

    async def stock(self, product_id: str) -> int:
        reply = await self.products.GetProduct(product_pb2.GetProductRequest(product_id=product_id))
        return reply.product.stock

    async def order(self, who: list[tuple[str, str]], *lines: tuple[str, int], key: str = "") -> order_pb2.Order:
        reply = await self.orders.CreateOrder(
            order_pb2.CreateOrderRequest(
                items=[order_pb2.OrderItem(product_id=p, quantity=q) for p, q in lines],
                shipping_address=ADDRESS,
                idempotency_key=key,
            ),
            metadata=who,
        )
        return reply.order

    async def pay(self, who, order_id: str, token: str = "tok_approve", key: str = "") -> order_pb2.PayOrderResponse:
        return await self.orders.PayOrder(
            order_pb2.PayOrderRequest(order_id=order_id, payment_method_token=token, idempotency_key=key),
            metadata=who,
        )


@pytest.fixture(scope="module")
def stack(services) -> Cluster:
    return services("product_svc", "order_svc")


@pytest.fixture
async def shop(stack: Cluster) -> AsyncIterator[Shop]:
    shop = Shop(stack)
    yield shop
    await shop.close()


def reason(error: grpc.aio.AioRpcError) -> str | None:
    return problem_from_rpc_error(error).reason


async def order_events(cluster: Cluster, order_id: str, count: int) -> list[str]:
    kafka = cluster.servers["kafka"]
    messages = await consume(kafka, events.ORDERS_TOPIC, 10_000, timeout=0) or []
    deadline = asyncio.get_running_loop().time() + 30
    found: list[str] = []
    while len(found) < count and asyncio.get_running_loop().time() < deadline:
        messages = await consume(kafka, events.ORDERS_TOPIC, 100_000, timeout=3)
        found = [events.header(m.headers(), events.EVENT_TYPE) or "" for m in messages if m.key() == order_id.encode()]
    return [name.rsplit(".", 1)[-1] for name in found]


async def test_happy_path_to_delivered_with_events_in_order(shop: Shop) -> None:
    product = await shop.product(stock=5, price=1999)
    buyer_id, buyer = shop.ids.customer()
    order = await shop.order(buyer, (product, 2))
    assert order.status == order_pb2.ORDER_STATUS_PENDING_PAYMENT
    assert order.user_id == buyer_id
    assert (order.lines[0].unit_price.amount_minor, order.lines[0].line_total.amount_minor) == (1999, 3998)
    assert order.subtotal.amount_minor == 3998 and order.shipping.amount_minor == 499
    assert order.total.amount_minor == 4497 and order.total.currency_code == "EUR"
    assert await shop.stock(product) == 3

    paid = await shop.pay(buyer, order.id)
    assert paid.order.status == order_pb2.ORDER_STATUS_PAID
    assert paid.payment.status == order_pb2.PAYMENT_STATUS_APPROVED
    assert paid.payment.amount.amount_minor == 4497

    shipped = await shop.orders.ShipOrder(
        order_pb2.ShipOrderRequest(order_id=order.id, carrier="DHL", tracking_number="JD0001"), metadata=shop.admin
    )
    assert shipped.order.shipment.carrier == "DHL"
    delivered = await shop.orders.DeliverOrder(order_pb2.DeliverOrderRequest(order_id=order.id), metadata=shop.admin)
    assert delivered.order.status == order_pb2.ORDER_STATUS_DELIVERED
    assert await shop.stock(product) == 3  # committed, not returned

    assert await order_events(shop.cluster, order.id, 4) == [
        "OrderCreated", "OrderPaid", "OrderShipped", "OrderDelivered",
    ]  # fmt: skip
    purchased = await shop.orders.HasPurchased(
        order_pb2.HasPurchasedRequest(user_id=buyer_id, product_id=product), metadata=buyer
    )
    assert purchased.purchased and purchased.first_delivered_at.seconds > 0
    other = await shop.orders.HasPurchased(
        order_pb2.HasPurchasedRequest(user_id=buyer_id, product_id=await shop.product()), metadata=buyer
    )
    assert not other.purchased
    with pytest.raises(grpc.aio.AioRpcError) as nosy:
        await shop.orders.HasPurchased(
            order_pb2.HasPurchasedRequest(user_id=buyer_id, product_id=product), metadata=shop.ids.customer()[1]
        )
    assert nosy.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_out_of_stock_names_the_product_and_leaves_nothing(shop: Shop) -> None:
    plenty, scarce = await shop.product(stock=10), await shop.product(stock=1)
    _, buyer = shop.ids.customer()
    with pytest.raises(grpc.aio.AioRpcError) as short:
        await shop.order(buyer, (plenty, 2), (scarce, 2))
    assert short.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    problem = problem_from_rpc_error(short.value)
    assert (problem.status, problem.reason, problem.extra["product_id"]) == (409, "OUT_OF_STOCK", scarce)
    assert (await shop.stock(plenty), await shop.stock(scarce)) == (10, 1)
    mine = await shop.orders.ListMyOrders(order_pb2.ListMyOrdersRequest(), metadata=buyer)
    assert list(mine.orders) == []


async def test_a_refused_keyed_order_leaves_no_note_and_frees_its_key(shop: Shop, postgres) -> None:
    """The key's claim and the pending-reservation note are written together;
    a request refused before or at the reservation takes both back."""
    scarce = await shop.product(stock=1)
    user_id, buyer = shop.ids.customer()
    key = f"checkout-{uuid.uuid4()}"
    with psycopg.connect(postgres.dsn("shop_order"), autocommit=True) as conn:
        started = conn.execute("select now()").fetchone()[0]  # type: ignore[index]
    with pytest.raises(grpc.aio.AioRpcError) as unknown:
        await shop.order(buyer, (str(uuid.uuid4()), 1), key=key)  # refused while pricing
    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as short:
        await shop.order(buyer, (scarce, 2), key=key)  # refused by the reservation
    assert reason(short.value) == "OUT_OF_STOCK"
    with psycopg.connect(postgres.dsn("shop_order"), autocommit=True) as conn:
        notes = conn.execute("select count(*) from pending_reservations where created_at >= %s", (started,))
        keys = conn.execute("select count(*) from idempotency_keys where user_id = %s", (user_id,))
        assert (notes.fetchone(), keys.fetchone()) == ((0,), (0,))
    # The key is free again, for a request that differs from the refused ones.
    placed = await shop.order(buyer, (scarce, 1), key=key)
    assert placed.status == order_pb2.ORDER_STATUS_PENDING_PAYMENT
    assert await shop.stock(scarce) == 0


async def test_bad_requests(shop: Shop) -> None:
    product = await shop.product()
    _, buyer = shop.ids.customer()
    cases = [
        order_pb2.CreateOrderRequest(shipping_address=ADDRESS),
        order_pb2.CreateOrderRequest(
            items=[order_pb2.OrderItem(product_id=product, quantity=0)], shipping_address=ADDRESS
        ),
        order_pb2.CreateOrderRequest(
            items=[order_pb2.OrderItem(product_id="nope", quantity=1)], shipping_address=ADDRESS
        ),
        order_pb2.CreateOrderRequest(items=[order_pb2.OrderItem(product_id=product, quantity=1)]),
    ]
    for request in cases:
        with pytest.raises(grpc.aio.AioRpcError) as bad:
            await shop.orders.CreateOrder(request, metadata=buyer)
        assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT, request
        assert problem_from_rpc_error(bad.value).errors
    with pytest.raises(grpc.aio.AioRpcError) as unknown:
        await shop.order(buyer, (str(uuid.uuid4()), 1))
    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as anonymous:
        await shop.orders.CreateOrder(order_pb2.CreateOrderRequest())
    assert anonymous.value.code() == grpc.StatusCode.UNAUTHENTICATED
    euro, dollar = await shop.product(currency="EUR"), await shop.product(currency="USD")
    with pytest.raises(grpc.aio.AioRpcError) as mixed:
        await shop.order(buyer, (euro, 1), (dollar, 1))
    assert reason(mixed.value) == "MIXED_CURRENCIES"
    assert (await shop.stock(euro), await shop.stock(dollar)) == (10, 10)


async def test_price_change_before_ordering_uses_the_new_price(shop: Shop) -> None:
    product = await shop.product(price=1000)
    await shop.products.UpdateProduct(
        product_pb2.UpdateProductRequest(
            product=product_pb2.Product(id=product, price=money_pb2.Money(amount_minor=1250, currency_code="EUR")),
            update_mask=FieldMask(paths=["price"]),
        ),
        metadata=shop.admin,
    )
    order = await shop.order(shop.ids.customer()[1], (product, 1))
    assert order.lines[0].unit_price.amount_minor == 1250


async def test_idempotent_create_under_concurrent_repeats(shop: Shop) -> None:
    product = await shop.product(stock=10)
    _, buyer = shop.ids.customer()
    key = f"checkout-{uuid.uuid4()}"
    results = await asyncio.gather(*(shop.order(buyer, (product, 2), key=key) for _ in range(8)))
    assert len({order.id for order in results}) == 1
    assert results[0] == results[-1]
    assert await shop.stock(product) == 8
    mine = await shop.orders.ListMyOrders(order_pb2.ListMyOrdersRequest(), metadata=buyer)
    assert [o.id for o in mine.orders] == [results[0].id]
    with pytest.raises(grpc.aio.AioRpcError) as reused:
        await shop.order(buyer, (product, 3), key=key)
    assert reason(reused.value) == "IDEMPOTENCY_KEY_REUSED"
    assert problem_from_rpc_error(reused.value).status == 422
    # The same key from another buyer is another request.
    other = await shop.order(shop.ids.customer()[1], (product, 1), key=key)
    assert other.id != results[0].id


async def test_idempotent_pay_under_concurrent_repeats(shop: Shop) -> None:
    product = await shop.product()
    _, buyer = shop.ids.customer()
    order = await shop.order(buyer, (product, 1))
    key = f"pay-{uuid.uuid4()}"
    replies = await asyncio.gather(*(shop.pay(buyer, order.id, key=key) for _ in range(6)))
    assert len({reply.payment.id for reply in replies}) == 1
    # Other keys (another tab) find the order already paid.
    outcomes = await asyncio.gather(
        *(shop.pay(buyer, order.id, key=f"k-{n}") for n in range(4)), return_exceptions=True
    )
    for outcome in outcomes:
        assert isinstance(outcome, grpc.aio.AioRpcError)
        assert reason(outcome) == "INVALID_STATE"
        assert problem_from_rpc_error(outcome).extra["current_state"] == "ORDER_STATUS_PAID"
    final = await shop.orders.GetOrder(order_pb2.GetOrderRequest(order_id=order.id), metadata=buyer)
    charged = [p for p in final.order.payments if p.status == order_pb2.PAYMENT_STATUS_APPROVED]
    assert len(charged) == 1


async def test_declined_payment_leaves_the_order_payable(shop: Shop) -> None:
    product = await shop.product()
    _, buyer = shop.ids.customer()
    order = await shop.order(buyer, (product, 1))
    for token, expected in (("tok_decline", "PAYMENT_DECLINED"), ("tok_insufficient_funds", "INSUFFICIENT_FUNDS")):
        with pytest.raises(grpc.aio.AioRpcError) as declined:
            await shop.pay(buyer, order.id, token)
        assert reason(declined.value) == expected
        assert problem_from_rpc_error(declined.value).status == 402
    with pytest.raises(grpc.aio.AioRpcError) as broken:
        await shop.pay(buyer, order.id, "tok_processor_error")
    assert broken.value.code() == grpc.StatusCode.UNAVAILABLE
    assert problem_from_rpc_error(broken.value).status == 502
    paid = await shop.pay(buyer, order.id, "tok_approve")
    assert paid.order.status == order_pb2.ORDER_STATUS_PAID
    statuses = [p.status for p in paid.order.payments]
    assert statuses == [
        order_pb2.PAYMENT_STATUS_DECLINED, order_pb2.PAYMENT_STATUS_DECLINED,
        order_pb2.PAYMENT_STATUS_FAILED, order_pb2.PAYMENT_STATUS_APPROVED,
    ]  # fmt: skip


async def test_cancel_releases_stock_and_refunds(shop: Shop) -> None:
    product = await shop.product(stock=6)
    _, buyer = shop.ids.customer()
    unpaid = await shop.order(buyer, (product, 2))
    paid = await shop.order(buyer, (product, 3))
    await shop.pay(buyer, paid.id)
    assert await shop.stock(product) == 1
    cancelled = await shop.orders.CancelOrder(order_pb2.CancelOrderRequest(order_id=unpaid.id), metadata=buyer)
    assert cancelled.order.status == order_pb2.ORDER_STATUS_CANCELLED
    assert not cancelled.order.cancellation.refunded
    refunded = await shop.orders.CancelOrder(order_pb2.CancelOrderRequest(order_id=paid.id), metadata=buyer)
    assert refunded.order.cancellation.refunded
    assert refunded.order.payments[-1].status == order_pb2.PAYMENT_STATUS_REFUNDED
    assert await shop.stock(product) == 6
    again = await shop.orders.CancelOrder(order_pb2.CancelOrderRequest(order_id=paid.id), metadata=buyer)
    assert again.order.status == order_pb2.ORDER_STATUS_CANCELLED  # idempotent
    assert await shop.stock(product) == 6
    assert await order_events(shop.cluster, paid.id, 3) == ["OrderCreated", "OrderPaid", "OrderCancelled"]

    shipped = await shop.order(buyer, (product, 1))
    await shop.pay(buyer, shipped.id)
    await shop.orders.ShipOrder(
        order_pb2.ShipOrderRequest(order_id=shipped.id, carrier="UPS", tracking_number="1Z"), metadata=shop.admin
    )
    with pytest.raises(grpc.aio.AioRpcError) as late:
        await shop.orders.CancelOrder(order_pb2.CancelOrderRequest(order_id=shipped.id), metadata=buyer)
    assert reason(late.value) == "INVALID_STATE"
    assert problem_from_rpc_error(late.value).extra["current_state"] == "ORDER_STATUS_SHIPPED"
    with pytest.raises(grpc.aio.AioRpcError) as stranger:
        await shop.orders.CancelOrder(order_pb2.CancelOrderRequest(order_id=unpaid.id), metadata=shop.ids.customer()[1])
    assert stranger.value.code() == grpc.StatusCode.NOT_FOUND


async def stock_becomes(shop: Shop, product: str, expected: int) -> int:
    """The product's stock once it is ``expected``, or after 10 s, whatever it is then."""
    for _ in range(100):
        if (found := await shop.stock(product)) == expected:
            return found
        await asyncio.sleep(0.1)
    return await shop.stock(product)


async def test_unpaid_orders_expire_and_release_stock(shop: Shop, postgres) -> None:
    product = await shop.product(stock=4)
    _, buyer = shop.ids.customer()
    order = await shop.order(buyer, (product, 3))
    assert await shop.stock(product) == 1
    # Move the payment deadline into the past; the sweeper does the rest.
    with psycopg.connect(postgres.dsn("shop_order"), autocommit=True) as conn:
        conn.execute("update orders set expires_at = now() - interval '1 second' where id = %s", (order.id,))
    for _ in range(100):
        current = await shop.orders.GetOrder(order_pb2.GetOrderRequest(order_id=order.id), metadata=buyer)
        if current.order.status == order_pb2.ORDER_STATUS_CANCELLED:
            break
        await asyncio.sleep(0.1)
    assert current.order.cancellation.reason == order_pb2.CANCELLATION_REASON_EXPIRED
    assert await stock_becomes(shop, product, 4) == 4
    with pytest.raises(grpc.aio.AioRpcError) as late:
        await shop.pay(buyer, order.id)
    assert reason(late.value) == "INVALID_STATE"


async def test_an_orphaned_reservation_is_released(shop: Shop, postgres) -> None:
    """A reservation made for an order that was never written (the process died
    between ReserveStock and its transaction) goes back to stock."""
    product = await shop.product(stock=5)
    orphan = str(uuid.uuid4())
    with psycopg.connect(postgres.dsn("shop_order"), autocommit=True) as conn:
        conn.execute(
            "insert into pending_reservations (order_id, created_at) values (%s, now() - interval '1 minute')",
            (orphan,),
        )
    await shop.products.ReserveStock(
        product_pb2.ReserveStockRequest(
            reservation_id=orphan, items=[product_pb2.ReservationItem(product_id=product, quantity=5)]
        )
    )
    assert await shop.stock(product) == 0
    assert await stock_becomes(shop, product, 5) == 5


async def dead_holder(
    shop: Shop, postgres, user_id: str, key: str, *, retry: order_pb2.CreateOrderRequest, product: str
):
    """The state a request leaves when it dies holding ``key`` after reserving 2
    of ``product``: its claim, with the lease run out, and its note, dated in the
    future so that the sweeper leaves it alone until it is dated back (:func:`date_note`)."""
    dead = str(uuid.uuid4())
    request_hash = order_domain.fingerprint(retry.SerializeToString(deterministic=True))
    await shop.products.ReserveStock(
        product_pb2.ReserveStockRequest(
            reservation_id=dead, items=[product_pb2.ReservationItem(product_id=product, quantity=2)]
        )
    )
    with psycopg.connect(postgres.dsn("shop_order"), autocommit=True) as conn:
        conn.execute(
            "insert into idempotency_keys (user_id, scope, key, request_hash, resource_id, locked_until, created_at)"
            " values (%s, 'create', %s, %s, %s, now() - interval '1 minute', now() - interval '1 minute')",
            (user_id, key, request_hash, dead),
        )
        conn.execute(
            "insert into pending_reservations (order_id, created_at) values (%s, now() + interval '1 hour')", (dead,)
        )
    return dead


def note_of(postgres, order_id: str) -> int:
    with psycopg.connect(postgres.dsn("shop_order"), autocommit=True) as conn:
        found = conn.execute("select count(*) from pending_reservations where order_id = %s", (order_id,))
        return found.fetchone()[0]  # type: ignore[index]


def date_note(postgres, order_id: str | uuid.UUID, *, past: bool) -> None:
    """Date a note an hour ahead (the sweeper leaves it alone) or an hour back (it takes it)."""
    with psycopg.connect(postgres.dsn("shop_order"), autocommit=True) as conn:
        conn.execute(
            "update pending_reservations set created_at = now() + %s * interval '1 hour' where order_id = %s",
            (-1 if past else 1, order_id),
        )


def key_rows(postgres, user_id: str | uuid.UUID) -> list[tuple[uuid.UUID, bool]]:
    """The user's idempotency keys: (resource id, done)."""
    with psycopg.connect(postgres.dsn("shop_order"), autocommit=True) as conn:
        rows = conn.execute("select resource_id, done from idempotency_keys where user_id = %s", (user_id,))
        return [(row[0], row[1]) for row in rows]


async def test_a_retry_refused_after_taking_over_a_dead_requests_key_keeps_its_note(shop: Shop, postgres) -> None:
    """The dead request's note is all that lets the sweeper give its stock back:
    a retry that takes the key over and is refused while pricing leaves it."""
    product = await shop.product(stock=5)
    user_id, buyer = shop.ids.customer()
    key = f"checkout-{uuid.uuid4()}"
    retry = order_pb2.CreateOrderRequest(
        items=[order_pb2.OrderItem(product_id=str(uuid.uuid4()), quantity=1)], shipping_address=ADDRESS
    )
    dead = await dead_holder(shop, postgres, user_id, key, retry=retry, product=product)
    assert await shop.stock(product) == 3
    retry.idempotency_key = key
    with pytest.raises(grpc.aio.AioRpcError) as unknown:
        await shop.orders.CreateOrder(retry, metadata=buyer)  # takes the key over, then refused while pricing
    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
    assert note_of(postgres, dead) == 1
    assert key_rows(postgres, user_id) == []  # the refused retry freed the key
    date_note(postgres, dead, past=True)
    assert await stock_becomes(shop, product, 5) == 5  # the sweeper found the dead request's note


async def test_a_retry_that_takes_over_a_dead_requests_key_orders_under_its_own_id(shop: Shop, postgres) -> None:
    """A takeover never shares the dead request's reservation: it reserves under a
    fresh id, and the sweeper gives the dead request's stock back."""
    product = await shop.product(stock=5)
    user_id, buyer = shop.ids.customer()
    key = f"checkout-{uuid.uuid4()}"
    retry = order_pb2.CreateOrderRequest(
        items=[order_pb2.OrderItem(product_id=product, quantity=1)], shipping_address=ADDRESS
    )
    dead = await dead_holder(shop, postgres, user_id, key, retry=retry, product=product)
    retry.idempotency_key = key
    placed = (await shop.orders.CreateOrder(retry, metadata=buyer)).order
    assert placed.id != dead and placed.status == order_pb2.ORDER_STATUS_PENDING_PAYMENT
    assert await shop.stock(product) == 2  # the dead request's 2 and the order's 1
    assert (await shop.orders.CreateOrder(retry, metadata=buyer)).order.id == placed.id  # replayed
    assert key_rows(postgres, user_id) == [(uuid.UUID(placed.id), True)]
    date_note(postgres, dead, past=True)
    assert await stock_becomes(shop, product, 4) == 4


@pytest.fixture
async def orders(shop: Shop, postgres) -> AsyncIterator[Orders]:
    """order_svc's use cases in this process, on the cluster's database and product_svc."""
    engine = pg_engine(postgres.url("shop_order"), pool_size=2)
    channel = shop.cluster.channel("product_svc", identity="order_svc")
    settings = OrderSettings(database_url=postgres.url("shop_order"))
    yield Orders(Store(engine), ProductClient(channel, 5.0), Processors(TestProcessor()), settings)
    await channel.close()
    await engine.dispose()


async def test_a_holder_whose_key_was_taken_over_takes_its_order_back(shop: Shop, postgres, orders: Orders) -> None:
    """The earlier holder of a key, still running when a retry took the key over
    (under a fresh id), finds the key no longer its own when it writes its
    order: the order's transaction rolls back, its reservation goes back to
    stock at once, and the key stays the retry's."""
    product = await shop.product(stock=5)
    caller, key = Caller(uuid.uuid4()), f"checkout-{uuid.uuid4()}"
    store = orders.store
    ref = KeyRef(caller.user_id, "create", key)
    slow = await orders.keys.claim_once(ref, "hash", lease=0, reserving=True)
    retry = await orders.keys.claim_once(ref, "hash", lease=60, reserving=True)
    assert isinstance(slow, Claim) and isinstance(retry, Claim)
    for claim in (slow, retry):
        date_note(postgres, claim.resource_id, past=False)
    assert slow.noted and retry.noted and retry.resource_id != slow.resource_id
    keyed = Keyed(key=key, request_hash="hash")
    address = Address(
        recipient_name="Ann Buyer", line1="1 Main St", city="Berlin", postal_code="10115", country_code="DE"
    )
    try:
        with pytest.raises(AbortedError, match="a retry took the key over"):
            await orders._place(
                Placement(caller, [Item(product, 2)], address, ShippingMethod.STANDARD, keyed, lambda _: b"slow"), slow
            )
        assert await shop.stock(product) == 5
        assert await store.order(slow.resource_id) is None
        assert (note_of(postgres, str(slow.resource_id)), note_of(postgres, str(retry.resource_id))) == (0, 1)
        assert slow.holder is not None and retry.holder is not None
        await orders.keys.release(slow)  # what create does next
        assert key_rows(postgres, caller.user_id) == [(retry.resource_id, False)]
    finally:
        assert retry.holder is not None
        await orders.keys.release(retry)
        async with store.unit_of_work() as work:
            await work.take_pending_reservation(retry.resource_id)


async def test_compensating_a_written_order_keeps_its_stock(shop: Shop, postgres, orders: Orders) -> None:
    """When a commit's answer is lost the order may have been written after all:
    compensation then leaves its reservation alone."""
    product = await shop.product(stock=5)
    _, buyer = shop.ids.customer()
    placed = await shop.order(buyer, (product, 2))
    assert await shop.stock(product) == 3
    await orders._compensate(uuid.UUID(placed.id))
    assert await shop.stock(product) == 3
    with psycopg.connect(postgres.dsn("shop_order"), autocommit=True) as conn:
        queued = conn.execute("select count(*) from stock_actions where order_id = %s", (placed.id,))
        assert queued.fetchone() == (0,)


async def test_paging_my_orders(shop: Shop) -> None:
    product = await shop.product(stock=50)
    _, buyer = shop.ids.customer()
    placed = [(await shop.order(buyer, (product, 1))).id for _ in range(5)]
    seen, token = [], ""
    while True:
        page = await shop.orders.ListMyOrders(
            order_pb2.ListMyOrdersRequest(page=paging_pb2.PageRequest(page_size=2, page_token=token)), metadata=buyer
        )
        seen += [o.id for o in page.orders]
        token = page.page.next_page_token
        if not token:
            break
    assert seen == list(reversed(placed))
    everyone = await shop.orders.ListOrders(
        order_pb2.ListOrdersRequest(page=paging_pb2.PageRequest(page_size=100)), metadata=shop.admin
    )
    assert set(placed) <= {o.id for o in everyone.orders}
    with pytest.raises(grpc.aio.AioRpcError) as customer:
        await shop.orders.ListOrders(order_pb2.ListOrdersRequest(), metadata=buyer)
    assert customer.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_kafka_down_orders_still_accepted_and_events_arrive_later(shop: Shop) -> None:
    product = await shop.product(stock=10)
    _, buyer = shop.ids.customer()
    kafka = shop.cluster.servers["kafka"]
    kafka.stop()
    try:
        placed = [await shop.order(buyer, (product, 1)) for _ in range(3)]
    finally:
        kafka.start()
        await asyncio.to_thread(kafka.wait)
    for order in placed:
        assert await order_events(shop.cluster, order.id, 1) == ["OrderCreated"]
        decoded = [
            events.decode(m.headers(), m.value())[1]
            for m in await consume(kafka, events.ORDERS_TOPIC, 100_000, timeout=2)
            if m.key() == order.id.encode()
        ]
        assert isinstance(decoded[0], order_events_pb2.OrderCreated)
        assert decoded[0].total.amount_minor == order.total.amount_minor
