"""Accounts and notifications: sign up, sign in (taking the guest cart along),
sign out; the notification list and the bell's live stream, relayed same-origin."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import suppress
from typing import Any

import httpx
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from web.edge_client import ProblemError
from web.pages import redirect, render, status_of, text
from web.session import CART, api, call, edge, form_of, safe_next, session_of


async def sign_in_with(request: Request, email: str, password: str) -> dict[str, Any]:
    """Sign in, handing the guest cart over (the edge merges it into the user's cart)."""
    session = session_of(request)
    headers = {"X-Cart-Token": session.cart} if session.cart else {}
    reply: dict[str, Any] = await call(
        request, "POST", "/api/v1/auth/login", json={"email": email, "password": password}, headers=headers
    )
    session.signed_in(reply)
    if session.cart:
        session.cart = ""
        session.set(CART, "")
    return reply


async def signup(request: Request) -> Response:
    problem: ProblemError | None = None
    values: dict[str, str] = {}
    if request.method == "POST":
        form = await form_of(request)
        values = {key: text(form, key) for key in ("email", "display_name")}
        password = form.get("password")
        password = password if isinstance(password, str) else ""
        try:
            await call(request, "POST", "/api/v1/auth/register", json={**values, "password": password})
            # Registering signs in but does not take a guest cart along; signing in does.
            await sign_in_with(request, values["email"], password)
        except ProblemError as exc:
            problem = exc
        else:
            return redirect(request, safe_next(request.query_params.get("next", "/")))
    return await render(request, "signup.html", status=status_of(problem), problem=problem, values=values)


async def signin(request: Request) -> Response:
    problem: ProblemError | None = None
    values: dict[str, str] = {}
    if request.method == "POST":
        form = await form_of(request)
        values = {"email": text(form, "email")}
        password = form.get("password")
        try:
            await sign_in_with(request, values["email"], password if isinstance(password, str) else "")
        except ProblemError as exc:
            problem = exc
        else:
            return redirect(request, safe_next(request.query_params.get("next", "/")))
    return await render(
        request, "signin.html", status=status_of(problem), problem=problem, values=values,
        next=safe_next(request.query_params.get("next", "/")),
    )  # fmt: skip


async def signout(request: Request) -> Response:
    await form_of(request)
    session = session_of(request)
    if session.refresh:
        with suppress(ProblemError):
            await call(request, "POST", "/api/v1/auth/logout", json={"refresh_token": session.refresh})
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
    headers = {"X-Forwarded-For": request.client.host} if request.client else {}
    if request.headers.get("last-event-id"):
        headers["Last-Event-ID"] = request.headers["last-event-id"]
    try:
        upstream = await client.send(
            client.build_request("GET", "/api/v1/notifications/stream", params={"ticket": ticket}, headers=headers),
            stream=True,
        )
    except httpx.HTTPError:
        return Response(status_code=502)  # shop.js opens the stream again a little later
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


async def notifications_read(request: Request) -> Response:
    await form_of(request)
    await api(request, "POST", "/api/v1/notifications/read-all", json={})
    return redirect(request, "/notifications")
