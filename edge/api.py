"""Routes with their contract: request parsing, responses and the OpenAPI document.

Each route module declares its operations on an :class:`Api`; one declaration
gives the Starlette route, the parsing of its body and query (pydantic models,
unknown fields refused) and its entry in ``/openapi.json``, so the document
cannot drift from the routes.
"""

from __future__ import annotations

import re
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any

from pydantic import BaseModel, PlainValidator, ValidationError, WithJsonSchema
from pydantic_core import from_json
from python_multipart.multipart import parse_options_header
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from edge.examples import REQUEST_EXAMPLES, RESPONSE_EXAMPLES
from edge.problems import HttpProblemError, violations

Handler = Callable[..., Awaitable[Any]]

MULTIPART = "multipart/form-data"


@dataclass(frozen=True)
class FilePart:
    """A file sent as one part of a ``multipart/form-data`` body."""

    filename: str
    content_type: str
    data: bytes


def _file_part(value: Any) -> FilePart:
    if not isinstance(value, FilePart):
        raise ValueError("must be a file (a form part with a filename)")
    return value


# A form field holding a file; in OpenAPI a binary string.
UploadedFile = Annotated[FilePart, PlainValidator(_file_part), WithJsonSchema({"type": "string", "format": "binary"})]


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
    # Media type of the success response (e.g. text/event-stream for a stream of ``response``).
    response_type: str = "application/json"
    description: str = ""
    # A multipart/form-data body (file uploads), parsed into this model.
    form: type[BaseModel] | None = None
    extra_responses: dict[str, Any] = field(default_factory=dict)
    # The OpenAPI security requirements when not just ``bearerAuth`` (``auth``).
    security: list[dict[str, list[str]]] | None = None
    # Request headers the operation reads (names from HEADER_PARAMETERS).
    headers: Sequence[str] = ()
    # Calls a service behind the edge (so it answers 503/504 when that one is down or slow).
    upstream: bool = True
    # The rate-limit policies (RateLimit-Policy names) that may refuse it with 429.
    limits: Sequence[str] = ()

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
        form: type[BaseModel] | None = None,
        response_type: str = "application/json",
        security: list[dict[str, list[str]]] | None = None,
        headers: Sequence[str] = (),
        upstream: bool = True,
        limits: Sequence[str] = (),
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
                    content_type=MULTIPART if form is not None else content_type,
                    response_type=response_type,
                    description=(handler.__doc__ or "").strip(),
                    form=form,
                    security=security,
                    headers=headers,
                    upstream=upstream and bool(self.upstreams),
                    limits=limits,
                )
            )
            return handler

        return register


def route(operation: Operation) -> Route:
    async def endpoint(request: Request) -> Response:
        if operation.auth and "authorization" not in request.headers:
            # Services verify the token; a request without one is refused before its body is read.
            raise HttpProblemError(401, "sign in first: send 'Authorization: Bearer <access token>'")
        kwargs: dict[str, Any] = {}
        if operation.body is not None:
            kwargs["body"] = await read_json(request, operation.body)
        if operation.form is not None:
            kwargs["form"] = await read_form(request, operation.form)
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
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):
        raise HttpProblemError(415, f"the body must not be compressed (Content-Encoding: {encoding}); send it as it is")
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise HttpProblemError(413, f"the request body is larger than {limit} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise HttpProblemError(413, f"the request body is larger than {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _is_json(media: str) -> bool:
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


# What pydantic-core's JSON parser says, and what the client should do about it.
_JSON_PROBLEMS = {
    "recursion limit exceeded": "the body is nested too deeply (at most 200 levels of arrays and objects)",
    "number out of range": "a number in the body has too many digits (at most 4300)",
    "hex escape": "a \\u escape in the body is not a character (a lone UTF-16 surrogate such as \\ud800)",
}


def parse_json(raw: bytes) -> Any:
    """A JSON body (RFC 8259: UTF-8, no NaN or Infinity) as Python values, or a 400
    that says what is wrong.  pydantic-core's parser (jiter) never recurses in Python,
    stops at 200 levels of nesting and at 4300-digit numbers, and refuses invalid
    UTF-8 and lone surrogates; a number too large for a float (``1e999``) parses as
    infinity, which the request models refuse as "not a finite number"."""
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]  # a UTF-8 byte order mark: RFC 8259 lets a parser ignore it
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")) or b"\x00" in raw:
        raise HttpProblemError(400, "the body must be JSON in UTF-8 (it looks like UTF-16 or UTF-32)")
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise HttpProblemError(
            400, f"the body is not valid UTF-8 (byte {exc.start} is not): send JSON in UTF-8"
        ) from exc
    if not raw.strip():
        return None
    try:
        return from_json(raw, allow_inf_nan=False)
    except ValueError as exc:
        message = str(exc)
        for found, detail in _JSON_PROBLEMS.items():
            if found in message:
                raise HttpProblemError(400, detail) from exc
        try:
            from_json(raw, allow_inf_nan=True)
        except ValueError:
            pass
        else:
            raise HttpProblemError(400, "NaN and Infinity are not JSON numbers: send finite numbers") from exc
        raise HttpProblemError(400, f"the body is not valid JSON: {message}") from exc


async def read_json(request: Request, model: type[BaseModel]) -> BaseModel:
    media, options = parse_options_header(request.headers.get("content-type", ""))
    if not _is_json(media.decode("latin-1").lower()):
        raise HttpProblemError(415, "send the body as JSON with 'Content-Type: application/json'")
    charset = options.get(b"charset", b"utf-8").decode("latin-1").lower()
    if charset not in ("utf-8", "utf8"):
        raise HttpProblemError(415, f"JSON is taken in UTF-8 only: send charset=utf-8 (or none), not charset={charset}")
    data = parse_json(await read_body(request, request.app.state.settings.max_body_bytes))
    if not isinstance(data, dict):
        raise HttpProblemError(400, "the body must be a JSON object")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise HttpProblemError(400, "the request has invalid fields", violations(exc)) from exc


async def read_form(request: Request, model: type[BaseModel]) -> BaseModel:
    """A ``multipart/form-data`` body, capped at ``max_upload_bytes`` while it
    streams in; file parts become :class:`FilePart` values."""
    media = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media != MULTIPART:
        raise HttpProblemError(415, "send the body as multipart/form-data")
    limit: int = request.app.state.settings.max_upload_bytes
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise HttpProblemError(413, f"the request body is larger than {limit} bytes")

    async def capped() -> AsyncGenerator[bytes, None]:
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise HttpProblemError(413, f"the request body is larger than {limit} bytes")
            yield chunk

    parser = MultiPartParser(request.headers, capped(), max_files=len(model.model_fields), max_fields=32)
    try:
        form = await parser.parse()
    except MultiPartException as exc:
        raise HttpProblemError(400, f"the multipart body is malformed: {exc.message}") from exc
    values: dict[str, Any] = {}
    try:
        for name, value in form.multi_items():
            if name in values:
                raise HttpProblemError(400, f"the form field {name!r} is given twice")
            if isinstance(value, UploadFile):
                data = await value.read()
                values[name] = FilePart(value.filename or "", value.content_type or "", data)
            else:
                values[name] = value
    finally:
        await form.close()
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        raise HttpProblemError(400, "the form has invalid fields", violations(exc)) from exc


def parse_query(request: Request, model: type[BaseModel]) -> BaseModel:
    try:
        return model.model_validate(dict(request.query_params))
    except ValidationError as exc:
        raise HttpProblemError(400, "the query has invalid parameters", violations(exc)) from exc


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
        "trace_id": {
            "type": "string",
            "pattern": "^[0-9a-f]{32}$",
            "description": "W3C trace id of the request (also in the X-Trace-Id header)",
        },
        "errors": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"field": {"type": "string"}, "message": {"type": "string"}},
                "required": ["field", "message"],
            },
        },
        "omitted_violations": {
            "type": "integer",
            "minimum": 1,
            "description": "Field violations left out of errors (the list is cut to what a service's status carries)",
        },
    },
    "required": ["type", "title", "status", "detail"],
}

HEADER_PARAMETERS: dict[str, dict[str, Any]] = {
    "Idempotency-Key": {
        "description": "Makes a retry safe: a repeat with the same body gets the first answer; "
        "the same key with another body gets 422",
        "schema": {"type": "string", "maxLength": 255},
    },
    "X-Cart-Token": {
        "description": "Names a guest cart (answered by the cart calls when signed out); sent along at "
        "sign-in (login, register) the guest cart joins the user's cart",
        "schema": {"type": "string", "maxLength": 128},
    },
    "Last-Event-ID": {
        "description": "Resume after this event (an EventSource sends it by itself when reconnecting)",
        "schema": {"type": "string", "maxLength": 32},
    },
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
    429: "Too many requests: a rate limit or a cap was reached (see Retry-After, RateLimit-Policy, RateLimit)",
    503: "A service behind the edge is unavailable or busy (see Retry-After when given)",
    504: "A service behind the edge did not answer in time",
}


# Response headers of refusals (RateLimit fields: draft-ietf-httpapi-ratelimit-headers-10).
RESPONSE_HEADERS: dict[str, dict[str, Any]] = {
    "Retry-After": {
        "description": "Seconds until the request may succeed",
        "schema": {"type": "integer", "minimum": 1},
    },
    "RateLimit-Policy": {
        "description": 'The policy that refused the request, e.g. `"login-address";q=30;w=60` '
        "(quota q per window w seconds; no w: a cap on what is held at once)",
        "schema": {"type": "string"},
    },
    "RateLimit": {
        "description": 'That policy\'s state, e.g. `"login-address";r=0;t=42` (r left, t seconds until it resets)',
        "schema": {"type": "string"},
    },
}


def _refusal_headers(code: int) -> dict[str, Any]:
    names = {429: ("Retry-After", "RateLimit-Policy", "RateLimit"), 503: ("Retry-After",)}.get(code, ())
    return {name: {"$ref": f"#/components/headers/{name}"} for name in names}


def _schema(model: type[BaseModel], components: dict[str, Any]) -> dict[str, Any]:
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    for name, definition in schema.pop("$defs", {}).items():
        components[name] = definition
    components[model.__name__] = schema
    return {"$ref": f"#/components/schemas/{model.__name__}"}


DESCRIPTION = """The REST edge of shop: JSON over HTTP in front of its gRPC services.

Start the local cluster with `make up`; the edge listens on http://127.0.0.1:8085.
Sign in with `POST /api/v1/auth/login` (or register), then send the access token as
`Authorization: Bearer <token>` (in /docs: *Authorize*). Every error is
`application/problem+json` (RFC 9457) with the request's `trace_id`; every response
carries `X-Request-ID` and `X-Trace-Id`."""


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
            {
                "name": name,
                "in": "path",
                "required": True,
                "schema": {"type": "string", "format": "uuid"} if name.endswith("_id") else {"type": "string"},
            }
            for name in _PARAM.findall(op.path)
        ]
        parameters += [
            {"name": name, "in": "header", "required": False, **HEADER_PARAMETERS[name]} for name in op.headers
        ]
        if op.query is not None:
            query_schema = op.query.model_json_schema()
            required = set(query_schema.get("required", []))
            for name, prop in query_schema.get("properties", {}).items():
                parameters.append({"name": name, "in": "query", "required": name in required, "schema": prop})
        if parameters:
            entry["parameters"] = parameters
        body = op.body or op.form
        if body is not None:
            media: dict[str, Any] = {"schema": _schema(body, components)}
            if op.operation_id in REQUEST_EXAMPLES:
                media["example"] = REQUEST_EXAMPLES[op.operation_id]
            entry["requestBody"] = {"required": True, "content": {op.content_type: media}}
        ok: dict[str, Any] = {"description": "Success"}
        if op.response is not None:
            ok["content"] = {op.response_type: {"schema": _schema(op.response, components)}}
            if op.response.__name__ in RESPONSE_EXAMPLES:
                ok["content"][op.response_type]["example"] = RESPONSE_EXAMPLES[op.response.__name__]
        responses: dict[str, Any] = {str(op.status): ok}
        codes = set(op.errors) | ({401} if op.auth else set())
        if body or op.query or any(name.endswith("_id") for name in _PARAM.findall(op.path)):
            codes.add(400)  # invalid fields, or a malformed id in the path
        if body:
            codes |= {413, 415}  # read_json / read_form refuse a body too large or of another type
        if op.upstream:
            codes |= {503, 504}  # the service behind is unavailable, or did not answer in time
        if op.limits:
            codes |= {429, 503}  # limited; 503 while the limiter's store is down (sign-in: fail closed) or busy
        for code in sorted(codes):
            described = _ERROR_TEXT.get(code, "Error")
            if code == 429 and op.limits:
                described += "; policies: " + ", ".join(f"`{name}`" for name in op.limits)
            responses[str(code)] = {
                "description": described,
                "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}},
            }
            if headers := _refusal_headers(code):
                responses[str(code)]["headers"] = headers
        entry["responses"] = responses
        if op.security is not None:
            entry["security"] = op.security
        elif op.auth:
            entry["security"] = [{"bearerAuth": []}]
        paths.setdefault(path, {})[op.method.lower()] = entry
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version, "description": DESCRIPTION},
        "servers": [{"url": "http://127.0.0.1:8085", "description": "the local cluster (make up)"}],
        "tags": [{"name": tag} for tag in sorted({op.tag for op in operations})],
        "paths": paths,
        "components": {
            "schemas": components,
            "headers": RESPONSE_HEADERS,
            "securitySchemes": {
                "bearerAuth": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
                "streamTicket": {
                    "type": "apiKey",
                    "in": "query",
                    "name": "ticket",
                    "description": "single-use, from POST /api/v1/notifications/stream-tickets",
                },
            },
        },
    }
