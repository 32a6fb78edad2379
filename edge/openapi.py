"""The OpenAPI 3.1 document of the edge, built from the declared operations (edge/api.py):
paths, parameters, bodies, responses and the refusals each operation may answer."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel

from edge.api import Operation
from edge.examples import REQUEST_EXAMPLES, RESPONSE_EXAMPLES

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


def _parameters(op: Operation) -> list[dict[str, Any]]:
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
        {"name": name, "in": "header", "required": False, **HEADER_PARAMETERS[name]} for name in op.contract.headers
    ]
    if op.contract.query is not None:
        query_schema = op.contract.query.model_json_schema()
        required = set(query_schema.get("required", []))
        for name, prop in query_schema.get("properties", {}).items():
            parameters.append({"name": name, "in": "query", "required": name in required, "schema": prop})
    return parameters


def _request_body(op: Operation, body: type[BaseModel], components: dict[str, Any]) -> dict[str, Any]:
    media: dict[str, Any] = {"schema": _schema(body, components)}
    if op.operation_id in REQUEST_EXAMPLES:
        media["example"] = REQUEST_EXAMPLES[op.operation_id]
    return {"required": True, "content": {op.content_type: media}}


def _success(op: Operation, components: dict[str, Any]) -> dict[str, Any]:
    ok: dict[str, Any] = {"description": "Success"}
    response, media = op.contract.response, op.contract.response_type
    if response is not None:
        ok["content"] = {media: {"schema": _schema(response, components)}}
        if response.__name__ in RESPONSE_EXAMPLES:
            ok["content"][media]["example"] = RESPONSE_EXAMPLES[response.__name__]
    return ok


def _error_codes(op: Operation) -> set[int]:
    contract = op.contract
    body = contract.body or contract.form
    codes = set(contract.errors) | ({401} if contract.auth else set())
    if body or contract.query or any(name.endswith("_id") for name in _PARAM.findall(op.path)):
        codes.add(400)  # invalid fields, or a malformed id in the path
    if body:
        codes |= {413, 415}  # read_json / read_form refuse a body too large or of another type
    if op.upstream:
        codes |= {503, 504}  # the service behind is unavailable, or did not answer in time
    if contract.limits:
        codes |= {429, 503}  # limited; 503 while the limiter's store is down (sign-in: fail closed) or busy
    return codes


def _refusal(op: Operation, code: int) -> dict[str, Any]:
    described = _ERROR_TEXT.get(code, "Error")
    if code == 429 and op.contract.limits:
        described += "; policies: " + ", ".join(f"`{name}`" for name in op.contract.limits)
    refusal: dict[str, Any] = {
        "description": described,
        "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}},
    }
    if headers := _refusal_headers(code):
        refusal["headers"] = headers
    return refusal


def _entry(op: Operation, components: dict[str, Any]) -> dict[str, Any]:
    contract = op.contract
    entry: dict[str, Any] = {
        "operationId": op.operation_id,
        "summary": contract.summary,
        "tags": [contract.tag],
    }
    if op.description:
        entry["description"] = op.description
    if parameters := _parameters(op):
        entry["parameters"] = parameters
    body = contract.body or contract.form
    if body is not None:
        entry["requestBody"] = _request_body(op, body, components)
    responses: dict[str, Any] = {str(contract.status): _success(op, components)}
    for code in sorted(_error_codes(op)):
        responses[str(code)] = _refusal(op, code)
    entry["responses"] = responses
    if contract.security is not None:
        entry["security"] = contract.security
    elif contract.auth:
        entry["security"] = [{"bearerAuth": []}]
    return entry


def openapi_document(operations: Sequence[Operation], *, title: str, version: str) -> dict[str, Any]:
    components: dict[str, Any] = {"Problem": PROBLEM_SCHEMA}
    paths: dict[str, dict[str, Any]] = {}
    for op in operations:
        paths.setdefault(_PARAM.sub(r"{\1}", op.path), {})[op.method.lower()] = _entry(op, components)
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version, "description": DESCRIPTION},
        "servers": [{"url": "http://127.0.0.1:8085", "description": "the local cluster (make up)"}],
        "tags": [{"name": tag} for tag in sorted({op.contract.tag for op in operations})],
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
