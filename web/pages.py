"""Rendering a page: the Jinja2 templates and their filters, the flash message
that survives one redirect, and reading a posted form's fields."""

from __future__ import annotations

import base64
import binascii
import json
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlencode

from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.templating import Jinja2Templates

from web.edge_client import ProblemError
from web.session import api, current_user, session_of

HERE = Path(__file__).parent
FLASH = "shop_flash"
CURRENCIES = ("EUR", "USD", "GBP")
CHECK_FIELDS = "please check the highlighted fields"

templates = Jinja2Templates(directory=HERE / "templates")


def money(value: dict[str, Any] | None) -> str:
    if not value:
        return ""
    amount = Decimal(int(value["amount_minor"])) / 100
    return f"{amount:,.2f} {value['currency']}"


def decimal_text(value: dict[str, Any] | None) -> str:
    """Minor units as the number a person types (2450 -> "24.50")."""
    return f"{Decimal(int(value['amount_minor'])) / 100:.2f}" if value else ""


def field_errors(problem: ProblemError | None, name: str) -> list[str]:
    """The messages of a field and of the fields inside it (price -> price.amount_minor)."""
    if problem is None:
        return []
    return [
        message
        for key, messages in problem.errors.items()
        if key == name or key.startswith(name + ".")
        for message in messages
    ]


def query(params: dict[str, str], **changes: str) -> str:
    """A query string: ``params`` with ``changes`` on top."""
    return urlencode({**params, **changes})


templates.env.filters["money"] = money
templates.env.filters["decimal"] = decimal_text
templates.env.globals["field_errors"] = field_errors
templates.env.globals["query"] = query


# --- flash: one message carried over a redirect, in a cookie read once ------------------------------------

Kind = Literal["notice", "error"]


def flash(request: Request, message: str, kind: Kind = "notice") -> None:
    raw = json.dumps({"kind": kind, "message": message[:500]}).encode()
    session_of(request).set(FLASH, base64.urlsafe_b64encode(raw).decode())


def take_flash(request: Request) -> dict[str, str] | None:
    raw = request.cookies.get(FLASH, "")
    if not raw:
        return None
    session_of(request).set(FLASH, "")
    try:
        found = json.loads(base64.urlsafe_b64decode(raw.encode()))
    except (ValueError, binascii.Error):
        return None
    if not isinstance(found, dict) or found.get("kind") not in ("notice", "error"):
        return None
    return {"kind": str(found["kind"]), "message": str(found.get("message", ""))}


# --- responses --------------------------------------------------------------------------------------------


async def render(request: Request, template: str, status: int = 200, **context: Any) -> Response:
    session = session_of(request)
    user = await current_user(request)
    unread = 0
    if user is not None:
        try:
            unread = int((await api(request, "GET", "/api/v1/notifications/unread-count")).get("unread_count", 0))
        except ProblemError:
            unread = 0
    context.setdefault("problem", None)
    context.setdefault("values", {})
    response = templates.TemplateResponse(
        request,
        template,
        {"user": user, "csrf": session.csrf, "unread": unread, "currencies": CURRENCIES,
         "flash": take_flash(request), **context},
        status_code=status,
    )  # fmt: skip
    return session.apply(response)


def redirect(request: Request, url: str) -> Response:
    return session_of(request).apply(RedirectResponse(url, status_code=303))


def status_of(problem: ProblemError | None) -> int:
    """The status of a page shown again with a problem (a form that was refused)."""
    if problem is None:
        return 200
    return problem.status if 400 <= problem.status < 500 else 400


# --- forms ------------------------------------------------------------------------------------------------


def text(form: FormData, name: str) -> str:
    value = form.get(name)
    return value.strip() if isinstance(value, str) else ""


# The edge takes amounts up to 10**15 minor units.
MAX_AMOUNT = Decimal(10**13)


def minor_units(value: str, field: str) -> int:
    try:
        amount = Decimal(value.replace(",", "."))
    except InvalidOperation:
        raise ProblemError(400, CHECK_FIELDS, {field: ["must be a number, e.g. 19.99"]}) from None
    if not amount.is_finite():
        raise ProblemError(400, CHECK_FIELDS, {field: ["must be a number, e.g. 19.99"]})
    if amount < 0:
        raise ProblemError(400, CHECK_FIELDS, {field: ["must not be negative"]})
    if amount > MAX_AMOUNT:  # else an overflow, or an integer too long to send as JSON
        raise ProblemError(400, CHECK_FIELDS, {field: [f"must be at most {MAX_AMOUNT}"]})
    return int((amount * 100).to_integral_value())


def whole_number(value: str, field: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise ProblemError(400, CHECK_FIELDS, {field: ["must be a whole number, e.g. 12"]}) from None
