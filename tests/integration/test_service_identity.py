"""Service identity against the real servers: every gRPC service wants a client
certificate from the cluster's CA (mutual TLS), and each method answers only the
processes its servicer declares (common/identity.py); reservations are capped.

(A forged Login client address from another caller than the edge:
test_user_svc.py::test_a_client_address_from_another_caller_than_the_edge_is_ignored.)
"""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from shop.order.v1 import order_pb2, order_pb2_grpc
from shop.product.v1 import product_pb2, product_pb2_grpc

from common import tls
from common.errors import problem_from_rpc_error
from common.settings import ServiceSettings
from devstack.cluster import Cluster
from devstack.paths import REPO
from tests.comment_helpers import caller, create_product

GRPC_SERVICES = ("user_svc", "product_svc", "order_svc", "comment_svc", "notify_svc")


@pytest.fixture(scope="module")
def stack(services: Callable[..., Cluster]) -> Cluster:
    return services(*GRPC_SERVICES)


def _health(channel: grpc.Channel) -> int:
    reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
    return int(reply.status)


def _refused(channel: grpc.Channel) -> grpc.StatusCode:
    with channel, pytest.raises(grpc.RpcError) as raised:
        _health(channel)
    code = raised.value.code()
    assert isinstance(code, grpc.StatusCode)
    return code


@pytest.mark.parametrize("service", GRPC_SERVICES)
def test_only_clients_with_a_certificate_of_the_cluster_ca_are_served(
    stack: Cluster, service: str, tmp_path: Path
) -> None:
    target = stack.addr(service)
    # Plaintext: the TLS listener never gets a handshake.
    assert _refused(grpc.insecure_channel(target)) == grpc.StatusCode.UNAVAILABLE
    # TLS that trusts the server, but without a client certificate.
    ca = Path(stack.tls_files("edge").ca).read_bytes()
    assert _refused(grpc.secure_channel(target, grpc.ssl_channel_credentials(ca))) == grpc.StatusCode.UNAVAILABLE
    # A certificate with a shop identity (the edge's name) issued by another CA.
    tls.ensure_identities(tmp_path, ["edge"])
    foreign = tls.files_in(tmp_path, "edge")
    credentials = grpc.ssl_channel_credentials(ca, Path(foreign.key).read_bytes(), Path(foreign.cert).read_bytes())
    assert _refused(grpc.secure_channel(target, credentials)) == grpc.StatusCode.UNAVAILABLE
    # The cluster's own certificate is served.
    with stack.sync_channel(service, identity="edge") as channel:
        assert _health(channel) == health_pb2.HealthCheckResponse.SERVING


def _reserve(product_id: str, quantity: int = 1) -> product_pb2.ReserveStockRequest:
    return product_pb2.ReserveStockRequest(
        reservation_id=str(uuid.uuid4()), items=[product_pb2.ReservationItem(product_id=product_id, quantity=quantity)]
    )


async def test_reservations_answer_order_svc_only(stack: Cluster) -> None:
    product_id = await create_product(stack, caller(stack, "admin"), stock=5)
    async with stack.channel("product_svc", identity="edge") as edge:
        with pytest.raises(grpc.aio.AioRpcError) as denied:
            await product_pb2_grpc.ProductServiceStub(edge).ReserveStock(_reserve(product_id))
    assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert denied.value.details() == "edge may not call ReserveStock"
    problem = problem_from_rpc_error(denied.value)
    assert problem.reason == "CALLER_NOT_ALLOWED"

    async with stack.channel("product_svc", identity="order_svc") as orders:
        stub = product_pb2_grpc.ProductServiceStub(orders)
        reserved = await stub.ReserveStock(_reserve(product_id, 2))
        assert reserved.reservation.status == product_pb2.RESERVATION_STATUS_RESERVED
        # Still a public read for the edge, and for order_svc (its order lines' prices).
        got = await stub.BatchGetProducts(product_pb2.BatchGetProductsRequest(product_ids=[product_id]))
    assert got.products[0].stock == 3
    async with stack.channel("product_svc", identity="notify_svc") as notify:
        with pytest.raises(grpc.aio.AioRpcError) as stranger:
            await product_pb2_grpc.ProductServiceStub(notify).ReleaseReservation(
                product_pb2.ReleaseReservationRequest(reservation_id=reserved.reservation.reservation_id)
            )
    assert stranger.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "notify_svc" in (stranger.value.details() or "")


async def test_the_verified_purchase_lookup_answers_comment_svc_only(stack: Cluster) -> None:
    buyer = caller(stack)
    request = order_pb2.HasPurchasedRequest(user_id=buyer.user_id, product_id=str(uuid.uuid4()))
    async with stack.channel("order_svc", identity="edge") as edge:
        with pytest.raises(grpc.aio.AioRpcError) as denied:
            await order_pb2_grpc.OrderServiceStub(edge).HasPurchased(request, metadata=buyer.metadata)
    assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert denied.value.details() == "edge may not call HasPurchased"
    async with stack.channel("order_svc", identity="comment_svc") as comments:
        reply = await order_pb2_grpc.OrderServiceStub(comments).HasPurchased(request, metadata=buyer.metadata)
    assert reply.purchased is False


async def test_reservations_are_capped_in_lines_and_units(stack: Cluster) -> None:
    product_id = await create_product(stack, caller(stack, "admin"), stock=5)
    async with stack.channel("product_svc", identity="order_svc") as orders:
        stub = product_pb2_grpc.ProductServiceStub(orders)
        with pytest.raises(grpc.aio.AioRpcError) as too_many_units:
            await stub.ReserveStock(_reserve(product_id, 10_001))
        lines = [product_pb2.ReservationItem(product_id=str(uuid.uuid4()), quantity=1) for _ in range(101)]
        with pytest.raises(grpc.aio.AioRpcError) as too_many_lines:
            await stub.ReserveStock(product_pb2.ReserveStockRequest(reservation_id=str(uuid.uuid4()), items=lines))
    assert too_many_units.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert problem_from_rpc_error(too_many_units.value).body()["errors"] == [
        {"field": "items[0].quantity", "message": "must be between 1 and 10000"}
    ]
    assert too_many_lines.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert {"field": "items", "message": "at most 100 items"} in problem_from_rpc_error(too_many_lines.value).body()[
        "errors"
    ]


def test_reflection_is_on_in_development_and_off_in_production() -> None:
    assert ServiceSettings().reflection is True
    assert ServiceSettings(env="production").reflection is False
    assert ServiceSettings(env="production", grpc_reflection=True).reflection is True


@pytest.mark.parametrize("mode", ["production", "development"])
@pytest.mark.parametrize("package", ["notify_svc", "edge"])
def test_a_process_without_tls_material_stops_with_a_clear_message(stack: Cluster, package: str, mode: str) -> None:
    env = {k: v for k, v in stack.service_env_for(package).items() if not k.startswith("SHOP_TLS_")}
    env["SHOP_ENV"] = mode
    if package == "edge" and mode == "production":  # production takes real payments only
        env.update(SHOP_PAYMENT_PROCESSOR="stripe", SHOP_STRIPE_WEBHOOK_SECRET="whsec_identity_test")
    ran = subprocess.run(
        [sys.executable, "-m", package], env=env, cwd=REPO, capture_output=True, text=True, timeout=60, check=False
    )
    assert ran.returncode != 0
    assert f"{package}: SHOP_TLS_CA_FILE, SHOP_TLS_CERT_FILE, SHOP_TLS_KEY_FILE not set" in ran.stderr
    # A file that cannot be read is named, its contents never shown.
    env.update(stack.tls_env(package), SHOP_TLS_KEY_FILE="/nonexistent/key.pem")
    ran = subprocess.run(
        [sys.executable, "-m", package], env=env, cwd=REPO, capture_output=True, text=True, timeout=60, check=False
    )
    assert ran.returncode != 0
    assert "cannot read the TLS private key file /nonexistent/key.pem" in ran.stderr
    assert "BEGIN" not in ran.stderr
