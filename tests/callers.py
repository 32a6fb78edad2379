"""A test client that calls each method as a process its servicer allows.

Tests that exercise a whole service API (product_svc's catalog *and* its stock
reservations) would otherwise need one channel per identity and the knowledge of
which method wants which.  ``CallerStub`` reads the servicer's declarations
(common/identity.py): a method the edge may call goes out with the edge's
certificate, any other with the first process allowed (ReserveStock as
order_svc, HasPurchased as comment_svc).  Tests about the identities themselves
use ``cluster.channel(..., identity=...)`` directly (test_service_identity.py).
"""

from __future__ import annotations

import asyncio
import importlib
from typing import Any

import grpc

from common.identity import ATTRIBUTE
from devstack.cluster import Cluster

# The servicer behind each generated stub class.
SERVICERS = {
    "ProductServiceStub": "product_svc.server:ProductService",
    "OrderServiceStub": "order_svc.server:OrderService",
    "CartServiceStub": "order_svc.server:CartService",
    "UserServiceStub": "user_svc.server:UserService",
    "CommentServiceStub": "comment_svc.server:CommentService",
    "NotificationServiceStub": "notify_svc.server:NotificationService",
}


def allowed_callers(stub_class: type, method: str) -> frozenset[str]:
    module, _, name = SERVICERS[stub_class.__name__].partition(":")
    servicer = getattr(importlib.import_module(module), name)
    return frozenset(getattr(getattr(servicer, method), ATTRIBUTE))


class CallerStub:
    """``stub_class`` on ``target`` (a service name or host:port of the cluster)."""

    def __init__(self, cluster: Cluster, target: str, stub_class: type) -> None:
        self._cluster = cluster
        self._target = target
        self._stub_class = stub_class
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._stubs: dict[str, Any] = {}

    def identity_for(self, method: str) -> str:
        allowed = allowed_callers(self._stub_class, method)
        return "edge" if "edge" in allowed else sorted(allowed)[0]

    def __getattr__(self, method: str) -> Any:
        if not method[:1].isupper():
            raise AttributeError(method)
        identity = self.identity_for(method)
        if identity not in self._stubs:
            self._channels[identity] = self._cluster.channel(self._target, identity=identity)
            self._stubs[identity] = self._stub_class(self._channels[identity])
        return getattr(self._stubs[identity], method)

    async def close(self) -> None:
        await asyncio.gather(*(channel.close() for channel in self._channels.values()))
        self._channels.clear()
        self._stubs.clear()
