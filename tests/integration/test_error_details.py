"""Error details that would outgrow gRPC's trailing metadata (its soft limit is
8 KiB) arrive truncated and counted, over a real channel; a failure the
transport makes of trailers that are too large never reaches a client as such."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest
from shop.user.v1 import user_pb2, user_pb2_grpc

from common.errors import (
    DETAILS_KEY,
    MAX_STATUS_BYTES,
    OMITTED_VIOLATIONS,
    UnavailableError,
    from_upstream,
    problem_from_rpc_error,
)
from common.grpc_server import GrpcServer
from common.identity import callers
from common.settings import ServiceSettings
from common.validation import Violations
from devstack.cluster import Cluster


class Oversized(user_pb2_grpc.UserServiceServicer):
    """Register fails with a violation per line of a 1,000-line request; GetMe
    aborts without the shared interceptor's care, with 20 KB of trailers."""

    @callers("edge")
    async def Register(self, request, context):
        violations = Violations()
        for n in range(1000):
            violations.add(f"items[{n}].product_id", "must be a product id (UUID)")
        violations.check()

    @callers("edge")
    async def GetMe(self, request, context):
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "too much", ((DETAILS_KEY, b"x" * 20_000),))


@pytest.fixture
async def stub(cluster: Cluster) -> AsyncIterator[user_pb2_grpc.UserServiceStub]:
    files = cluster.tls_files("user_svc")  # served over the cluster's mutual TLS, called as the edge
    settings = ServiceSettings(
        shutdown_drain=0, shutdown_grace=1, tls_ca_file=files.ca, tls_cert_file=files.cert, tls_key_file=files.key
    )
    server = GrpcServer(settings)
    server.add(
        user_pb2_grpc.add_UserServiceServicer_to_server,
        Oversized(),  # type: ignore[abstract]
        user_pb2.DESCRIPTOR.services_by_name["UserService"],
    )
    port = await server.start()
    try:
        async with cluster.channel(f"127.0.0.1:{port}") as channel:
            yield user_pb2_grpc.UserServiceStub(channel)
    finally:
        await server.server.stop(0)


async def test_violations_past_the_metadata_budget_are_truncated_and_counted(stub) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.Register(user_pb2.RegisterRequest())
    error = raised.value
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT  # not RESOURCE_EXHAUSTED
    details = dict(error.trailing_metadata())[DETAILS_KEY]
    assert len(details) <= MAX_STATUS_BYTES
    problem = problem_from_rpc_error(error)
    assert problem.status == 400
    assert 10 < len(problem.errors) < 1000
    assert problem.errors[-1].field == f"items[{len(problem.errors) - 1}].product_id"
    assert problem.extra[OMITTED_VIOLATIONS] == 1000 - len(problem.errors)
    assert problem.detail == "invalid items[0].product_id, items[1].product_id, items[2].product_id and 997 more"


async def test_the_transports_own_failure_is_not_echoed(stub) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.GetMe(user_pb2.GetMeRequest())
    error = raised.value
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "metadata size exceeds" in (error.details() or "")
    problem = problem_from_rpc_error(error)
    assert problem.status == 502  # not a 429: no limit of the caller's was reached
    assert "metadata" not in problem.detail
    assert problem.detail == "a service this request needs failed to answer; try again shortly"
    # A service calling another passes it on as its dependency's failure, not as its own caller's limit.
    passed_on = from_upstream(error, "user_svc")
    assert isinstance(passed_on, UnavailableError) and passed_on.metadata == {"dependency": "user_svc"}
