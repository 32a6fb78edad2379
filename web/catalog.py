"""The shopper's catalog: the home page, the catalog (search, category tree,
price filter, sort, keyset "next page") and the product page with its reviews
and threads (write, like and reply when signed in)."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, urlencode

from starlette.requests import Request
from starlette.responses import Response

from web.categories import category_tree
from web.edge_client import ProblemError
from web.pages import flash, minor_units, redirect, render, status_of, text
from web.session import api, form_of, session_of

SORTS = {
    "newest": "Newest",
    "price_asc": "Price: low to high",
    "price_desc": "Price: high to low",
    "name_asc": "Name: A to Z",
}
PAGE_SIZE = 12
FILTERS = ("q", "category_id", "min_price", "max_price", "currency", "sort")


async def home(request: Request) -> Response:
    page = await api(request, "GET", "/api/v1/products", auth=False, params={"page_size": 8, "sort": "newest"})
    return await render(request, "home.html", products=page["items"])


def page_size(value: str) -> int:
    try:
        return min(max(int(value), 1), 48)
    except ValueError:
        return PAGE_SIZE


async def catalog(request: Request) -> Response:
    query = request.query_params
    values = {key: query.get(key, "").strip() for key in FILTERS}
    size = page_size(query.get("page_size", str(PAGE_SIZE)))
    params: dict[str, Any] = {"page_size": size, "sort": values["sort"] if values["sort"] in SORTS else "newest"}
    for key in ("q", "category_id"):
        if values[key]:
            params[key] = values[key]
    problem: ProblemError | None = None
    page: dict[str, Any] = {"items": [], "next_page_token": ""}
    try:
        for key in ("min_price", "max_price"):
            if values[key]:
                params[key] = minor_units(values[key], key)
                params["currency"] = values["currency"] or "EUR"
        if query.get("page_token"):
            params["page_token"] = query["page_token"]
        page = await api(request, "GET", "/api/v1/products", auth=False, params=params)
    except ProblemError as exc:
        if exc.status >= 500:
            raise
        problem = exc
    kept = {k: v for k, v in values.items() if v}
    if size != PAGE_SIZE:
        kept["page_size"] = str(size)
    next_url = ""
    if page["next_page_token"]:
        next_url = "/catalog?" + urlencode({**kept, "page_token": page["next_page_token"]})
    tree = await category_tree(request)
    return await render(
        request, "catalog.html", status=status_of(problem), products=page["items"], tree=tree,
        trail=tree.path(values["category_id"]), values=values, sorts=SORTS, next_url=next_url, problem=problem,
        kept={k: v for k, v in kept.items() if k != "category_id"},
    )  # fmt: skip


# --- the product page -------------------------------------------------------------------------------------


def product_url(product_id: str, thread: str = "", anchor: str = "") -> str:
    url = f"/products/{quote(product_id, safe='')}"
    if thread:
        url += "?" + urlencode({"thread": thread})
    return url + (f"#{anchor}" if anchor else "")


async def product_page(
    request: Request, product_id: str, *, problem: ProblemError | None = None, values: dict[str, str] | None = None
) -> Response:
    item = await api(request, "GET", f"/api/v1/products/{quote(product_id, safe='')}", auth=False)
    thread_id = request.query_params.get("thread", "") or (values or {}).get("thread", "")
    thread: dict[str, Any] | None = None
    comments: list[dict[str, Any]] = []
    next_comments = ""
    path = f"/api/v1/products/{quote(product_id, safe='')}/comments"
    try:
        if thread_id:
            thread = await api(request, "GET", f"/api/v1/comments/{quote(thread_id, safe='')}")
            if thread["product_id"] != item["id"]:
                raise ProblemError(404, "that conversation belongs to another product")
            page = await api(request, "GET", path, params={"parent_id": thread_id, "page_size": 50})
        else:
            params = {"page_size": 20, "reply_limit": 5, "sort": request.query_params.get("sort", "newest")}
            if request.query_params.get("comments_page"):
                params["page_token"] = request.query_params["comments_page"]
            page = await api(request, "GET", path, params=params)
            if page["next_page_token"]:
                next_comments = product_url(product_id) + "?" + urlencode({"comments_page": page["next_page_token"]})
        comments = page["items"]
    except ProblemError as exc:
        if exc.status == 401:
            raise
        problem = problem or exc
    tree = await category_tree(request)
    return await render(
        request, "product.html", status=status_of(problem), product=item, comments=comments, thread=thread,
        trail=tree.path(item["category_id"]), next_comments=next_comments, problem=problem, values=values or {},
    )  # fmt: skip


async def product(request: Request) -> Response:
    return await product_page(request, request.path_params["product_id"])


async def post_comment(request: Request) -> Response:
    """A review (with an optional rating) or, with ``parent_id``, a reply."""
    form = await form_of(request)
    product_id = request.path_params["product_id"]
    parent_id, thread = text(form, "parent_id"), text(form, "thread")
    if not session_of(request).access:
        raise ProblemError(401, "please sign in to write")
    body: dict[str, Any] = {"body": text(form, "body")}
    if parent_id:
        body["parent_id"] = parent_id
    elif text(form, "rating").isdigit():
        body["rating"] = int(text(form, "rating"))
    try:
        made = await api(request, "POST", f"/api/v1/products/{quote(product_id, safe='')}/comments", json=body)
    except ProblemError as exc:
        if exc.status == 401 or exc.status >= 500:
            raise
        values = {"form": parent_id or "review", "body": body["body"], "rating": text(form, "rating"), "thread": thread}
        return await product_page(request, product_id, problem=exc, values=values)
    flash(request, "Your reply is posted" if parent_id else "Your review is posted")
    return redirect(request, product_url(product_id, thread, f"c-{made['id']}"))


async def like(request: Request) -> Response:
    """Like a comment, or take the like back (``liked`` says which the page showed)."""
    form = await form_of(request)
    comment_id = request.path_params["comment_id"]
    method = "DELETE" if text(form, "liked") == "true" else "PUT"
    try:
        await api(request, method, f"/api/v1/comments/{quote(comment_id, safe='')}/like")
    except ProblemError as exc:
        if exc.status == 401 or exc.status >= 500:
            raise
        flash(request, exc.detail, "error")
    return redirect(request, product_url(text(form, "product_id"), text(form, "thread"), f"c-{comment_id}"))
