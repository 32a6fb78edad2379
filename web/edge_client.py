"""The web process's only way out: the edge's public REST API, over httpx."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import httpx


@dataclass
class Problem(Exception):
    """An edge answer that is not a success, as a person should read it."""

    status: int
    detail: str
    errors: dict[str, list[str]] = field(default_factory=dict)

    def __str__(self) -> str:
        return self.detail

    @classmethod
    def of(cls, response: httpx.Response) -> Problem:
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
        token: str = "",
        cart_token: str = "",
        json: Any = None,
        params: dict[str, Any] | None = None,
        files: dict[str, tuple[str, bytes, str]] | None = None,
        headers: dict[str, str] | None = None,
        forwarded_for: str = "",
    ) -> httpx.Response:
        sent = dict(headers or {})
        if forwarded_for:  # the shopper's address, for the edge's per-address limits (when it trusts this process)
            sent["X-Forwarded-For"] = forwarded_for
        if token:
            sent["Authorization"] = f"Bearer {token}"
        if cart_token:
            sent["X-Cart-Token"] = cart_token
        try:
            return await self.http.request(method, path, json=json, params=params, files=files, headers=sent)
        except httpx.HTTPError as exc:
            raise Problem(503, "the shop is not reachable right now; try again in a moment") from exc

    async def call(self, method: str, path: str, **kwargs: Any) -> Any:
        """The JSON body of a successful call; a :class:`Problem` otherwise."""
        response = await self.send(method, path, **kwargs)
        if response.status_code >= 400:
            raise Problem.of(response)
        if response.status_code == 204 or not response.content:
            return {}
        return response.json()
