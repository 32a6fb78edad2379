"""The shopper's purchases: the cart (a guest's kept by its token in a cookie,
merged into the user's at sign-in), checkout with address, shipping option and
the test payment tokens, order history and the order page (pay, cancel)."""

from __future__ import annotations

import uuid
from typing import Any
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import Response

from web.edge_client import ProblemError
from web.pages import flash, redirect, render, status_of, text
from web.session import CART, api, form_of, session_of

PAYMENT_TOKENS = {"tok_approve": "Test card (approved)", "tok_decline": "Test card (declined)"}


async def keep_cart_token(request: Request, cart: dict[str, Any]) -> None:
    session = session_of(request)
    if not session.access and cart.get("cart_token") and cart["cart_token"] != session.cart:
        session.cart = cart["cart_token"]
        session.set(CART, session.cart)


async def cart_page(request: Request, problem: ProblemError | None = None) -> Response:
    session = session_of(request)
    cart: dict[str, Any] = {"lines": [], "item_count": 0, "subtotal": None}
    if session.access or session.cart:
        try:
            cart = await api(request, "GET", "/api/v1/cart")
        except ProblemError as exc:
            if exc.status not in (401, 404):
                raise
    return await render(request, "cart.html", status=status_of(problem), cart=cart, problem=problem)


async def cart_add(request: Request) -> Response:
    form = await form_of(request)
    product_id = text(form, "product_id")
    try:
        quantity = int(text(form, "quantity") or "1")
    except ValueError:
        quantity = 0
    try:
        cart = await api(request, "POST", "/api/v1/cart/items", json={"product_id": product_id, "quantity": quantity})
    except ProblemError as problem:
        return await cart_page(request, problem)
    await keep_cart_token(request, cart)
    return redirect(request, "/cart")


async def cart_remove(request: Request) -> Response:
    form = await form_of(request)
    await api(request, "DELETE", f"/api/v1/cart/items/{quote(text(form, 'product_id'), safe='')}")
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
    problem: ProblemError | None = None
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
        except ProblemError as exc:
            problem = exc
        else:
            token = values.get("payment_method_token", "tok_approve")
            try:
                await api(
                    request, "POST", f"/api/v1/orders/{order['id']}/pay", json={"payment_method_token": token},
                    headers={"Idempotency-Key": f"pay-{order['id']}"},
                )  # fmt: skip
            except ProblemError as exc:
                flash(request, exc.detail, "error")
                return redirect(request, f"/orders/{order['id']}")
            return redirect(request, f"/orders/{order['id']}")
    cart = await api(request, "GET", "/api/v1/cart")
    options: list[dict[str, Any]] = []
    if cart["lines"]:
        options = (await api(request, "GET", "/api/v1/cart/shipping-options"))["options"]
    values.setdefault("idempotency_key", str(uuid.uuid4()))
    return await render(
        request, "checkout.html", status=status_of(problem), cart=cart, options=options, values=values,
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
    item = await api(request, "GET", f"/api/v1/orders/{quote(request.path_params['order_id'], safe='')}")
    return await render(request, "order.html", order=item, payment_tokens=PAYMENT_TOKENS)


async def order_pay(request: Request) -> Response:
    form = await form_of(request)
    order_id = quote(request.path_params["order_id"], safe="")
    try:
        await api(
            request, "POST", f"/api/v1/orders/{order_id}/pay",
            json={"payment_method_token": text(form, "payment_method_token")},
            headers={"Idempotency-Key": str(uuid.uuid4())},
        )  # fmt: skip
    except ProblemError as exc:
        flash(request, exc.detail, "error")
    return redirect(request, f"/orders/{order_id}")


async def order_cancel(request: Request) -> Response:
    await form_of(request)
    order_id = quote(request.path_params["order_id"], safe="")
    try:
        await api(request, "POST", f"/api/v1/orders/{order_id}/cancel", json={})
    except ProblemError as exc:
        flash(request, exc.detail, "error")
    return redirect(request, f"/orders/{order_id}")
