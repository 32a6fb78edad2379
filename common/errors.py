"""Domain errors and how they travel: to gRPC status (services) and back to
HTTP + ``application/problem+json`` (the edge).

Services raise a :class:`DomainError`; the shared server interceptor turns it
into a gRPC status with ``google.rpc`` details (``BadRequest`` field violations,
``RetryInfo``, ``ErrorInfo``).  The edge reads those details back with
:func:`problem_from_rpc_error` and answers with RFC 9457 problem details.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import error_details_pb2, status_pb2

DETAILS_KEY = "grpc-status-details-bin"

# The status travels in trailing metadata (``grpc-message`` and the details,
# base64-encoded), whose default soft limit is 8 KiB: past it the *caller's*
# transport fails the call with its own RESOURCE_EXHAUSTED.  So the serialized
# status keeps to this budget (4 KiB once base64-encoded), the message
# to a few hundred characters, and field violations that do not fit are left
# out and counted (ErrorInfo metadata ``omitted_violations``).
MAX_STATUS_BYTES = 3072
MAX_MESSAGE_CHARS = 400
OMITTED_VIOLATIONS = "omitted_violations"


@dataclass(frozen=True)
class FieldViolation:
    field: str
    description: str


@dataclass(frozen=True)
class Quota:
    """A named limit: ``limit`` units per ``window`` seconds (0: a cap on what is
    held at once, e.g. open streams), and how many are left.  Travels as
    ``google.rpc.QuotaFailure`` (quota_id, quota_value, the window as the
    ``window`` dimension); the edge turns it into ``RateLimit-Policy`` / ``RateLimit``."""

    name: str
    limit: int
    window: int = 0
    remaining: int = 0

    def to_proto(self, description: str) -> error_details_pb2.QuotaFailure:
        violation = error_details_pb2.QuotaFailure.Violation(
            subject=self.name, description=description, quota_id=self.name, quota_value=self.limit
        )
        if self.window:
            violation.quota_dimensions["window"] = str(self.window)
        violation.quota_dimensions["remaining"] = str(self.remaining)
        return error_details_pb2.QuotaFailure(violations=[violation])

    @classmethod
    def of_proto(cls, failure: error_details_pb2.QuotaFailure) -> Quota | None:
        for violation in failure.violations:
            if violation.quota_id:
                dimensions = violation.quota_dimensions
                return cls(
                    violation.quota_id,
                    int(violation.quota_value),
                    int(dimensions.get("window", "0") or 0),
                    int(dimensions.get("remaining", "0") or 0),
                )
        return None


@dataclass
class DomainError(Exception):
    """A failure a caller can act on.  Subclasses fix the gRPC code."""

    message: str
    violations: list[FieldViolation] = field(default_factory=list)
    reason: str | None = None  # machine-readable, goes into ErrorInfo
    metadata: dict[str, str] = field(default_factory=dict)
    retry_after: float | None = None  # seconds, goes into RetryInfo
    quota: Quota | None = None  # the limit that refused the call, goes into QuotaFailure

    code = grpc.StatusCode.UNKNOWN

    def __post_init__(self) -> None:
        super().__init__(self.message)

    def to_status(self) -> status_pb2.Status:
        """The status with its ``google.rpc`` details, within :data:`MAX_STATUS_BYTES`."""
        message = clip(self.message, MAX_MESSAGE_CHARS)
        violations = [
            error_details_pb2.BadRequest.FieldViolation(
                field=clip(v.field, MAX_MESSAGE_CHARS), description=clip(v.description, MAX_MESSAGE_CHARS)
            )
            for v in self.violations
        ]
        kept = len(violations)
        while True:
            status = self._status(message, violations[:kept], omitted=len(violations) - kept)
            if status.ByteSize() <= MAX_STATUS_BYTES or kept == 0:
                return status
            # Drop about as many violations as the excess takes (at least one), then measure again.
            excess = status.ByteSize() - MAX_STATUS_BYTES
            average = max(1, sum(v.ByteSize() + 3 for v in violations[:kept]) // kept)
            kept = max(0, kept - max(1, -(-excess // average)))

    def _status(
        self, message: str, violations: list[error_details_pb2.BadRequest.FieldViolation], *, omitted: int
    ) -> status_pb2.Status:
        details: list[any_pb2.Any] = []
        if violations:
            details.append(_pack(error_details_pb2.BadRequest(field_violations=violations)))
        metadata = dict(self.metadata)
        if omitted:
            metadata[OMITTED_VIOLATIONS] = str(omitted)
        if self.reason or omitted:
            info = error_details_pb2.ErrorInfo(reason=self.reason or "", domain="shop", metadata=metadata)
            details.append(_pack(info))
        if self.retry_after is not None:
            delay = duration_pb2.Duration()
            delay.FromNanoseconds(int(self.retry_after * 1e9))
            details.append(_pack(error_details_pb2.RetryInfo(retry_delay=delay)))
        if self.quota is not None:
            details.append(_pack(self.quota.to_proto(message)))
        return status_pb2.Status(code=self.code.value[0], message=message, details=details)


def clip(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, an ellipsis marking the cut."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


class InvalidArgumentError(DomainError):
    code = grpc.StatusCode.INVALID_ARGUMENT


class NotFoundError(DomainError):
    code = grpc.StatusCode.NOT_FOUND


class AlreadyExistsError(DomainError):
    code = grpc.StatusCode.ALREADY_EXISTS


class FailedPreconditionError(DomainError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class AbortedError(DomainError):
    """A conflict with concurrent work (e.g. out of stock, optimistic lock)."""

    code = grpc.StatusCode.ABORTED


class UnauthenticatedError(DomainError):
    code = grpc.StatusCode.UNAUTHENTICATED


class PermissionDeniedError(DomainError):
    code = grpc.StatusCode.PERMISSION_DENIED


class ResourceExhaustedError(DomainError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class UnavailableError(DomainError):
    code = grpc.StatusCode.UNAVAILABLE


class DeadlineExceededError(DomainError):
    """The caller's deadline passed before the work was done."""

    code = grpc.StatusCode.DEADLINE_EXCEEDED


def _pack(message: Any) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def status_trailers(status: status_pb2.Status) -> tuple[tuple[str, bytes], ...]:
    return ((DETAILS_KEY, status.SerializeToString()),)


# --- the edge side -------------------------------------------------------

HTTP_STATUS: dict[grpc.StatusCode, int] = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.FAILED_PRECONDITION: 409,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
}

# Reasons (google.rpc.ErrorInfo, catalogued in proto/shop/common/v1/errors.proto)
# whose HTTP status is more precise than their gRPC code's.
REASON_HTTP_STATUS: dict[str, int] = {
    "PAYMENT_DECLINED": 402,
    "INSUFFICIENT_FUNDS": 402,
    "IMAGE_TOO_LARGE": 413,
    "UNSUPPORTED_IMAGE_TYPE": 415,
    "IDEMPOTENCY_KEY_REUSED": 422,
    "PAYMENT_PROCESSOR_ERROR": 502,
    "PAYMENT_OUTCOME_UNKNOWN": 502,
}

TITLES: dict[int, str] = {
    400: "Bad Request",
    401: "Unauthorized",
    402: "Payment Required",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    413: "Content Too Large",
    415: "Unsupported Media Type",
    422: "Unprocessable Content",
    429: "Too Many Requests",
    499: "Client Closed Request",
    500: "Internal Server Error",
    501: "Not Implemented",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}


@dataclass
class Problem:
    """An RFC 9457 problem: what the edge answers for every failure."""

    status: int
    detail: str
    errors: list[FieldViolation] = field(default_factory=list)
    reason: str | None = None
    retry_after: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    quota: Quota | None = None

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            # A reason (proto/shop/common/v1/errors.proto) names the problem type;
            # without one the status code says it all (RFC 9457 "about:blank").
            "type": f"urn:shop:problem:{self.reason.lower()}" if self.reason else "about:blank",
            "title": TITLES.get(self.status, "Error"),
            "status": self.status,
            "detail": self.detail,
        }
        if self.errors:
            body["errors"] = [{"field": v.field, "message": v.description} for v in self.errors]
        body.update(self.extra)
        return body

    def headers(self) -> dict[str, str]:
        if self.retry_after is None:
            return {}
        seconds = max(1, math.ceil(self.retry_after))
        headers = {"Retry-After": str(seconds)}
        if self.quota is not None:
            headers.update(ratelimit_headers(self.quota, seconds))
        return headers


def ratelimit_headers(quota: Quota, reset: int) -> dict[str, str]:
    """The ``RateLimit-Policy`` and ``RateLimit`` fields of the IETF httpapi draft
    draft-ietf-httpapi-ratelimit-headers-10 (structured fields, RFC 9651): the policy
    as ``"name";q=<quota>;w=<window seconds>``, its state as ``"name";r=<remaining>;t=<seconds
    until quota is available again>``."""
    name = '"' + quota.name.replace("\\", "").replace('"', "") + '"'
    policy = f"{name};q={quota.limit}" + (f";w={quota.window}" if quota.window else "")
    return {"RateLimit-Policy": policy, "RateLimit": f"{name};r={quota.remaining};t={reset}"}


def rpc_status_from_metadata(metadata: Any) -> status_pb2.Status | None:
    for key, value in metadata or ():
        if key == DETAILS_KEY:
            status = status_pb2.Status()
            status.ParseFromString(value)
            return status
    return None


def problem_from_rpc_error(error: grpc.aio.AioRpcError) -> Problem:
    """Map a failed upstream call to the problem the edge answers with."""
    code = error.code()
    http = HTTP_STATUS.get(code, 500)
    status = rpc_status_from_metadata(error.trailing_metadata())
    problem = Problem(status=http, detail=error.details() or code.name.lower())
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
        problem.detail = "a service this request needs is unavailable; try again shortly"
    if http == 500:
        problem.detail = "internal error"
    if status is None:
        return _transport_problem(problem, code)
    for any_detail in status.details:
        if any_detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            any_detail.Unpack(bad)
            problem.errors = [FieldViolation(v.field, v.description) for v in bad.field_violations]
        elif any_detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            any_detail.Unpack(info)
            problem.reason = info.reason
            problem.status = REASON_HTTP_STATUS.get(info.reason, problem.status)
            problem.extra.update(dict(info.metadata))
            if info.metadata.get(OMITTED_VIOLATIONS, "").isdigit():
                problem.extra[OMITTED_VIOLATIONS] = int(info.metadata[OMITTED_VIOLATIONS])
        elif any_detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            retry = error_details_pb2.RetryInfo()
            any_detail.Unpack(retry)
            problem.retry_after = retry.retry_delay.ToNanoseconds() / 1e9
        elif any_detail.Is(error_details_pb2.QuotaFailure.DESCRIPTOR):
            failure = error_details_pb2.QuotaFailure()
            any_detail.Unpack(failure)
            problem.quota = Quota.of_proto(failure)
    if code is grpc.StatusCode.UNAVAILABLE and problem.retry_after is not None and error.details():
        # A deliberate refusal with a retry delay (busy, a limiter's store down) says what it is.
        problem.detail = error.details() or problem.detail
    return problem


def _transport_problem(problem: Problem, code: grpc.StatusCode) -> Problem:
    """A failure without the status details every shop service writes.  With
    one of the codes the transport or the gRPC library produce on their own
    (e.g. RESOURCE_EXHAUSTED "received metadata size exceeds soft limit", a
    message too large), its text is an internal matter and its code says
    nothing about the request (it is no rate limit): a generic 502."""
    if code in _TRANSPORT_CODES:
        return Problem(status=502, detail="a service this request needs failed to answer; try again shortly")
    return problem


# INTERNAL and UNKNOWN already answer a plain 500 "internal error"; UNAVAILABLE and
# DEADLINE_EXCEEDED a plain "unavailable".
_TRANSPORT_CODES = frozenset({grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.DATA_LOSS})


# --- a service calling another ----------------------------------------------------

_BY_CODE: dict[grpc.StatusCode, type[DomainError]] = {
    cls.code: cls
    for cls in (
        InvalidArgumentError,
        NotFoundError,
        AlreadyExistsError,
        FailedPreconditionError,
        AbortedError,
        UnauthenticatedError,
        PermissionDeniedError,
        ResourceExhaustedError,
        UnavailableError,
    )
}


def from_upstream(error: grpc.aio.AioRpcError, dependency: str) -> DomainError:
    """An upstream failure as this service's own error: the caller's mistakes
    (NOT_FOUND, OUT_OF_STOCK, …) pass through with their reason and metadata;
    an unreachable or failing dependency becomes UNAVAILABLE naming it."""
    code = error.code()
    cls = _BY_CODE.get(code)
    # RESOURCE_EXHAUSTED without a shop status is the transport's (e.g. trailers over its limit): the dependency's.
    foreign = code in _TRANSPORT_CODES and rpc_status_from_metadata(error.trailing_metadata()) is None
    if cls is None or foreign or cls in (UnavailableError, UnauthenticatedError, PermissionDeniedError):
        return UnavailableError(
            f"{dependency} is unavailable; nothing was changed, try again shortly",
            reason="DEPENDENCY_UNAVAILABLE",
            metadata={"dependency": dependency},
        )
    problem = problem_from_rpc_error(error)
    violations = problem.errors
    return cls(
        error.details() or code.name.lower(),
        violations=violations,
        reason=problem.reason,
        metadata={k: str(v) for k, v in problem.extra.items()},
    )
