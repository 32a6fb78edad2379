"""The admin pages (admin role): categories, products (create, edit, archive,
images, stock), orders (ship, deliver) and announcements.  A refused form is
shown again with the edge's messages next to its fields."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, urlencode

from starlette.datastructures import FormData, UploadFile
from starlette.requests import Request
from starlette.responses import Response

from web.categories import category_tree
from web.edge_client import ProblemError
from web.pages import decimal_text, flash, minor_units, redirect, render, status_of, text, whole_number
from web.session import api, form_of, require_admin

PRODUCT_FIELDS = ("name", "description", "category_id", "price", "currency", "stock", "weight_grams")


def refused(exc: ProblemError) -> ProblemError:
    """A problem to show beside a form; sign-in and server failures go to their own pages."""
    if exc.status == 401 or exc.status >= 500:
        raise exc
    return exc


# --- the dashboard: orders, new category, new product, announcement ----------------------------------------


async def dashboard(
    request: Request, problem: ProblemError | None = None, form: str = "", values: dict[str, str] | None = None
) -> Response:
    await require_admin(request)
    paid = await api(request, "GET", "/api/v1/admin/orders", params={"status": "paid", "page_size": 50})
    shipped = await api(request, "GET", "/api/v1/admin/orders", params={"status": "shipped", "page_size": 50})
    return await render(
        request, "admin.html", status=status_of(problem), tree=await category_tree(request), orders=paid["items"],
        shipped=shipped["items"], problem=problem, form=form, values=values or {},
    )  # fmt: skip


async def admin_page(request: Request) -> Response:
    return await dashboard(request)


async def create_category(request: Request) -> Response:
    await require_admin(request)
    form = await form_of(request)
    values = {key: text(form, key) for key in ("name", "slug", "parent_id")}
    body: dict[str, Any] = {"name": values["name"], "slug": values["slug"]}
    if values["parent_id"]:
        body["parent_id"] = values["parent_id"]
    try:
        await api(request, "POST", "/api/v1/categories", json=body)
    except ProblemError as exc:
        return await dashboard(request, refused(exc), "category", values)
    flash(request, f"Category {values['name']} created")
    return redirect(request, "/admin")


def product_values(form: FormData) -> dict[str, str]:
    return {key: text(form, key) for key in PRODUCT_FIELDS}


def product_body(values: dict[str, str]) -> dict[str, Any]:
    """The JSON of a product form (a number that is not one is the field's problem)."""
    return {
        "name": values["name"],
        "description": values["description"],
        "category_id": values["category_id"],
        "price": {
            "amount_minor": minor_units(values["price"] or "0", "price"),
            "currency": values["currency"] or "EUR",
        },
        "weight_grams": whole_number(values["weight_grams"] or "0", "weight_grams"),
    }


async def upload_image(request: Request, product_id: str, image: Any) -> None:
    if isinstance(image, UploadFile) and image.filename:
        data = await image.read()
        await api(
            request, "POST", f"/api/v1/products/{quote(product_id, safe='')}/images",
            files={"file": (image.filename, data, image.content_type or "application/octet-stream")},
        )  # fmt: skip


async def create_product(request: Request) -> Response:
    await require_admin(request)
    form = await form_of(request)
    values = product_values(form)
    try:
        body = {**product_body(values), "stock": whole_number(values["stock"] or "0", "stock")}
        created = await api(request, "POST", "/api/v1/products", json=body)
    except ProblemError as exc:
        return await dashboard(request, refused(exc), "product", values)
    try:
        await upload_image(request, created["id"], form.get("image"))
    except ProblemError as exc:
        flash(request, f"The product is saved, but not its image: {refused(exc).detail}", "error")
        return redirect(request, f"/admin/products/{created['id']}")
    return redirect(request, f"/products/{created['id']}")


async def publish_announcement(request: Request) -> Response:
    await require_admin(request)
    form = await form_of(request)
    values = {key: text(form, key) for key in ("title", "body")}
    try:
        await api(request, "POST", "/api/v1/admin/announcements", json=values)
    except ProblemError as exc:
        return await dashboard(request, refused(exc), "announcement", values)
    flash(request, f"Announcement “{values['title']}” published")
    return redirect(request, "/admin")


async def ship(request: Request) -> Response:
    await require_admin(request)
    form = await form_of(request)
    order_id = request.path_params["order_id"]
    body = {"carrier": text(form, "carrier"), "tracking_number": text(form, "tracking_number")}
    try:
        await api(request, "POST", f"/api/v1/orders/{quote(order_id, safe='')}/ship", json=body)
    except ProblemError as exc:
        return await dashboard(request, refused(exc), f"ship:{order_id}", body)
    flash(request, f"Order {order_id} shipped")
    return redirect(request, "/admin")


async def deliver(request: Request) -> Response:
    await require_admin(request)
    await form_of(request)
    order_id = request.path_params["order_id"]
    try:
        await api(request, "POST", f"/api/v1/orders/{quote(order_id, safe='')}/deliver", json={})
    except ProblemError as exc:
        return await dashboard(request, refused(exc), f"deliver:{order_id}")
    flash(request, f"Order {order_id} delivered")
    return redirect(request, "/admin")


# --- products: the list (archived ones too) and the edit page -----------------------------------------------


async def products(request: Request) -> Response:
    await require_admin(request)
    query = request.query_params
    params: dict[str, Any] = {"page_size": 25, "sort": "newest", "include_archived": "true"}
    if query.get("q", "").strip():
        params["q"] = query["q"].strip()
    if query.get("page_token"):
        params["page_token"] = query["page_token"]
    problem: ProblemError | None = None
    page: dict[str, Any] = {"items": [], "next_page_token": ""}
    try:
        page = await api(request, "GET", "/api/v1/products", params=params)
    except ProblemError as exc:
        problem = refused(exc)
    next_url = ""
    if page["next_page_token"]:
        next_url = "/admin/products?" + urlencode({"q": params.get("q", ""), "page_token": page["next_page_token"]})
    tree = await category_tree(request)
    return await render(
        request, "admin_products.html", status=status_of(problem), products=page["items"], tree=tree,
        q=params.get("q", ""), next_url=next_url, problem=problem,
    )  # fmt: skip


async def edit_page(
    request: Request, problem: ProblemError | None = None, form: str = "", values: dict[str, str] | None = None
) -> Response:
    await require_admin(request)
    product_id = request.path_params["product_id"]
    item = await api(request, "GET", f"/api/v1/products/{quote(product_id, safe='')}")
    shown = {
        "name": item["name"], "description": item["description"], "category_id": item["category_id"],
        "price": decimal_text(item["price"]), "currency": item["price"]["currency"], "stock": str(item["stock"]),
        "weight_grams": str(item["weight_grams"]),
    }  # fmt: skip
    return await render(
        request, "admin_product.html", status=status_of(problem), product=item, tree=await category_tree(request),
        problem=problem, form=form, values={**shown, **(values or {})},
    )  # fmt: skip


async def edit_product(request: Request) -> Response:
    return await edit_page(request)


async def patch(request: Request, body: dict[str, Any]) -> dict[str, Any]:
    product_id = quote(request.path_params["product_id"], safe="")
    changed: dict[str, Any] = await api(request, "PATCH", f"/api/v1/products/{product_id}", json=body)
    return changed


async def save_product(request: Request) -> Response:
    await require_admin(request)
    values = product_values(await form_of(request))
    try:
        await patch(request, product_body(values))
    except ProblemError as exc:
        return await edit_page(request, refused(exc), "details", values)
    flash(request, f"{values['name']} saved")
    return redirect(request, request.url.path)


async def set_stock(request: Request) -> Response:
    await require_admin(request)
    values = {"stock": text(await form_of(request), "stock")}
    try:
        changed = await patch(request, {"stock": whole_number(values["stock"], "stock")})
    except ProblemError as exc:
        return await edit_page(request, refused(exc), "stock", values)
    flash(request, f"Stock set to {changed['stock']}")
    return redirect(request, request.url.path.removesuffix("/stock"))


async def set_status(request: Request) -> Response:
    """Archive (hidden from the catalog, not sellable) or restore a product."""
    await require_admin(request)
    status = "archived" if text(await form_of(request), "status") == "archived" else "active"
    try:
        changed = await patch(request, {"status": status})
    except ProblemError as exc:
        return await edit_page(request, refused(exc), "status")
    flash(request, f"{changed['name']} is {'archived' if status == 'archived' else 'back in the catalog'}")
    return redirect(request, request.url.path.removesuffix("/status"))


async def add_image(request: Request) -> Response:
    await require_admin(request)
    form = await form_of(request)
    image = form.get("image")
    try:
        if not isinstance(image, UploadFile) or not image.filename:
            raise ProblemError(400, "choose an image to upload", {"image": ["choose a JPEG, PNG or WebP file"]})
        await upload_image(request, request.path_params["product_id"], image)
    except ProblemError as exc:
        return await edit_page(request, refused(exc), "images")
    flash(request, "Image added")
    return redirect(request, request.url.path.removesuffix("/images"))


async def delete_image(request: Request) -> Response:
    await require_admin(request)
    await form_of(request)
    product_id = quote(request.path_params["product_id"], safe="")
    image_id = quote(request.path_params["image_id"], safe="")
    try:
        await api(request, "DELETE", f"/api/v1/products/{product_id}/images/{image_id}")
    except ProblemError as exc:
        return await edit_page(request, refused(exc), "images")
    flash(request, "Image deleted")
    return redirect(request, f"/admin/products/{product_id}")
