"""comment_svc: comments, reviews, likes and rating summaries of products.

    python -m comment_svc      serve gRPC on SHOP_PORT (default 8084)

The process also runs the outbox relay (``common.outbox.OutboxRelay``) that
publishes the events written with each change to ``shop.comments.v1``.  It
refuses to start on a database that is not migrated to the code's head revision.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys

from shop.comment.v1 import comment_pb2, comment_pb2_grpc

from comment_svc.clients import Clients
from comment_svc.comments import Comments
from comment_svc.server import CommentService
from comment_svc.settings import CommentSettings
from comment_svc.store import Store
from common import grpc_server
from common.clients import KafkaProducer, pg_engine, redis_client
from common.grpc_server import GrpcServer, serve
from common.migrations import SchemaNotCurrentError, check_database
from common.outbox import OutboxRelay
from common.ratelimit import Limiter, Window

log = logging.getLogger("shop.comment")

# Seconds the relay gets at shutdown to finish the batch in flight.
RELAY_STOP_GRACE = 5.0


def _fail(message: str) -> int:
    log.error(message)
    print(f"comment_svc: {message}", file=sys.stderr, flush=True)
    return 1


async def run(settings: CommentSettings, *, stopping: asyncio.Event | None = None) -> int:
    engine = pg_engine(settings.database_url, pool_size=settings.db_pool_size)
    redis = redis_client(settings.redis_url)
    try:
        try:
            await check_database(engine, "comment")
        except SchemaNotCurrentError as exc:
            return _fail(str(exc))
        stop = stopping or asyncio.Event()
        clients = Clients(settings)
        producer = KafkaProducer(settings)
        relay = asyncio.create_task(OutboxRelay(engine, producer).run(stop))
        try:
            server = GrpcServer(settings)
            server.add(
                comment_pb2_grpc.add_CommentServiceServicer_to_server,
                CommentService(
                    Comments(
                        store=Store(engine),
                        clients=clients,
                        limiter=Limiter(redis, prefix="shop:comment"),
                        create_window=Window("comments", settings.comment_create_limit, settings.comment_create_window),
                    )
                ),
                comment_pb2.DESCRIPTOR.services_by_name["CommentService"],
            )
            await serve(server, stopping=stop)
        finally:
            stop.set()
            try:
                await asyncio.wait_for(relay, RELAY_STOP_GRACE)
            except TimeoutError:
                log.warning("the outbox relay did not stop in time; unpublished events stay in the outbox")
            except Exception:
                log.exception("the outbox relay failed")
            with contextlib.suppress(Exception):
                await producer.close(flush_seconds=RELAY_STOP_GRACE)
            await clients.close()
        return 0
    finally:
        await redis.aclose()
        await engine.dispose()


def main() -> int:
    return grpc_server.main("comment_svc", CommentSettings, run)


if __name__ == "__main__":
    sys.exit(main())
