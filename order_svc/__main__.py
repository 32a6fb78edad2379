"""order_svc: orders, payments and the checkout saga.

    python -m order_svc        serve gRPC on SHOP_PORT (default 8082)

Besides the gRPC server the process runs the outbox relay (events to Kafka) and
the sweeper (expiry of unpaid orders, stock releases and commits still owed to
product_svc, orphaned reservations, old idempotency keys).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys

from shop.order.v1 import cart_pb2, cart_pb2_grpc, order_pb2, order_pb2_grpc

from common import grpc_server
from common.clients import KafkaProducer, pg_engine, redis_client
from common.grpc_client import channel
from common.grpc_server import GrpcServer, serve
from common.migrations import SchemaNotCurrentError, check_database
from common.outbox import OutboxRelay
from common.ratelimit import Limiter
from common.tls import TlsFiles
from order_svc.billing import Billing
from order_svc.carts import Carts
from order_svc.clients import ProductClient
from order_svc.orders import Orders
from order_svc.payments import Processor, Processors
from order_svc.payments.stripe_api import StripeEvents, StripeProcessor
from order_svc.payments.testing import TestProcessor
from order_svc.server import CartService, OrderService
from order_svc.settings import OrderSettings
from order_svc.store import Store
from order_svc.store.carts import CartStore

log = logging.getLogger("shop.order")


def processors(settings: OrderSettings) -> Processors:
    """The processor SHOP_PAYMENT_PROCESSOR names takes new payments; every other one
    configured here stays, to refund the payments it took."""
    configured: dict[str, Processor] = {}
    if settings.test_payments_allowed:
        configured["test"] = TestProcessor()
    if settings.stripe_secret_key is not None:
        configured["stripe"] = StripeProcessor(
            settings.stripe_secret_key.get_secret_value(), settings.stripe_api_base,
            timeout=settings.stripe_timeout, max_network_retries=settings.stripe_max_network_retries,
        )  # fmt: skip
    charging = configured.pop(settings.payment_processor)
    return Processors(charging, *configured.values())


async def run(settings: OrderSettings) -> int:
    engine = pg_engine(settings.database_url, pool_size=settings.db_pool_size)
    products_channel = channel(settings.product_svc_addr, TlsFiles.from_settings(settings))
    redis = redis_client(settings.redis_url)
    stop = asyncio.Event()
    background: list[asyncio.Task[None]] = []
    producer: KafkaProducer | None = None
    payment_processors = processors(settings)
    try:
        try:
            await check_database(engine, "order")
        except SchemaNotCurrentError as exc:
            log.error(str(exc))
            print(f"order_svc: {exc}", file=sys.stderr, flush=True)
            return 1
        store = Store(engine)
        products = ProductClient(products_channel, settings.product_timeout)
        secret = settings.stripe_webhook_secret
        stripe_events = StripeEvents(secret.get_secret_value()) if secret is not None else None
        limiter = Limiter(redis, prefix="shop:order")
        orders = Orders(store, products, payment_processors, settings, limiter=limiter)
        billing = Billing(orders, stripe_events=stripe_events)
        carts = Carts(CartStore(redis), products, orders, settings)
        if settings.relay_enabled:
            producer = KafkaProducer(settings, **{"message.timeout.ms": 10_000})
            background.append(asyncio.create_task(OutboxRelay(engine, producer).run(stop)))
        background.append(asyncio.create_task(orders.sweep_forever(stop)))

        server = GrpcServer(settings)
        server.add(
            order_pb2_grpc.add_OrderServiceServicer_to_server,
            OrderService(orders, billing),
            order_pb2.DESCRIPTOR.services_by_name["OrderService"],
        )
        server.add(
            cart_pb2_grpc.add_CartServiceServicer_to_server,
            CartService(carts),
            cart_pb2.DESCRIPTOR.services_by_name["CartService"],
        )
        await serve(server, stopping=None)
        return 0
    finally:
        stop.set()
        for task in background:
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await asyncio.wait_for(task, 10)
        if producer is not None:
            await producer.close()
        await payment_processors.close()
        await products_channel.close()
        await redis.aclose()
        await engine.dispose()


def main() -> int:
    return grpc_server.main("order_svc", OrderSettings, run)


if __name__ == "__main__":
    sys.exit(main())
