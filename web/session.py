"""The browser session: HttpOnly, SameSite=Lax cookies holding the access and
refresh tokens, the guest cart token and a CSRF token that every form sends back
in a hidden field; calls to the edge made as the session's user."""

from __future__ import annotations

import secrets
from typing import Any

from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from web.edge_client import Caller, Edge, ProblemError

ACCESS, REFRESH, CART, CSRF = "shop_access", "shop_refresh", "shop_cart", "shop_csrf"
COOKIE_AGE = 30 * 24 * 3600


def edge(request: Request) -> Edge:
    found: Edge = request.app.state.edge
    return found


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
                    name, value, max_age=COOKIE_AGE, httponly=True, samesite="lax", secure=self.secure, path="/"
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


async def call(
    request: Request, method: str, path: str, *, token: str = "", cart_token: str = "", **kwargs: Any
) -> Any:
    """A call to the edge on behalf of this request's browser, with no credentials
    but ``token`` or ``cart_token``; the edge hears the browser's address, not this process's."""
    forwarded_for = request.client.host if request.client else ""
    caller = Caller(token=token, cart_token=cart_token, forwarded_for=forwarded_for)
    return await edge(request).call(method, path, caller=caller, **kwargs)


async def api(request: Request, method: str, path: str, *, auth: bool = True, **kwargs: Any) -> Any:
    """A call to the edge as the signed-in user (or the guest); an expired access
    token is refreshed once with the refresh token."""
    session = session_of(request)
    if not auth or not session.access:
        return await call(request, method, path, cart_token="" if session.access else session.cart, **kwargs)
    try:
        return await call(request, method, path, token=session.access, **kwargs)
    except ProblemError as problem:
        if problem.status != 401 or not session.refresh:
            raise
    try:
        tokens = await call(request, "POST", "/api/v1/auth/refresh", json={"refresh_token": session.refresh})
    except ProblemError:
        session.signed_out()
        raise ProblemError(401, "your session has ended; please sign in again") from None
    session.access, session.refresh = tokens["access_token"], tokens["refresh_token"]
    session.set(ACCESS, session.access)
    session.set(REFRESH, session.refresh)
    return await call(request, method, path, token=session.access, **kwargs)


async def current_user(request: Request) -> dict[str, Any] | None:
    session = session_of(request)
    if session.user is None and session.access:
        try:
            session.user = await api(request, "GET", "/api/v1/users/me")
        except ProblemError:
            session.user = None
    return session.user


async def require_admin(request: Request) -> dict[str, Any]:
    """The signed-in admin; a guest is sent to sign in (401), anyone else refused (403)."""
    user = await current_user(request)
    if user is None:
        raise ProblemError(401, "please sign in")
    if user["role"] != "admin":
        raise HTTPException(403, "this page is for the shop's administrators")
    return user


async def form_of(request: Request) -> FormData:
    """The posted form, after its CSRF token matched the session's."""
    form = await request.form()
    sent = form.get("csrf")
    cookie = request.cookies.get(CSRF, "")
    # Compared as bytes: compare_digest refuses str with non-ASCII characters (a forged form's).
    if not cookie or not isinstance(sent, str) or not secrets.compare_digest(sent.encode(), cookie.encode()):
        raise HTTPException(403, "this form has expired; reload the page and try again")
    return form


def safe_next(value: str) -> str:
    """A local path to go back to after signing in (never another site)."""
    return value if value.startswith("/") and not value.startswith(("//", "/\\")) else "/"
