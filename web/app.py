"""The storefront and admin pages: Starlette routes rendering Jinja2 templates.

Every piece of data comes from the edge's REST API (web/client.py).  The session
lives in HttpOnly, SameSite=Lax cookies: the access and refresh tokens, the guest
cart token, and a CSRF token that every form sends back in a hidden field.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
from starlette.applications import Starlette
from starlette.datastructures import FormData, UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from web.client import Edge, Problem
from web.settings import WebSettings

HERE = Path(__file__).parent
ACCESS, REFRESH, CART, CSRF = "shop_access", "shop_refresh", "shop_cart", "shop_csrf"
CURRENCIES = ("EUR", "USD", "GBP")
SORTS = {
    "newest": "Newest",
    "price_asc": "Price: low to high",
    "price_desc": "Price: high to low",
    "name_asc": "Name: A to Z",
}
PAYMENT_TOKENS = {"tok_approve": "Test card (approved)", "tok_decline": "Test card (declined)"}

templates = Jinja2Templates(directory=HERE / "templates")


def money(value: dict[str, Any] | None) -> str:
    if not value:
        return ""
    amount = Decimal(int(value["amount_minor"])) / 100
    return f"{amount:,.2f} {value['currency']}"


templates.env.filters["money"] = money


def edge(request: Request) -> Edge:
    found: Edge = request.app.state.edge
    return found


# --- the session ----------------------------------------------------------------------------------


class Session:
    """The cookies of one request, and those to set or clear on its response."""

    def __init__(self, request: Request, secure: bool) -> None:
        self.request, self.secure = request, secure
        self.access = request.cookies.get(ACCESS, "")
        self.refresh = request.cookies.get(REFRESH, "")
        self.cart = request.cookies.get(CART, "")
        self.csrf = request.cookies.get(CSRF, "") or secrets.token_urlsafe(24)
        self.changes: dict[str, str] = {} if request.cookies.get(CSRF) else {CSRF: self.csrf}
        self.user: dict[str, Any] | None = None

    def set(self, name: str, value: str) -> None:
        self.changes[name] = value

    def signed_in(self, session: dict[str, Any]) -> None:
        self.access = session["tokens"]["access_token"]
        self.refresh = session["tokens"]["refresh_token"]
        self.set(ACCESS, self.access)
        self.set(REFRESH, self.refresh)
        self.user = session["user"]

    def signed_out(self) -> None:
        self.access = self.refresh = ""
        self.user = None
        self.set(ACCESS, "")
        self.set(REFRESH, "")

    def apply(self, response: Response) -> Response:
        for name, value in self.changes.items():
            if value:
                response.set_cookie(
                    name, value, max_age=30 * 24 * 3600, httponly=True, samesite="lax", secure=self.secure, path="/"
                )
            else:
                response.delete_cookie(name, httponly=True, samesite="lax", secure=self.secure, path="/")
        return response


def session_of(request: Request) -> Session:
    found = request.scope.get("shop_session")
    if found is None:
        found = Session(request, request.app.state.settings.cookie_secure)
        request.scope["shop_session"] = found
    assert isinstance(found, Session)
    return found


async def api(request: Request, method: str, path: str, *, auth: bool = True, **kwargs: Any) -> Any:
    """A call to the edge as the signed-in user (or the guest); an expired access
    token is refreshed once with the refresh token."""
    session = session_of(request)
    client = edge(request)
    if not auth or not session.access:
        return await client.call(method, path, cart_token="" if session.access else session.cart, **kwargs)
    try:
        return await client.call(method, path, token=session.access, **kwargs)
    except Problem as problem:
        if problem.status != 401 or not session.refresh:
            raise
    try:
        tokens = await client.call("POST", "/api/v1/auth/refresh", json={"refresh_token": session.refresh})
    except Problem:
        session.signed_out()
        raise Problem(401, "your session has ended; please sign in again") from None
    session.access, session.refresh = tokens["access_token"], tokens["refresh_token"]
    session.set(ACCESS, session.access)
    session.set(REFRESH, session.refresh)
    return await client.call(method, path, token=session.access, **kwargs)


async def current_user(request: Request) -> dict[str, Any] | None:
    session = session_of(request)
    if session.user is None and session.access:
        try:
            session.user = await api(request, "GET", "/api/v1/users/me")
        except Problem:
            session.user = None
    return session.user


async def form_of(request: Request) -> FormData:
    """The posted form, after its CSRF token matched the session's."""
    form = await request.form()
    sent = form.get("csrf")
    cookie = request.cookies.get(CSRF, "")
    # Compared as bytes: compare_digest refuses str with non-ASCII characters (a forged form's).
    if not cookie or not isinstance(sent, str) or not secrets.compare_digest(sent.encode(), cookie.encode()):
        raise HTTPException(403, "this form has expired; reload the page and try again")
    return form


def text(form: FormData, name: str) -> str:
    value = form.get(name)
    return value.strip() if isinstance(value, str) else ""


# The edge takes amounts up to 10**15 minor units.
MAX_AMOUNT = Decimal(10**13)


def minor_units(value: str, field: str) -> int:
    try:
        amount = Decimal(value.replace(",", "."))
    except InvalidOperation:
        raise Problem(400, "please check the highlighted fields", {field: ["must be a number, e.g. 19.99"]}) from None
    if not amount.is_finite():  # NaN, Infinity
        raise Problem(400, "please check the highlighted fields", {field: ["must be a number, e.g. 19.99"]})
    if amount < 0:
        raise Problem(400, "please check the highlighted fields", {field: ["must not be negative"]})
    if amount > MAX_AMOUNT:
        raise Problem(400, "please check the highlighted fields", {field: [f"must be at most {MAX_AMOUNT}"]})
    return int((amount * 100).to_integral_value())


async def render(request: Request, template: str, status: int = 200, **context: Any) -> Response:
    session = session_of(request)
    user = await current_user(request)
    unread = 0
    if user is not None:
        try:
            unread = int((await api(request, "GET", "/api/v1/notifications/unread-count")).get("count", 0))
        except Problem:
            unread = 0
    context.setdefault("problem", None)
    context.setdefault("values", {})
    response = templates.TemplateResponse(
        request,
        template,
        {"user": user, "csrf": session.csrf, "unread": unread, "currencies": CURRENCIES, **context},
        status_code=status,
    )
    return session.apply(response)


def redirect(request: Request, url: str) -> Response:
    return session_of(request).apply(RedirectResponse(url, status_code=303))


def field_errors(problem: Problem | None, name: str) -> list[str]:
    """The messages of a field and of the fields inside it (price -> price.amount_minor)."""
    if problem is None:
        return []
    return [
        message
        for key, messages in problem.errors.items()
        if key == name or key.startswith(name + ".")
        for message in messages
    ]


templates.env.globals["field_errors"] = field_errors


# --- shopper pages --------------------------------------------------------------------------------


async def home(request: Request) -> Response:
    page = await api(request, "GET", "/api/v1/products", auth=False, params={"page_size": 8, "sort": "newest"})
    return await render(request, "home.html", products=page["items"])


async def categories(request: Request) -> list[dict[str, Any]]:
    page = await api(request, "GET", "/api/v1/categories", auth=False, params={"page_size": 100})
    items: list[dict[str, Any]] = page["items"]
    return items


async def catalog(request: Request) -> Response:
    query = request.query_params
    values = {key: query.get(key, "") for key in ("q", "category_id", "min_price", "max_price", "currency", "sort")}
    try:
        size = min(max(int(query.get("page_size", "12")), 1), 48)
    except ValueError:
        size = 12
    params: dict[str, Any] = {"page_size": size, "sort": values["sort"] or "newest"}
    for key in ("q", "category_id"):
        if values[key]:
            params[key] = values[key]
    problem: Problem | None = None
    page: dict[str, Any] = {"items": [], "next_page_token": ""}
    try:
        for key in ("min_price", "max_price"):
            if values[key]:
                params[key] = minor_units(values[key], key)
                params["currency"] = values["currency"] or "EUR"
        if query.get("page_token"):
            params["page_token"] = query["page_token"]
        page = await api(request, "GET", "/api/v1/products", auth=False, params=params)
    except Problem as exc:
        problem = exc
    next_url = ""
    if page["next_page_token"]:
        kept = {k: v for k, v in values.items() if v}
        if size != 12:
            kept["page_size"] = str(size)
        next_url = "/catalog?" + urlencode({**kept, "page_token": page["next_page_token"]})
    return await render(
        request, "catalog.html", products=page["items"], categories=await categories(request), values=values,
        sorts=SORTS, next_url=next_url, problem=problem,
    )  # fmt: skip


async def product(request: Request) -> Response:
    product_id = request.path_params["product_id"]
    item = await api(request, "GET", f"/api/v1/products/{product_id}", auth=False)
    try:
        comments = (await api(request, "GET", f"/api/v1/products/{product_id}/comments", auth=False))["items"]
    except Problem:
        comments = []
    return await render(request, "product.html", product=item, comments=comments)


async def review(request: Request) -> Response:
    form = await form_of(request)
    product_id = request.path_params["product_id"]
    body: dict[str, Any] = {"body": text(form, "body")}
    if text(form, "rating").isdigit():
        body["rating"] = int(text(form, "rating"))
    try:
        await api(request, "POST", f"/api/v1/products/{product_id}/comments", json=body)
    except Problem as exc:
        if exc.status == 401:
            raise
        return redirect(request, f"/products/{product_id}?" + urlencode({"error": exc.detail}))
    return redirect(request, f"/products/{product_id}")


async def keep_cart_token(request: Request, cart: dict[str, Any]) -> None:
    session = session_of(request)
    if not session.access and cart.get("cart_token") and cart["cart_token"] != session.cart:
        session.cart = cart["cart_token"]
        session.set(CART, session.cart)


async def cart_page(request: Request, problem: Problem | None = None) -> Response:
    session = session_of(request)
    cart: dict[str, Any] = {"lines": [], "item_count": 0, "subtotal": None}
    if session.access or session.cart:
        try:
            cart = await api(request, "GET", "/api/v1/cart")
        except Problem as exc:
            if exc.status not in (401, 404):
                raise
    return await render(request, "cart.html", cart=cart, problem=problem)


async def cart_add(request: Request) -> Response:
    form = await form_of(request)
    product_id = text(form, "product_id")
    try:
        quantity = int(text(form, "quantity") or "1")
    except ValueError:
        quantity = 0
    try:
        cart = await api(request, "POST", "/api/v1/cart/items", json={"product_id": product_id, "quantity": quantity})
    except Problem as problem:
        return await cart_page(request, problem)
    await keep_cart_token(request, cart)
    return redirect(request, "/cart")


async def cart_remove(request: Request) -> Response:
    form = await form_of(request)
    await api(request, "DELETE", f"/api/v1/cart/items/{text(form, 'product_id')}")
    return redirect(request, "/cart")


ADDRESS_FIELDS = {
    "recipient_name": "Full name",
    "line1": "Street and number",
    "city": "City",
    "postal_code": "Postal code",
    "country_code": "Country code (e.g. DE)",
}


async def checkout(request: Request) -> Response:
    session = session_of(request)
    if not session.access:
        return redirect(request, "/signin?next=/checkout")
    problem: Problem | None = None
    values: dict[str, str] = {"shipping_method": "standard", "payment_method_token": "tok_approve"}
    if request.method == "POST":
        form = await form_of(request)
        values = {key: text(form, key) for key in form if key != "csrf"}
        address = {name: values.get(f"shipping_address.{name}", "") for name in ADDRESS_FIELDS}
        try:
            order = await api(
                request, "POST", "/api/v1/cart/checkout",
                json={"shipping_method": values.get("shipping_method", "standard"), "shipping_address": address},
                headers={"Idempotency-Key": values.get("idempotency_key") or str(uuid.uuid4())},
            )  # fmt: skip
        except Problem as exc:
            problem = exc
        else:
            token = values.get("payment_method_token", "tok_approve")
            try:
                await api(
                    request, "POST", f"/api/v1/orders/{order['id']}/pay", json={"payment_method_token": token},
                    headers={"Idempotency-Key": f"pay-{order['id']}"},
                )  # fmt: skip
            except Problem as exc:
                return redirect(request, f"/orders/{order['id']}?" + urlencode({"error": exc.detail}))
            return redirect(request, f"/orders/{order['id']}")
    cart = await api(request, "GET", "/api/v1/cart")
    options: list[dict[str, Any]] = []
    if cart["lines"]:
        options = (await api(request, "GET", "/api/v1/cart/shipping-options"))["options"]
    values.setdefault("idempotency_key", str(uuid.uuid4()))
    return await render(
        request, "checkout.html", status=400 if problem else 200, cart=cart, options=options, values=values,
        problem=problem, address_fields=ADDRESS_FIELDS, payment_tokens=PAYMENT_TOKENS,
    )  # fmt: skip


async def orders(request: Request) -> Response:
    if not session_of(request).access:
        return redirect(request, "/signin?next=/orders")
    page = await api(request, "GET", "/api/v1/orders", params={"page_size": 50})
    return await render(request, "orders.html", orders=page["items"])


async def order(request: Request) -> Response:
    if not session_of(request).access:
        return redirect(request, "/signin")
    item = await api(request, "GET", f"/api/v1/orders/{request.path_params['order_id']}")
    error = request.query_params.get("error", "")
    return await render(
        request, "order.html", order=item, problem=Problem(402, error) if error else None,
        payment_tokens=PAYMENT_TOKENS,
    )  # fmt: skip


async def order_pay(request: Request) -> Response:
    form = await form_of(request)
    order_id = request.path_params["order_id"]
    try:
        await api(
            request, "POST", f"/api/v1/orders/{order_id}/pay",
            json={"payment_method_token": text(form, "payment_method_token")},
            headers={"Idempotency-Key": str(uuid.uuid4())},
        )  # fmt: skip
    except Problem as exc:
        return redirect(request, f"/orders/{order_id}?" + urlencode({"error": exc.detail}))
    return redirect(request, f"/orders/{order_id}")


async def order_cancel(request: Request) -> Response:
    await form_of(request)
    order_id = request.path_params["order_id"]
    try:
        await api(request, "POST", f"/api/v1/orders/{order_id}/cancel", json={})
    except Problem as exc:
        return redirect(request, f"/orders/{order_id}?" + urlencode({"error": exc.detail}))
    return redirect(request, f"/orders/{order_id}")


# --- accounts -------------------------------------------------------------------------------------


def safe_next(value: str) -> str:
    return value if value.startswith("/") and not value.startswith(("//", "/\\")) else "/"


async def sign_in_with(request: Request, email: str, password: str) -> dict[str, Any]:
    """Sign in, handing the guest cart over (the edge merges it into the user's cart)."""
    session = session_of(request)
    headers = {"X-Cart-Token": session.cart} if session.cart else {}
    reply: dict[str, Any] = await edge(request).call(
        "POST", "/api/v1/auth/login", json={"email": email, "password": password}, headers=headers
    )
    session.signed_in(reply)
    if session.cart:
        session.cart = ""
        session.set(CART, "")
    return reply


async def signup(request: Request) -> Response:
    problem: Problem | None = None
    values: dict[str, str] = {}
    if request.method == "POST":
        form = await form_of(request)
        values = {key: text(form, key) for key in ("email", "display_name")}
        password = form.get("password")
        password = password if isinstance(password, str) else ""
        try:
            await edge(request).call("POST", "/api/v1/auth/register", json={**values, "password": password})
            # Registering signs in but does not take a guest cart along; signing in does.
            await sign_in_with(request, values["email"], password)
        except Problem as exc:
            problem = exc
        else:
            return redirect(request, safe_next(request.query_params.get("next", "/")))
    return await render(request, "signup.html", status=400 if problem else 200, problem=problem, values=values)


async def signin(request: Request) -> Response:
    problem: Problem | None = None
    values: dict[str, str] = {}
    if request.method == "POST":
        form = await form_of(request)
        values = {"email": text(form, "email")}
        password = form.get("password")
        try:
            await sign_in_with(request, values["email"], password if isinstance(password, str) else "")
        except Problem as exc:
            problem = exc
        else:
            return redirect(request, safe_next(request.query_params.get("next", "/")))
    return await render(
        request, "signin.html", status=400 if problem else 200, problem=problem, values=values,
        next=safe_next(request.query_params.get("next", "/")),
    )  # fmt: skip


async def signout(request: Request) -> Response:
    await form_of(request)
    session = session_of(request)
    if session.refresh:
        with suppress(Problem):
            await edge(request).call("POST", "/api/v1/auth/logout", json={"refresh_token": session.refresh})
    session.signed_out()
    return redirect(request, "/")


# --- notifications --------------------------------------------------------------------------------


async def notifications(request: Request) -> Response:
    if not session_of(request).access:
        return redirect(request, "/signin?next=/notifications")
    page = await api(request, "GET", "/api/v1/notifications", params={"page_size": 50})
    return await render(request, "notifications.html", notifications=page["items"])


async def notification_stream(request: Request) -> Response:
    """The edge's live stream, same-origin: a single-use ticket for the signed-in
    user, then the events passed through as they come."""
    if not session_of(request).access:
        return session_of(request).apply(Response(status_code=401))
    ticket = (await api(request, "POST", "/api/v1/notifications/stream-tickets", json={}))["ticket"]
    client = edge(request).http
    headers = {}
    if request.headers.get("last-event-id"):
        headers["Last-Event-ID"] = request.headers["last-event-id"]
    upstream = await client.send(
        client.build_request("GET", "/api/v1/notifications/stream", params={"ticket": ticket}, headers=headers),
        stream=True,
    )
    if upstream.status_code != 200:
        await upstream.aclose()
        return Response(status_code=502)

    async def relay() -> AsyncIterator[bytes]:
        try:
            async for chunk in upstream.aiter_raw():
                yield chunk
        except httpx.HTTPError:
            return
        finally:
            await upstream.aclose()

    response = StreamingResponse(
        relay(), media_type="text/event-stream", headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    )
    return session_of(request).apply(response)


# --- admin ----------------------------------------------------------------------------------------


async def admin(request: Request, problem: Problem | None = None, values: dict[str, str] | None = None) -> Response:
    user = await current_user(request)
    if user is None:
        return redirect(request, "/signin?next=/admin")
    if user["role"] != "admin":
        raise HTTPException(403, "this page is for the shop's administrators")
    paid = await api(request, "GET", "/api/v1/admin/orders", params={"status": "paid", "page_size": 50})
    shipped = await api(request, "GET", "/api/v1/admin/orders", params={"status": "shipped", "page_size": 50})
    return await render(
        request, "admin.html", status=400 if problem else 200, categories=await categories(request),
        orders=paid["items"], shipped=shipped["items"], problem=problem, values=values or {},
        notice=request.query_params.get("notice", ""),
    )  # fmt: skip


async def admin_page(request: Request) -> Response:
    return await admin(request)


async def admin_category(request: Request) -> Response:
    form = await form_of(request)
    values = {key: text(form, key) for key in ("name", "slug")}
    try:
        await api(request, "POST", "/api/v1/categories", json=values)
    except Problem as exc:
        return await admin(request, exc, {f"category.{k}": v for k, v in values.items()})
    return redirect(request, "/admin?" + urlencode({"notice": f"Category {values['name']} created"}))


async def admin_product(request: Request) -> Response:
    form = await form_of(request)
    values = {key: text(form, key) for key in ("name", "description", "category_id", "price", "currency", "stock")}
    try:
        stock = int(values["stock"] or "0")
    except ValueError:
        bad = Problem(400, "please check the highlighted fields", {"stock": ["must be a whole number"]})
        return await admin(request, bad, values)
    try:
        price = minor_units(values["price"] or "0", "price")
        created = await api(
            request, "POST", "/api/v1/products",
            json={"name": values["name"], "description": values["description"], "category_id": values["category_id"],
                  "price": {"amount_minor": price, "currency": values["currency"] or "EUR"}, "stock": stock},
        )  # fmt: skip
    except Problem as exc:
        return await admin(request, exc, values)
    image = form.get("image")
    if isinstance(image, UploadFile) and image.filename:
        data = await image.read()
        try:
            await api(
                request, "POST", f"/api/v1/products/{created['id']}/images",
                files={"file": (image.filename, data, image.content_type or "application/octet-stream")},
            )  # fmt: skip
        except Problem as exc:
            return redirect(request, f"/products/{created['id']}?" + urlencode({"error": exc.detail}))
    return redirect(request, f"/products/{created['id']}")


async def admin_ship(request: Request) -> Response:
    form = await form_of(request)
    order_id = request.path_params["order_id"]
    body = {"carrier": text(form, "carrier"), "tracking_number": text(form, "tracking_number")}
    try:
        await api(request, "POST", f"/api/v1/orders/{order_id}/ship", json=body)
    except Problem as exc:
        return await admin(request, exc, {f"ship.{k}": v for k, v in body.items()})
    return redirect(request, "/admin?" + urlencode({"notice": f"Order {order_id} shipped"}))


async def admin_deliver(request: Request) -> Response:
    await form_of(request)
    order_id = request.path_params["order_id"]
    try:
        await api(request, "POST", f"/api/v1/orders/{order_id}/deliver", json={})
    except Problem as exc:
        return await admin(request, exc)
    return redirect(request, "/admin?" + urlencode({"notice": f"Order {order_id} delivered"}))


# --- plumbing -------------------------------------------------------------------------------------


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def on_problem(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, Problem)
    if exc.status == 401:
        back = request.url.path if request.method == "GET" else "/"
        return redirect(request, "/signin?" + urlencode({"next": back}))
    return await render(request, "error.html", status=exc.status if exc.status >= 400 else 500, problem=exc)


async def on_http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    detail = {404: "there is no such page", 405: "that is not something this page does"}.get(
        exc.status_code, str(exc.detail)
    )
    return await render(request, "error.html", status=exc.status_code, problem=Problem(exc.status_code, detail))


async def on_unexpected(request: Request, exc: Exception) -> Response:
    return HTMLResponse(
        "<!doctype html><title>Something went wrong</title><p>Something went wrong on our side. "
        '<a href="/">Back to the shop</a></p>',
        status_code=500,
    )


Handler = Callable[[Request], Awaitable[Response]]


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

    routes = [
        Route("/", home),
        Route("/healthz", healthz),
        Route("/catalog", catalog),
        Route("/products/{product_id}", product),
        Route("/products/{product_id}/reviews", review, methods=["POST"]),
        Route("/cart", cart_page),
        Route("/cart/items", cart_add, methods=["POST"]),
        Route("/cart/remove", cart_remove, methods=["POST"]),
        Route("/checkout", checkout, methods=["GET", "POST"]),
        Route("/orders", orders),
        Route("/orders/{order_id}", order),
        Route("/orders/{order_id}/pay", order_pay, methods=["POST"]),
        Route("/orders/{order_id}/cancel", order_cancel, methods=["POST"]),
        Route("/signup", signup, methods=["GET", "POST"]),
        Route("/signin", signin, methods=["GET", "POST"]),
        Route("/signout", signout, methods=["POST"]),
        Route("/notifications", notifications),
        Route("/notifications/stream", notification_stream),
        Route("/admin", admin_page),
        Route("/admin/categories", admin_category, methods=["POST"]),
        Route("/admin/products", admin_product, methods=["POST"]),
        Route("/admin/orders/{order_id}/ship", admin_ship, methods=["POST"]),
        Route("/admin/orders/{order_id}/deliver", admin_deliver, methods=["POST"]),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]
    handlers: dict[Any, Callable[[Request, Exception], Awaitable[Response]]] = {
        Problem: on_problem,
        HTTPException: on_http_exception,
        Exception: on_unexpected,
    }
    return Starlette(routes=routes, exception_handlers=handlers, lifespan=lifespan)
