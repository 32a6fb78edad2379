"""Routes with their contract: request parsing, responses and the OpenAPI document.

Each route module declares its operations on an :class:`Api`; one declaration
gives the Starlette route, the parsing of its body and query (pydantic models,
unknown fields refused) and its entry in ``/openapi.json``, so the document
cannot drift from the routes.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from edge.problems import HttpProblem, violations

Handler = Callable[..., Awaitable[Any]]


@dataclass
class Operation:
    method: str
    path: str
    handler: Handler
    summary: str
    tag: str
    body: type[BaseModel] | None = None
    query: type[BaseModel] | None = None
    response: type[BaseModel] | None = None
    status: int = 200
    auth: bool = False
    errors: Sequence[int] = ()
    content_type: str = "application/json"
    description: str = ""
    extra_responses: dict[str, Any] = field(default_factory=dict)

    @property
    def operation_id(self) -> str:
        return self.handler.__name__


class Api:
    """A group of operations (one route module) and the services it calls
    (the edge is ready when those answer their health checks)."""

    def __init__(self, upstreams: Sequence[str] = ()) -> None:
        self.operations: list[Operation] = []
        self.upstreams = tuple(upstreams)

    def operation(
        self,
        method: str,
        path: str,
        *,
        summary: str,
        tag: str,
        body: type[BaseModel] | None = None,
        query: type[BaseModel] | None = None,
        response: type[BaseModel] | None = None,
        status: int = 200,
        auth: bool = False,
        errors: Sequence[int] = (),
        content_type: str = "application/json",
    ) -> Callable[[Handler], Handler]:
        def register(handler: Handler) -> Handler:
            self.operations.append(
                Operation(
                    method=method,
                    path=path,
                    handler=handler,
                    summary=summary,
                    tag=tag,
                    body=body,
                    query=query,
                    response=response,
                    status=status,
                    auth=auth,
                    errors=errors,
                    content_type=content_type,
                    description=(handler.__doc__ or "").strip(),
                )
            )
            return handler

        return register


def route(operation: Operation) -> Route:
    async def endpoint(request: Request) -> Response:
        kwargs: dict[str, Any] = {}
        if operation.body is not None:
            kwargs["body"] = await read_json(request, operation.body)
        if operation.query is not None:
            kwargs["query"] = parse_query(request, operation.query)
        result = await operation.handler(request, **kwargs)
        if isinstance(result, Response):
            return result
        if isinstance(result, BaseModel):
            result = result.model_dump(mode="json")
        if result is None:
            return Response(status_code=operation.status)
        return JSONResponse(result, status_code=operation.status)

    endpoint.__name__ = operation.operation_id
    return Route(operation.path, endpoint, methods=[operation.method])


async def read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise HttpProblem(413, f"the request body is larger than {limit} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise HttpProblem(413, f"the request body is larger than {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def read_json(request: Request, model: type[BaseModel]) -> BaseModel:
    content_type = request.headers.get("content-type", "")
    media = content_type.split(";", 1)[0].strip().lower()
    if media != "application/json" and not (media.startswith("application/") and media.endswith("+json")):
        raise HttpProblem(415, "send the body as JSON with 'Content-Type: application/json'")
    raw = await read_body(request, request.app.state.settings.max_body_bytes)
    try:
        data = json.loads(raw) if raw.strip() else None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise HttpProblem(400, f"the body is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise HttpProblem(400, "the body must be a JSON object")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise HttpProblem(400, "the request has invalid fields", violations(exc)) from exc


def parse_query(request: Request, model: type[BaseModel]) -> BaseModel:
    try:
        return model.model_validate(dict(request.query_params))
    except ValidationError as exc:
        raise HttpProblem(400, "the query has invalid parameters", violations(exc)) from exc


# --- OpenAPI 3.1 --------------------------------------------------------------

_PARAM = re.compile(r"{(\w+)(?::\w+)?}")

PROBLEM_SCHEMA = {
    "type": "object",
    "description": "RFC 9457 problem details",
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "instance": {"type": "string"},
        "request_id": {"type": "string"},
        "errors": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"field": {"type": "string"}, "message": {"type": "string"}},
                "required": ["field", "message"],
            },
        },
    },
    "required": ["type", "title", "status", "detail"],
}

_ERROR_TEXT = {
    400: "Invalid input (field-level `errors`)",
    401: "Missing, invalid or expired credentials",
    402: "Payment declined",
    403: "Not allowed for this account",
    404: "Not found",
    409: "Conflict with the current state",
    413: "Body too large",
    415: "Unsupported content type",
    422: "Idempotency key reused with a different body",
    429: "Too many attempts (see Retry-After)",
    503: "A service behind the edge is unavailable",
}


def _schema(model: type[BaseModel], components: dict[str, Any]) -> dict[str, Any]:
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    for name, definition in schema.pop("$defs", {}).items():
        components[name] = definition
    components[model.__name__] = schema
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def openapi_document(operations: Sequence[Operation], *, title: str, version: str) -> dict[str, Any]:
    components: dict[str, Any] = {"Problem": PROBLEM_SCHEMA}
    paths: dict[str, dict[str, Any]] = {}
    for op in operations:
        path = _PARAM.sub(r"{\1}", op.path)
        entry: dict[str, Any] = {
            "operationId": op.operation_id,
            "summary": op.summary,
            "tags": [op.tag],
        }
        if op.description:
            entry["description"] = op.description
        parameters = [
            {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
            for name in _PARAM.findall(op.path)
        ]
        if op.query is not None:
            query_schema = op.query.model_json_schema()
            required = set(query_schema.get("required", []))
            for name, prop in query_schema.get("properties", {}).items():
                parameters.append({"name": name, "in": "query", "required": name in required, "schema": prop})
        if parameters:
            entry["parameters"] = parameters
        if op.body is not None:
            entry["requestBody"] = {
                "required": True,
                "content": {op.content_type: {"schema": _schema(op.body, components)}},
            }
        ok: dict[str, Any] = {"description": "Success"}
        if op.response is not None:
            ok["content"] = {"application/json": {"schema": _schema(op.response, components)}}
        responses: dict[str, Any] = {str(op.status): ok}
        codes = set(op.errors) | ({400} if op.body or op.query else set()) | ({401} if op.auth else set())
        for code in sorted(codes):
            responses[str(code)] = {
                "description": _ERROR_TEXT.get(code, "Error"),
                "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}},
            }
        entry["responses"] = responses
        if op.auth:
            entry["security"] = [{"bearerAuth": []}]
        paths.setdefault(path, {})[op.method.lower()] = entry
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version},
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}},
        },
    }
