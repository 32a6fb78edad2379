"""product_svc: the catalog and stock reservations.

    python -m product_svc       serve gRPC on SHOP_PORT (default 8081)

At start: indexes are created (idempotent) and the image bucket is created when
missing.  A background sweep finishes or rolls back stock reservations that
crashed callers left half done.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import sys
from datetime import timedelta

from pymongo.errors import PyMongoError
from shop.product.v1 import product_pb2, product_pb2_grpc

from common import grpc_server
from common.clients import mongo_client
from common.errors import UnavailableError
from common.grpc_server import GrpcServer, serve
from common.settings import redact_url
from product_svc.catalog import Catalog, ImageLimits
from product_svc.images import ImageStorage
from product_svc.reservations import Reservations
from product_svc.server import ProductService
from product_svc.settings import ProductSettings
from product_svc.store import Store

log = logging.getLogger("shop.product")


# Every how many sweeps the stale-hold scan (a pass over every product) runs; also at start.
HOLD_SCAN_EVERY = 10


async def _recovery(reservations: Reservations, settings: ProductSettings) -> None:
    older_than = timedelta(seconds=settings.reservation_pending_timeout)
    for sweep in itertools.count():
        try:
            await reservations.recover(older_than, scan_holds=sweep % HOLD_SCAN_EVERY == 0)
        except Exception as exc:  # the next round tries again
            log.warning("the reservation recovery sweep failed", exc_info=exc)
        await asyncio.sleep(settings.recovery_interval)


async def run(settings: ProductSettings, *, stopping: asyncio.Event | None = None) -> int:
    client = mongo_client(settings.mongo_url)
    recovery: asyncio.Task[None] | None = None
    try:
        store = Store(client[settings.mongo_database])
        try:
            await store.ping()
            server_name = await store.server_name()
            await store.ensure_indexes()
        except (UnavailableError, PyMongoError) as exc:
            message = f"cannot prepare the catalog database at {redact_url(settings.mongo_url)}: {exc}"
            log.error(message)
            print(f"product_svc: {message}", file=sys.stderr, flush=True)
            return 1
        log.info("the catalog database is %s", server_name)
        images = ImageStorage(settings)
        try:
            await images.ensure_bucket()
        except UnavailableError:  # the catalog still serves; uploads retry the bucket
            log.warning("object storage is not reachable at start; image uploads fail until it is")

        limits = ImageLimits(max_bytes=settings.image_max_bytes, max_count=settings.image_max_count)
        reservations = Reservations(store)
        servicer = ProductService(
            catalog=Catalog(store=store, images=images, limits=limits),
            reservations=reservations,
            image_url=images.url,
        )
        server = GrpcServer(settings)
        server.add(
            product_pb2_grpc.add_ProductServiceServicer_to_server,
            servicer,
            product_pb2.DESCRIPTOR.services_by_name["ProductService"],
        )
        recovery = asyncio.create_task(_recovery(reservations, settings))
        await serve(server, stopping=stopping)
        return 0
    finally:
        if recovery is not None:
            recovery.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await recovery
        await client.close()


def main() -> int:
    return grpc_server.main("product_svc", ProductSettings, run)


if __name__ == "__main__":
    sys.exit(main())
