"""The edge application: routes, middleware, error handling, the clients of the services (edge/clients.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware

from common.telemetry import instrument_app
from edge.api import route
from edge.clients import Clients
from edge.middleware import RequestContext
from edge.openapi import openapi_document
from edge.problems import HANDLERS
from edge.ratings import RatingCache
from edge.routes import cart, comments, notifications, orders, payments, products, system, users
from edge.routes.comments import RatingSummary
from edge.settings import EdgeSettings

# Every route module of the edge; a new resource adds its module here.
ROUTE_MODULES = [system, users, products, orders, payments, cart, comments, notifications]
OPERATIONS = [operation for module in ROUTE_MODULES for operation in module.api.operations]
UPSTREAMS = sorted({name for module in ROUTE_MODULES for name in module.api.upstreams})


def create_app(settings: EdgeSettings | None = None) -> Starlette:
    settings = settings or EdgeSettings()
    clients = Clients(settings, UPSTREAMS)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await clients.open()
        try:
            yield
        finally:
            await clients.close()

    middleware = [Middleware(RequestContext)]
    if settings.cors_origins:
        middleware.append(
            Middleware(
                CORSMiddleware,
                allow_origins=settings.cors_origins,
                allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
                allow_headers=["Authorization", "Content-Type", "Idempotency-Key", "X-Request-ID", "X-Cart-Token"],
                expose_headers=["X-Request-ID", "X-Trace-Id", "Retry-After", "Location", "X-Cart-Token"],
                max_age=600,
            )
        )
    app = Starlette(
        routes=[route(operation) for operation in OPERATIONS],
        middleware=middleware,
        exception_handlers=HANDLERS,
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.clients = clients
    app.state.ratings = RatingCache[RatingSummary](settings.rating_cache_seconds)
    app.state.openapi = openapi_document(OPERATIONS, title="shop", version="1.0.0")
    instrument_app(app)
    return app
