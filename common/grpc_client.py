"""gRPC client channels: one long-lived ``grpc.aio`` channel per upstream, on mutual
TLS: the channel trusts only the shop's CA and presents this process's certificate
(common/tls.py), which is how the service behind it knows who calls."""

from __future__ import annotations

from collections.abc import Sequence

import grpc

from common.grpc_server import MAX_MESSAGE_BYTES
from common.telemetry import grpc_client_interceptors
from common.tls import TlsFiles, channel_credentials

DEFAULT_TIMEOUT = 5.0


def _authority(target: str) -> list[tuple[str, str]]:
    """A static address list (``ipv4:10.0.0.1:8081,10.0.0.2:8081``, replicas named one by
    one) has no name of its own to check the servers' certificates against: its first
    address's host is used (every replica's certificate carries the hosts it serves on)."""
    scheme, _, addresses = target.partition(":")
    if scheme not in ("ipv4", "ipv6") or "," not in addresses:
        return []
    first = addresses.split(",", 1)[0]
    host = first.rsplit(":", 1)[0] if first.count(":") == 1 or first.startswith("[") else first
    return [("grpc.default_authority", host.strip("[]"))]


def channel(target: str, tls: TlsFiles) -> grpc.aio.Channel:
    """A mutual-TLS channel with tracing, keepalive and large-message options."""
    return grpc.aio.secure_channel(
        target,
        channel_credentials(tls),
        interceptors=grpc_client_interceptors(),
        options=[
            *_authority(target),
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.keepalive_time_ms", 30_000),
            # Reconnect quickly after a restart of the service behind the channel.
            ("grpc.initial_reconnect_backoff_ms", 100),
            ("grpc.min_reconnect_backoff_ms", 100),
            ("grpc.max_reconnect_backoff_ms", 1000),
            ("grpc.enable_retries", 1),
            # Spread calls over every address the name resolves to (replicas behind a headless Service).
            ("grpc.lb_policy_name", "round_robin"),
        ],
    )


def bearer(token: str | None) -> Sequence[tuple[str, str]]:
    """Metadata that forwards an access token, or none."""
    return (("authorization", f"Bearer {token}"),) if token else ()
