"""A refusal's quota travels from a service's error (google.rpc QuotaFailure and
RetryInfo) to the edge's problem and its RateLimit-Policy / RateLimit fields
(draft-ietf-httpapi-ratelimit-headers-10)."""

from __future__ import annotations

import grpc

from common.errors import DETAILS_KEY, Quota, ResourceExhaustedError, problem_from_rpc_error


def as_upstream_error(error: ResourceExhaustedError) -> grpc.aio.AioRpcError:
    status = error.to_status()
    trailers = grpc.aio.Metadata((DETAILS_KEY, status.SerializeToString()))
    return grpc.aio.AioRpcError(error.code, grpc.aio.Metadata(), trailers, details=error.message)


def test_a_window_refusal_becomes_429_with_the_draft_fields() -> None:
    refusal = ResourceExhaustedError(
        "too many sign-in attempts from this address; try again later",
        reason="RATE_LIMITED",
        retry_after=41.2,
        quota=Quota("login-address", 30, 60),
    )
    problem = problem_from_rpc_error(as_upstream_error(refusal))
    assert problem.status == 429 and problem.reason == "RATE_LIMITED"
    assert problem.quota == Quota("login-address", 30, 60, 0)
    assert problem.headers() == {
        "Retry-After": "42",
        "RateLimit-Policy": '"login-address";q=30;w=60',
        "RateLimit": '"login-address";r=0;t=42',
    }


def test_a_cap_on_what_is_held_has_no_window() -> None:
    refusal = ResourceExhaustedError(
        "too many streams", reason="RATE_LIMITED", retry_after=6, quota=Quota("streams", 2)
    )
    headers = problem_from_rpc_error(as_upstream_error(refusal)).headers()
    assert headers["RateLimit-Policy"] == '"streams";q=2'
    assert headers["RateLimit"] == '"streams";r=0;t=6'


def test_without_a_quota_only_retry_after() -> None:
    refusal = ResourceExhaustedError("you have 10 webhooks already", reason="LIMIT_REACHED", retry_after=0.2)
    assert problem_from_rpc_error(as_upstream_error(refusal)).headers() == {"Retry-After": "1"}
