"""The gRPC server bootstrap every service uses.

``GrpcServer`` is a ``grpc.aio`` server on mutual TLS (a client certificate
from the shop's CA is required, common/tls.py) with the standard health service,
server reflection (a setting: on in development, off in production),
OpenTelemetry spans, and one interceptor that checks the calling process against
the callers each method declares (common/identity.py), verifies the end user's
access token, maps :class:`~common.errors.DomainError` to a status
with ``google.rpc`` details, logs failures and records Prometheus metrics.
``serve`` runs it until SIGTERM or SIGINT, then drains: health turns
NOT_SERVING at once, new calls are refused after ``shutdown_drain`` seconds,
and in-flight calls get ``shutdown_grace`` seconds.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any, TypeVar

import grpc
from google.protobuf.descriptor import ServiceDescriptor
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from prometheus_client import Counter, Histogram

from common import telemetry
from common.auth import TokenVerifier, current_principal
from common.errors import DomainError, PermissionDeniedError, UnavailableError, status_trailers
from common.identity import current_caller, declared_callers
from common.settings import ServiceSettings, load_settings
from common.tls import TlsFiles, TlsMaterialMissingError, peer_identity, server_credentials

log = logging.getLogger("shop.grpc")

if TYPE_CHECKING:  # the stubs are generic, the runtime classes are not
    Context = grpc.aio.ServicerContext[Any, Any]
    Handler = grpc.RpcMethodHandler[Any, Any]
else:
    Context = grpc.aio.ServicerContext
    Handler = grpc.RpcMethodHandler

HANDLED = Counter("grpc_server_handled_total", "RPCs completed, by method and status code", ["method", "code"])
LATENCY = Histogram(
    "grpc_server_handling_seconds",
    "RPC latency, by method",
    ["method"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)

MAX_MESSAGE_BYTES = 16 * 1024 * 1024
_SKIP = ("/grpc.health.", "/grpc.reflection.")


class _CallGuard:
    """Per-call work around a handler: which process calls (and may it), which end
    user, error mapping, metrics."""

    def __init__(self, verifier: TokenVerifier, method: str, allowed: frozenset[str] | None) -> None:
        self.verifier = verifier
        self.method = method
        # None: the servicer does not implement the method (UNIMPLEMENTED to anyone).
        self.allowed = allowed

    async def enter(self, context: Context) -> tuple[Any, Any]:
        caller = peer_identity(context.auth_context())
        if self.allowed is not None and caller not in self.allowed:
            who = caller or "a caller without a shop identity"
            name = self.method.rsplit("/", 1)[-1]
            raise PermissionDeniedError(
                f"{who} may not call {name}", reason="CALLER_NOT_ALLOWED", metadata={"caller": caller or ""}
            )
        principal = self.verifier.principal_from_metadata(context.invocation_metadata())
        return current_caller.set(caller), current_principal.set(principal)

    async def fail(self, context: Context, exc: BaseException) -> grpc.StatusCode:
        store = _store_unreachable(exc)
        if store is not None:
            log.warning("%s is unreachable in %s: %r", store, self.method, exc)
            exc = UnavailableError(
                f"{store} is unavailable to this service; nothing was changed, try again shortly",
                reason="DEPENDENCY_UNAVAILABLE",
                metadata={"dependency": store},
            )
        if isinstance(exc, DomainError):
            status = exc.to_status()
            await context.abort(exc.code, status.message, status_trailers(status))
        code = context.code()
        if isinstance(code, grpc.StatusCode) and code != grpc.StatusCode.OK:
            # The handler chose a status itself (e.g. the generated base class's
            # UNIMPLEMENTED) and then raised: keep its status.
            await context.abort(code, str(context.details() or code.name.lower()))
        log.exception("unhandled error in %s", self.method, exc_info=exc)
        await context.abort(grpc.StatusCode.INTERNAL, "internal error")
        raise AssertionError("unreachable")  # abort always raises

    def done(self, started: float, code: str) -> None:
        HANDLED.labels(self.method, code).inc()
        LATENCY.labels(self.method).observe(time.perf_counter() - started)


def _store_unreachable(exc: BaseException) -> str | None:
    """The data store whose connection was lost (the caller may retry: UNAVAILABLE), or None."""
    import pymongo.errors
    import redis.exceptions
    from sqlalchemy import exc as sa_exc

    if isinstance(exc, sa_exc.OperationalError | sa_exc.InterfaceError | sa_exc.TimeoutError) or (
        isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated
    ):
        return "postgres"
    if isinstance(exc, redis.exceptions.ConnectionError | redis.exceptions.TimeoutError):
        return "redis"
    if isinstance(exc, pymongo.errors.ConnectionFailure):
        return "mongodb"
    if isinstance(exc, ConnectionError):
        return "a data store"
    return None


def _code_of(exc: BaseException | None, context: Context) -> str:
    if exc is None:
        code = context.code()
        return code.name if isinstance(code, grpc.StatusCode) else "OK"
    if isinstance(exc, DomainError):
        return exc.code.name
    if isinstance(exc, grpc.aio.AbortError):
        code = context.code()
        return code.name if isinstance(code, grpc.StatusCode) else "UNKNOWN"
    return "INTERNAL"


def _wrap_unary(guard: _CallGuard, inner: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    async def behavior(request: Any, context: Context) -> Any:
        started, token = time.perf_counter(), None
        failure: BaseException | None = None
        try:
            token = await guard.enter(context)
            return await inner(request, context)
        except grpc.aio.AbortError as exc:
            failure = exc
            raise
        except Exception as exc:  # noqa: BLE001 - every failure becomes a status
            failure = exc
            await guard.fail(context, exc)
        finally:
            if token is not None:
                current_caller.reset(token[0])
                current_principal.reset(token[1])
            guard.done(started, _code_of(failure, context))

    return behavior


def _wrap_stream(guard: _CallGuard, inner: Callable[..., Any]) -> Callable[..., AsyncIterator[Any]]:
    async def behavior(request: Any, context: Context) -> AsyncIterator[Any]:
        started, token = time.perf_counter(), None
        failure: BaseException | None = None
        try:
            token = await guard.enter(context)
            async for response in inner(request, context):
                yield response
        except grpc.aio.AbortError as exc:
            failure = exc
            raise
        except Exception as exc:  # noqa: BLE001
            failure = exc
            await guard.fail(context, exc)
        finally:
            if token is not None:
                current_caller.reset(token[0])
                current_principal.reset(token[1])
            guard.done(started, _code_of(failure, context))

    return behavior


class ShopInterceptor(grpc.aio.ServerInterceptor):
    """Caller check, auth, error mapping and metrics for every shop RPC (not
    health/reflection: any process with a certificate from the shop's CA may use them).

    ``allowed`` maps each registered method (``/pkg.Service/Method``) to its declared
    callers; a method missing from it answers PERMISSION_DENIED to everyone."""

    def __init__(self, verifier: TokenVerifier, allowed: dict[str, frozenset[str] | None]) -> None:
        self._verifier = verifier
        self._allowed = allowed
        self._cache: dict[str, Handler] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        method = handler_call_details.method
        cached = self._cache.get(method)
        if cached is not None:
            return cached
        handler = await continuation(handler_call_details)
        if handler is None or method.startswith(_SKIP):
            return handler
        guard = _CallGuard(self._verifier, method, self._allowed.get(method, frozenset()))
        serializers = {
            "request_deserializer": handler.request_deserializer,
            "response_serializer": handler.response_serializer,
        }
        if handler.unary_unary:
            wrapped = grpc.unary_unary_rpc_method_handler(_wrap_unary(guard, handler.unary_unary), **serializers)
        elif handler.unary_stream:
            wrapped = grpc.unary_stream_rpc_method_handler(_wrap_stream(guard, handler.unary_stream), **serializers)
        elif handler.stream_unary:
            wrapped = grpc.stream_unary_rpc_method_handler(_wrap_unary(guard, handler.stream_unary), **serializers)
        else:
            assert handler.stream_stream is not None
            wrapped = grpc.stream_stream_rpc_method_handler(_wrap_stream(guard, handler.stream_stream), **serializers)
        self._cache[method] = wrapped
        return wrapped


class GrpcServer:
    """A service's gRPC server: add servicers, then ``await serve(server)``."""

    def __init__(self, settings: ServiceSettings, verifier: TokenVerifier | None = None) -> None:
        self.settings = settings
        self.verifier = verifier or TokenVerifier.from_file(
            settings.jwt_public_key_file, issuer=settings.jwt_issuer, audience=settings.jwt_audience
        )
        # Read now: a process without its TLS material stops at start with a clear message.
        self.tls = TlsFiles.from_settings(settings)
        self.credentials = server_credentials(self.tls)
        self.allowed: dict[str, frozenset[str] | None] = {}
        self.server = grpc.aio.server(
            interceptors=[*telemetry.grpc_server_interceptors(), ShopInterceptor(self.verifier, self.allowed)],
            options=[
                ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
                ("grpc.so_reuseport", 0),
            ],
        )
        self.health = health.aio.HealthServicer()
        self._names: list[str] = []
        self.port: int | None = None
        # Plaintext, health only (SHOP_HEALTH_PORT): for probes without a client certificate.
        self.health_server: grpc.aio.Server | None = None
        self.health_port: int | None = None

    def add(self, register: Callable[[Any, grpc.aio.Server], None], servicer: Any, service: ServiceDescriptor) -> None:
        """Register a servicer.

        ``add(add_FooServicer_to_server, FooServicer(), foo_pb2.DESCRIPTOR.services_by_name["Foo"])``
        """
        for method in service.methods:
            self.allowed[f"/{service.full_name}/{method.name}"] = declared_callers(servicer, method.name)
        register(servicer, self.server)
        self._names.append(service.full_name)

    async def start(self) -> int:
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        health_name = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name
        if self.settings.reflection:
            reflection.enable_server_reflection([*self._names, health_name, reflection.SERVICE_NAME], self.server)
        self.port = self.server.add_secure_port(f"{self.settings.host}:{self.settings.port}", self.credentials)
        if not self.port:
            raise RuntimeError(f"cannot listen on {self.settings.host}:{self.settings.port}")
        if self.settings.health_port:
            self.health_server = grpc.aio.server()
            health_pb2_grpc.add_HealthServicer_to_server(self.health, self.health_server)
            self.health_port = self.health_server.add_insecure_port(f"{self.settings.host}:{self.settings.health_port}")
            if not self.health_port:
                raise RuntimeError(f"cannot listen on {self.settings.host}:{self.settings.health_port}")
            await self.health_server.start()
        await self.server.start()
        for name in ("", *self._names):
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        log.info("serving", extra={"services": ",".join(self._names), "port": self.port})
        return self.port

    async def stop(self) -> None:
        """Drain: health says NOT_SERVING for ``shutdown_drain`` seconds (so load
        balancers stop sending), then new calls are refused and in-flight calls
        get ``shutdown_grace`` seconds to finish."""
        await self.health.enter_graceful_shutdown()
        await asyncio.sleep(self.settings.shutdown_drain)
        await self.server.stop(self.settings.shutdown_grace)
        if self.health_server is not None:
            await self.health_server.stop(0)


async def serve(server: GrpcServer, *, stopping: asyncio.Event | None = None) -> None:
    """Run until SIGTERM/SIGINT (or ``stopping`` is set), then shut down gracefully."""
    stop = stopping or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await server.start()
    await stop.wait()
    log.info("shutting down", extra={"grace_seconds": server.settings.shutdown_grace})
    await server.stop()


S = TypeVar("S", bound=ServiceSettings)


def main(name: str, settings_class: type[S], run: Callable[[S], Coroutine[Any, Any, int]]) -> int:
    """A service process: settings (a clear message when they are wrong),
    logging, tracing and metrics, then ``run`` until it returns the exit code."""
    settings = load_settings(settings_class, name)
    try:
        TlsFiles.from_settings(settings).read()
    except TlsMaterialMissingError as exc:
        print(f"{name}: {exc}", file=sys.stderr)
        return 2
    telemetry.setup(name, log_level=settings.log_level, metrics_port=settings.metrics_port, host=settings.host)
    return asyncio.run(run(settings))
