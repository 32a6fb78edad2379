"""The web process's only way out: the edge's public REST API, over httpx."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import httpx


@dataclass
class ProblemError(Exception):
    """An edge answer that is not a success, as a person should read it."""

    status: int
    detail: str
    errors: dict[str, list[str]] = field(default_factory=dict)

    def __str__(self) -> str:
        return self.detail

    @classmethod
    def of(cls, response: httpx.Response) -> ProblemError:
        try:
            body = response.json()
        except ValueError:
            body = {}
        if not isinstance(body, dict):
            body = {}
        detail = str(body.get("detail") or body.get("title") or f"the shop answered {response.status_code}")
        errors: dict[str, list[str]] = {}
        for item in body.get("errors") or []:
            if isinstance(item, dict):
                errors.setdefault(str(item.get("field", "")), []).append(str(item.get("message", "")))
        return cls(response.status_code, detail, errors)


@dataclass(frozen=True)
class Caller:
    """Whom a call to the edge is made for: a user's access token, a guest's cart
    token, and the shopper's address (for the edge's per-address limits, when it
    trusts this process)."""

    token: str = ""
    cart_token: str = ""
    forwarded_for: str = ""

    def headers(self) -> dict[str, str]:
        sent: dict[str, str] = {}
        if self.forwarded_for:
            sent["X-Forwarded-For"] = self.forwarded_for
        if self.token:
            sent["Authorization"] = f"Bearer {self.token}"
        if self.cart_token:
            sent["X-Cart-Token"] = self.cart_token
        return sent


ANONYMOUS = Caller()


class Edge:
    """One shared connection pool to the edge; every call names its own credentials."""

    def __init__(self, base_url: str, timeout: float) -> None:
        self.http = httpx.AsyncClient(base_url=base_url, timeout=timeout)

    async def close(self) -> None:
        await self.http.aclose()

    async def send(
        self,
        method: str,
        path: str,
        *,
        caller: Caller = ANONYMOUS,
        json: Any = None,
        params: dict[str, Any] | None = None,
        files: dict[str, tuple[str, bytes, str]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        sent = {**(headers or {}), **caller.headers()}
        try:
            return await self.http.request(method, path, json=json, params=params, files=files, headers=sent)
        except httpx.HTTPError as exc:
            raise ProblemError(503, "the shop is not reachable right now; try again in a moment") from exc

    async def call(self, method: str, path: str, **kwargs: Any) -> Any:
        """The JSON body of a successful call; a :class:`ProblemError` otherwise."""
        response = await self.send(method, path, **kwargs)
        if response.status_code >= 400:
            raise ProblemError.of(response)
        if response.status_code == 204 or not response.content:
            return {}
        return response.json()
