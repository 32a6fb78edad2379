"""The shared gRPC bootstrap: mutual TLS, health, reflection (through the real grpcurl),
auth, error mapping to google.rpc details and back to problem+json, graceful drain."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import grpc
import pytest
import redis.exceptions
from cryptography.hazmat.primitives import serialization
from grpc_health.v1 import health_pb2, health_pb2_grpc
from shop.user.v1 import user_pb2, user_pb2_grpc

from common.auth import TokenSigner, TokenVerifier, generate_key_pair, require_admin, require_user
from common.errors import FieldViolation, InvalidArgumentError, problem_from_rpc_error
from common.grpc_server import GrpcServer
from common.identity import callers
from common.settings import ServiceSettings
from devstack.cluster import Cluster
from devstack.process import free_port


class SampleUsers(user_pb2_grpc.UserServiceServicer):
    """A tiny servicer on the real contract, built only to exercise the bootstrap."""

    def __init__(self) -> None:
        self.release = asyncio.Event()

    @callers("edge")
    async def GetMe(self, request, context):
        principal = require_user()
        return user_pb2.GetMeResponse(user=user_pb2.User(id=principal.user_id, role=user_pb2.ROLE_CUSTOMER))

    @callers("edge")
    async def Register(self, request, context):
        raise InvalidArgumentError(
            "the request has invalid fields",
            violations=[FieldViolation("password", "must be at least 10 characters")],
            reason="VALIDATION_FAILED",
        )

    @callers("edge")
    async def ListUsers(self, request, context):
        require_admin()
        await self.release.wait()  # a slow call, to watch the drain
        return user_pb2.ListUsersResponse()

    @callers("edge")
    async def GetJwks(self, request, context):
        raise RuntimeError("a bug")

    @callers("edge")
    async def ChangePassword(self, request, context):
        raise redis.exceptions.ConnectionError("Redis went away")


@pytest.fixture
async def sample(cluster: Cluster) -> AsyncIterator[tuple[GrpcServer, SampleUsers, TokenSigner]]:
    private, public = generate_key_pair()
    signer = TokenSigner(
        serialization.load_pem_private_key(private, None),  # type: ignore[arg-type]
        issuer="shop",
        audience="shop",
        ttl=60,
    )
    files = cluster.tls_files("user_svc")  # the cluster's CA: its other certificates are accepted
    settings = ServiceSettings(
        shutdown_drain=1, shutdown_grace=5, tls_ca_file=files.ca, tls_cert_file=files.cert, tls_key_file=files.key
    )
    server = GrpcServer(settings, TokenVerifier(public, issuer="shop", audience="shop"))
    servicer = SampleUsers()  # type: ignore[abstract]
    server.add(
        user_pb2_grpc.add_UserServiceServicer_to_server, servicer, user_pb2.DESCRIPTOR.services_by_name["UserService"]
    )
    await server.start()
    try:
        yield server, servicer, signer
    finally:
        servicer.release.set()
        await server.server.stop(0)


async def grpcurl(cluster: Cluster, *args: str) -> str:
    process = await asyncio.create_subprocess_exec(
        *cluster.grpcurl(*args), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await process.communicate()
    assert process.returncode == 0, err.decode()
    return out.decode()


async def test_grpcurl_list_describe_and_health(sample, cluster: Cluster) -> None:
    server, _, _ = sample
    target = f"127.0.0.1:{server.port}"
    services = (await grpcurl(cluster, target, "list")).split()
    assert {"shop.user.v1.UserService", "grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"} <= set(
        services
    )
    described = await grpcurl(cluster, target, "describe", "shop.user.v1.UserService")
    assert "rpc Register ( .shop.user.v1.RegisterRequest ) returns ( .shop.user.v1.RegisterResponse );" in described
    health = json.loads(await grpcurl(cluster, target, "grpc.health.v1.Health/Check"))
    assert health == {"status": "SERVING"}
    named = json.loads(
        await grpcurl(cluster, "-d", '{"service": "shop.user.v1.UserService"}', target, "grpc.health.v1.Health/Check")
    )
    assert named == {"status": "SERVING"}


async def test_auth_and_error_mapping(sample, cluster: Cluster) -> None:
    server, _, signer = sample
    async with cluster.channel(f"127.0.0.1:{server.port}") as channel:
        stub = user_pb2_grpc.UserServiceStub(channel)

        with pytest.raises(grpc.aio.AioRpcError) as anonymous:
            await stub.GetMe(user_pb2.GetMeRequest())
        assert anonymous.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert problem_from_rpc_error(anonymous.value).status == 401

        token, _ = signer.sign("user-7", "customer")
        me = await stub.GetMe(user_pb2.GetMeRequest(), metadata=[("authorization", f"Bearer {token}")])
        assert me.user.id == "user-7"

        with pytest.raises(grpc.aio.AioRpcError) as forged:
            await stub.GetMe(user_pb2.GetMeRequest(), metadata=[("authorization", f"Bearer {token[:-4]}AAAA")])
        assert forged.value.code() == grpc.StatusCode.UNAUTHENTICATED

        with pytest.raises(grpc.aio.AioRpcError) as not_admin:
            await stub.ListUsers(user_pb2.ListUsersRequest(), metadata=[("authorization", f"Bearer {token}")])
        assert not_admin.value.code() == grpc.StatusCode.PERMISSION_DENIED

        with pytest.raises(grpc.aio.AioRpcError) as invalid:
            await stub.Register(user_pb2.RegisterRequest())
        assert invalid.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        problem = problem_from_rpc_error(invalid.value)
        assert problem.status == 400
        assert problem.body()["errors"] == [{"field": "password", "message": "must be at least 10 characters"}]
        assert problem.reason == "VALIDATION_FAILED"

        with pytest.raises(grpc.aio.AioRpcError) as bug:
            await stub.GetJwks(user_pb2.GetJwksRequest())
        assert bug.value.code() == grpc.StatusCode.INTERNAL
        assert bug.value.details() == "internal error"  # no internals leak
        assert problem_from_rpc_error(bug.value).status == 500

        with pytest.raises(grpc.aio.AioRpcError) as store_down:
            await stub.ChangePassword(user_pb2.ChangePasswordRequest())
        assert store_down.value.code() == grpc.StatusCode.UNAVAILABLE
        assert problem_from_rpc_error(store_down.value).status == 503
        assert problem_from_rpc_error(store_down.value).reason == "DEPENDENCY_UNAVAILABLE"

        with pytest.raises(grpc.aio.AioRpcError) as missing:
            await stub.Logout(user_pb2.LogoutRequest())
        assert missing.value.code() == grpc.StatusCode.UNIMPLEMENTED


async def test_graceful_shutdown_drains_in_flight_calls(sample, cluster: Cluster) -> None:
    server, servicer, signer = sample
    token, _ = signer.sign("admin-1", "admin")
    async with cluster.channel(f"127.0.0.1:{server.port}") as channel:
        stub = user_pb2_grpc.UserServiceStub(channel)
        health = health_pb2_grpc.HealthStub(channel)
        in_flight = asyncio.ensure_future(
            stub.ListUsers(user_pb2.ListUsersRequest(), metadata=[("authorization", f"Bearer {token}")])
        )
        await asyncio.sleep(0.2)
        stopping = asyncio.ensure_future(server.stop())
        await asyncio.sleep(0.2)
        # Health says NOT_SERVING at once, while the in-flight call still runs.
        status = await health.Check(health_pb2.HealthCheckRequest())
        assert status.status == health_pb2.HealthCheckResponse.NOT_SERVING
        await asyncio.sleep(1.0)  # past the drain: new calls are refused now
        assert not in_flight.done()
        with pytest.raises(grpc.aio.AioRpcError):
            await health.Check(health_pb2.HealthCheckRequest(), timeout=1)
        servicer.release.set()  # the in-flight call still completes within the grace period
        assert isinstance(await in_flight, user_pb2.ListUsersResponse)
        await stopping


class Undeclared(user_pb2_grpc.UserServiceServicer):
    async def GetMe(self, request, context):  # no @callers: a mistake, refused at start
        return user_pb2.GetMeResponse()


async def test_a_method_without_declared_callers_is_refused_at_start(cluster: Cluster) -> None:
    files = cluster.tls_files("user_svc")
    settings = ServiceSettings(tls_ca_file=files.ca, tls_cert_file=files.cert, tls_key_file=files.key)
    server = GrpcServer(settings, TokenVerifier(generate_key_pair()[1], issuer="shop", audience="shop"))
    with pytest.raises(TypeError, match=r"Undeclared.GetMe declares no callers"):
        server.add(
            user_pb2_grpc.add_UserServiceServicer_to_server,
            Undeclared(),  # type: ignore[abstract]
            user_pb2.DESCRIPTOR.services_by_name["UserService"],
        )


async def test_production_has_no_reflection_and_probes_get_a_plaintext_health_port(cluster: Cluster) -> None:
    files = cluster.tls_files("user_svc")
    settings = ServiceSettings(
        env="production", health_port=free_port(), tls_ca_file=files.ca, tls_cert_file=files.cert,
        tls_key_file=files.key,
    )  # fmt: skip
    server = GrpcServer(settings, TokenVerifier(generate_key_pair()[1], issuer="shop", audience="shop"))
    server.add(
        user_pb2_grpc.add_UserServiceServicer_to_server,
        SampleUsers(),  # type: ignore[abstract]
        user_pb2.DESCRIPTOR.services_by_name["UserService"],
    )
    await server.start()
    try:
        target = f"127.0.0.1:{server.port}"
        listed = await asyncio.create_subprocess_exec(
            *cluster.grpcurl(target, "list"), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        _, err = await listed.communicate()
        assert listed.returncode != 0 and "does not support the reflection API" in err.decode()
        # The health port answers without a certificate, and serves nothing else.
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.health_port}") as plain:
            status = await health_pb2_grpc.HealthStub(plain).Check(health_pb2.HealthCheckRequest(), timeout=5)
            assert status.status == health_pb2.HealthCheckResponse.SERVING
            with pytest.raises(grpc.aio.AioRpcError) as other:
                await user_pb2_grpc.UserServiceStub(plain).Register(user_pb2.RegisterRequest(), timeout=5)
            assert other.value.code() == grpc.StatusCode.UNIMPLEMENTED
    finally:
        await server.server.stop(0)
        assert server.health_server is not None
        await server.health_server.stop(0)
