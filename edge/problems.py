"""Every failure the edge answers is an RFC 9457 ``application/problem+json``."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc
from pydantic import ValidationError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from common.errors import FieldViolation, Problem, problem_from_rpc_error

log = logging.getLogger("shop.edge")

PROBLEM_JSON = "application/problem+json"
T = TypeVar("T")


class ProblemResponse(JSONResponse):
    media_type = PROBLEM_JSON


class HttpProblemError(Exception):
    """Raised by request parsing and handlers to answer with a problem."""

    def __init__(self, status: int, detail: str, errors: list[FieldViolation] | None = None) -> None:
        super().__init__(detail)
        self.problem = Problem(status=status, detail=detail, errors=errors or [])


def respond(problem: Problem, request: Request | None = None) -> Response:
    body = problem.body()
    if request is not None:
        body["instance"] = request.url.path
        state = request.scope.get("state", {})
        request_id = state.get("request_id")
        if request_id:
            body["request_id"] = request_id
        context = state.get("trace")
        if context is not None:
            body["trace_id"] = context.trace_id
    return ProblemResponse(body, status_code=problem.status, headers=problem.headers())


def violations(error: ValidationError) -> list[FieldViolation]:
    found = []
    for item in error.errors(include_url=False):
        field = ".".join(str(part) for part in item["loc"]) or "body"
        message = "unknown field" if item["type"] == "extra_forbidden" else str(item["msg"])
        found.append(FieldViolation(field, message))
    return found


async def renaming_fields(call: Awaitable[T], rename: Callable[[str], str]) -> T:
    """An upstream call whose 4xx field violations name the fields as the REST API
    does (``rename`` maps a proto field path to its JSON name)."""
    try:
        return await call
    except grpc.aio.AioRpcError as exc:
        problem = problem_from_rpc_error(exc)
        if problem.status >= 500 or not problem.errors:
            raise
        problem.errors = [FieldViolation(rename(v.field), v.description) for v in problem.errors]
        error = HttpProblemError(problem.status, problem.detail)
        error.problem = problem
        raise error from exc


async def on_http_problem(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HttpProblemError)
    return respond(exc.problem, request)


async def on_rpc_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, grpc.aio.AioRpcError)
    problem = problem_from_rpc_error(exc)
    if problem.status >= 500:
        log.warning(
            "upstream failed", extra={"code": exc.code().name, "details": exc.details(), "path": request.url.path}
        )
    return respond(problem, request)


async def on_http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    detail = {404: "no such resource", 405: f"method {request.method} is not allowed here"}.get(
        exc.status_code, str(exc.detail)
    )
    response = respond(Problem(status=exc.status_code, detail=detail), request)
    if exc.headers:
        response.headers.update(exc.headers)
    return response


async def on_unexpected(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error", exc_info=exc)
    return respond(Problem(status=500, detail="internal error"), request)


HANDLERS: dict[Any, Any] = {
    HttpProblemError: on_http_problem,
    grpc.aio.AioRpcError: on_rpc_error,
    HTTPException: on_http_exception,
    Exception: on_unexpected,
}
