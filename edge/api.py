"""Routes with their contract.

Each route module declares its operations on an :class:`Api`; one declaration
gives the Starlette route, the parsing of its body and query (pydantic models,
unknown fields refused; edge/bodies.py) and its entry in ``/openapi.json``
(edge/openapi.py), so the document cannot drift from the routes.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from edge.bodies import MULTIPART, parse_query, read_form, read_json
from edge.problems import HttpProblemError

Handler = Callable[..., Awaitable[Any]]


@dataclass(frozen=True, kw_only=True)
class Contract:
    """What an operation takes and answers, as the route enforces it and ``/openapi.json`` shows it."""

    summary: str
    tag: str
    body: type[BaseModel] | None = None
    query: type[BaseModel] | None = None
    # A multipart/form-data body (file uploads), parsed into this model.
    form: type[BaseModel] | None = None
    content_type: str = "application/json"
    response: type[BaseModel] | None = None
    status: int = 200
    # Media type of the success response (e.g. text/event-stream for a stream of ``response``).
    response_type: str = "application/json"
    auth: bool = False
    # The OpenAPI security requirements when not just ``bearerAuth`` (``auth``).
    security: list[dict[str, list[str]]] | None = None
    errors: Sequence[int] = ()
    # Request headers the operation reads (names from edge.openapi.HEADER_PARAMETERS).
    headers: Sequence[str] = ()
    # Calls a service behind the edge (so it answers 503/504 when that one is down or slow).
    upstream: bool = True
    # The rate-limit policies (RateLimit-Policy names) that may refuse it with 429.
    limits: Sequence[str] = ()


@dataclass(frozen=True)
class Operation:
    method: str
    path: str
    handler: Handler
    contract: Contract
    description: str = ""
    # Whether it calls a service behind the edge (its contract says so and its Api names one).
    upstream: bool = True

    @property
    def operation_id(self) -> str:
        return self.handler.__name__

    @property
    def content_type(self) -> str:
        """The request body's media type."""
        return MULTIPART if self.contract.form is not None else self.contract.content_type


class Api:
    """A group of operations (one route module) and the services it calls
    (the edge is ready when those answer their health checks)."""

    def __init__(self, upstreams: Sequence[str] = ()) -> None:
        self.operations: list[Operation] = []
        self.upstreams = tuple(upstreams)

    def operation(self, method: str, path: str, contract: Contract) -> Callable[[Handler], Handler]:
        def register(handler: Handler) -> Handler:
            self.operations.append(
                Operation(
                    method=method,
                    path=path,
                    handler=handler,
                    contract=contract,
                    description=(handler.__doc__ or "").strip(),
                    upstream=contract.upstream and bool(self.upstreams),
                )
            )
            return handler

        return register


def route(operation: Operation) -> Route:
    contract = operation.contract

    async def endpoint(request: Request) -> Response:
        if contract.auth and "authorization" not in request.headers:
            # Services verify the token; a request without one is refused before its body is read.
            raise HttpProblemError(401, "sign in first: send 'Authorization: Bearer <access token>'")
        kwargs: dict[str, Any] = {}
        if contract.body is not None:
            kwargs["body"] = await read_json(request, contract.body)
        if contract.form is not None:
            kwargs["form"] = await read_form(request, contract.form)
        if contract.query is not None:
            kwargs["query"] = parse_query(request, contract.query)
        result = await operation.handler(request, **kwargs)
        if isinstance(result, Response):
            return result
        if isinstance(result, BaseModel):
            result = result.model_dump(mode="json")
        if result is None:
            return Response(status_code=contract.status)
        return JSONResponse(result, status_code=contract.status)

    endpoint.__name__ = operation.operation_id
    return Route(operation.path, endpoint, methods=[operation.method])
