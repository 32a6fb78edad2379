"""notify_svc: notifications from Kafka events, kept in Redis.

    python -m notify_svc        serve gRPC on SHOP_PORT (default 8083)

One process runs the gRPC service, the Kafka consumer (group
``SHOP_CONSUMER_GROUP``), the webhook fan-out and the webhook deliverer.  Any
number of processes may run side by side: the consumer group splits the
partitions, and the webhook queues are shared safely through Redis.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Awaitable, Callable

from shop.notify.v1 import notify_pb2, notify_pb2_grpc

from common import grpc_server
from common.clients import KafkaProducer, redis_client
from common.consumer import EventConsumer
from common.grpc_server import GrpcServer, serve
from common.ratelimit import Leases, Limiter, Window
from common.waits import wait_or_stop
from notify_svc.domain.webhooks import RetryPolicy
from notify_svc.events import TOPICS, AnnouncementPublisher, NotificationHandler
from notify_svc.notifications import Notifications, StreamPolicy
from notify_svc.server import NotificationService
from notify_svc.settings import NotifySettings
from notify_svc.store import Store
from notify_svc.store.limits import Limits
from notify_svc.webhook_delivery import Deliverer, Fanout
from notify_svc.webhooks import Webhooks

log = logging.getLogger("shop.notify")


async def supervise(name: str, start: Callable[[asyncio.Event], Awaitable[None]], stop: asyncio.Event) -> None:
    """Run a background loop until ``stop``; restart it (after a pause) if it dies."""
    pause = 1.0
    while not stop.is_set():
        try:
            await start(stop)
        except Exception as exc:
            log.error("%s stopped unexpectedly; restarting in %.0fs", name, pause, exc_info=exc)
            await wait_or_stop(stop, pause)
            pause = min(pause * 2, 30.0)


def build_store(settings: NotifySettings) -> Store:
    return Store(
        redis_client(settings.redis_url),
        Limits(
            feed_cap=settings.feed_cap,
            announcement_cap=settings.announcement_cap,
            dedupe_ttl=settings.dedupe_ttl,
            like_fold_window=settings.like_fold_window,
            webhook_limit=settings.webhook_limit,
            webhook_history=settings.webhook_history,
            delivery_retention=settings.webhook_delivery_retention,
        ),
    )


async def run(settings: NotifySettings, *, stopping: asyncio.Event | None = None) -> int:
    stop = stopping or asyncio.Event()
    store = build_store(settings)
    producer = KafkaProducer(settings, **{"message.timeout.ms": 10_000})
    notifications = Notifications(
        store,
        AnnouncementPublisher(producer, timeout=12.0),
        policy=StreamPolicy(heartbeat=settings.heartbeat_interval, ticket_seconds=settings.stream_ticket_seconds),
        stopping=stop,
        streams=Leases(
            store.redis, "streams", settings.stream_limit, settings.stream_lease_seconds, prefix="shop:notify"
        ),
    )
    webhooks = Webhooks(
        store,
        policy=settings.webhook_policy(),
        limiter=Limiter(store.redis, prefix="shop:notify"),
        window=Window("webhooks", settings.webhook_register_limit, settings.webhook_register_window),
    )
    handler = NotificationHandler(notifications)

    def consume(stop: asyncio.Event) -> Awaitable[None]:
        consumer = EventConsumer(
            settings,
            group_id=settings.consumer_group,
            topics=TOPICS,
            handler=handler,
            retry_base=settings.consumer_retry_base,
            retry_max=settings.consumer_retry_max,
            **{"session.timeout.ms": settings.kafka_session_timeout_ms},
        )
        return consumer.run(stop)

    wake = asyncio.Event()
    fanout = Fanout(store, wake=wake)
    deliverer = Deliverer(
        store,
        wake=wake,
        policy=settings.webhook_policy(),
        retry=RetryPolicy(
            max_attempts=settings.webhook_max_attempts, base=settings.webhook_retry_base, cap=settings.webhook_retry_max
        ),
        timeout=settings.webhook_timeout,
        concurrency=settings.webhook_concurrency,
    )
    servicer = NotificationService(notifications, webhooks)
    server = GrpcServer(settings)
    server.add(
        notify_pb2_grpc.add_NotificationServiceServicer_to_server,
        servicer,
        notify_pb2.DESCRIPTOR.services_by_name["NotificationService"],
    )
    try:
        await store.ping()
    except Exception as exc:
        log.warning("Redis is not reachable at start", exc_info=exc)
    tasks = [
        asyncio.create_task(supervise("event consumer", consume, stop)),
        asyncio.create_task(supervise("webhook fan-out", fanout.run, stop)),
        asyncio.create_task(supervise("webhook deliverer", deliverer.run, stop)),
    ]
    try:
        await serve(server, stopping=stop)
        return 0
    finally:
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        await producer.close(flush_seconds=2)
        await store.close()


def main() -> int:
    return grpc_server.main("notify_svc", NotifySettings, run)


if __name__ == "__main__":
    sys.exit(main())
