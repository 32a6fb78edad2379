"""The storefront and admin pages: a Starlette app rendering Jinja2 templates.

Every piece of data comes from the edge's REST API (web/edge_client.py); the
session is in cookies (web/session.py).  The pages live by concept: the catalog
(web/catalog.py), purchases (web/orders.py), accounts and notifications
(web/accounts.py) and the admin pages (web/admin.py).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlencode

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from web import accounts, admin, catalog, orders
from web.edge_client import Edge, ProblemError
from web.pages import HERE, redirect, render
from web.settings import WebSettings

log = logging.getLogger("shop.web")

# Pages are never framed by another site (their forms carry CSRF tokens) and are sent as what they are.
SECURITY_HEADERS = [
    (b"x-frame-options", b"DENY"),
    (b"content-security-policy", b"frame-ancestors 'none'"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
]


class SecurityHeaders:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *SECURITY_HEADERS]
            await send(message)

        await self.app(scope, receive, sending)


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def on_problem(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ProblemError)
    if exc.status == 401:
        back = request.url.path if request.method == "GET" else "/"
        return redirect(request, "/signin?" + urlencode({"next": back}))
    return await render(request, "error.html", status=exc.status if exc.status >= 400 else 500, problem=exc)


async def on_http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    detail = {404: "there is no such page", 405: "that is not something this page does"}.get(
        exc.status_code, str(exc.detail)
    )
    return await render(request, "error.html", status=exc.status_code, problem=ProblemError(exc.status_code, detail))


async def on_unexpected(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error", exc_info=exc)
    return HTMLResponse(
        "<!doctype html><title>Something went wrong</title><p>Something went wrong on our side. "
        '<a href="/">Back to the shop</a></p>',
        status_code=500,
    )


def create_app(settings: WebSettings | None = None) -> Starlette:
    settings = settings or WebSettings()

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        app.state.settings = settings
        app.state.edge = Edge(settings.edge_base_url, settings.edge_timeout)
        try:
            yield
        finally:
            await app.state.edge.close()

    post = ["POST"]
    routes = [
        Route("/", catalog.home),
        Route("/healthz", healthz),
        Route("/catalog", catalog.catalog),
        Route("/products/{product_id}", catalog.product),
        Route("/products/{product_id}/reviews", catalog.post_comment, methods=post),
        Route("/comments/{comment_id}/like", catalog.like, methods=post),
        Route("/cart", orders.cart_page),
        Route("/cart/items", orders.cart_add, methods=post),
        Route("/cart/remove", orders.cart_remove, methods=post),
        Route("/checkout", orders.checkout, methods=["GET", "POST"]),
        Route("/orders", orders.orders),
        Route("/orders/{order_id}", orders.order),
        Route("/orders/{order_id}/pay", orders.order_pay, methods=post),
        Route("/orders/{order_id}/cancel", orders.order_cancel, methods=post),
        Route("/signup", accounts.signup, methods=["GET", "POST"]),
        Route("/signin", accounts.signin, methods=["GET", "POST"]),
        Route("/signout", accounts.signout, methods=post),
        Route("/notifications", accounts.notifications),
        Route("/notifications/read-all", accounts.notifications_read, methods=post),
        Route("/notifications/stream", accounts.notification_stream),
        Route("/admin", admin.admin_page),
        Route("/admin/categories", admin.create_category, methods=post),
        Route("/admin/announcements", admin.publish_announcement, methods=post),
        Route("/admin/products", admin.products),
        Route("/admin/products", admin.create_product, methods=post),
        Route("/admin/products/{product_id}", admin.edit_product),
        Route("/admin/products/{product_id}", admin.save_product, methods=post),
        Route("/admin/products/{product_id}/stock", admin.set_stock, methods=post),
        Route("/admin/products/{product_id}/status", admin.set_status, methods=post),
        Route("/admin/products/{product_id}/images", admin.add_image, methods=post),
        Route("/admin/products/{product_id}/images/{image_id}/delete", admin.delete_image, methods=post),
        Route("/admin/orders/{order_id}/ship", admin.ship, methods=post),
        Route("/admin/orders/{order_id}/deliver", admin.deliver, methods=post),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]
    handlers: dict[Any, Callable[[Request, Exception], Awaitable[Response]]] = {
        ProblemError: on_problem,
        HTTPException: on_http_exception,
        Exception: on_unexpected,
    }
    app = Starlette(routes=routes, exception_handlers=handlers, lifespan=lifespan)
    app.add_middleware(SecurityHeaders)
    return app
