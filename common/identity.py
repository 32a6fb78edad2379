"""Which callers may use which method: declared beside each servicer method.

    class ProductService(product_pb2_grpc.ProductServiceServicer):
        @callers("order_svc")
        async def ReserveStock(self, request, context): ...

The caller is the shop identity of the peer's certificate (common/tls.py), read by
the one server interceptor (common/grpc_server.py), which answers PERMISSION_DENIED
naming the caller when it is not among the method's callers.  End-user tokens are
checked on top, as before.  ``current_caller`` holds the name during a call.
"""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar
from typing import Any, TypeVar

from common.tls import CALLERS

F = TypeVar("F", bound=Callable[..., Any])

ATTRIBUTE = "__shop_callers__"
# Any process with a certificate from the shop's CA (health and reflection are always so).
ANY = frozenset(CALLERS)

current_caller: ContextVar[str | None] = ContextVar("shop_caller", default=None)


def callers(*names: str | frozenset[str]) -> Callable[[F], F]:
    """Mark a servicer method with the processes that may call it."""
    allowed: set[str] = set()
    for name in names:
        allowed |= name if isinstance(name, frozenset) else {name}
    unknown = allowed - set(CALLERS)
    if unknown or not allowed:
        raise ValueError(f"unknown callers {sorted(unknown)}; known: {', '.join(CALLERS)}")

    def mark(method: F) -> F:
        setattr(method, ATTRIBUTE, frozenset(allowed))
        return method

    return mark


def declared_callers(servicer: Any, method: str) -> frozenset[str] | None:
    """The callers declared for ``method`` of ``servicer``; None when the servicer does not
    implement it (the generated base class answers UNIMPLEMENTED to anyone).  A method it
    implements without a declaration is a mistake: refused at start, never open to all."""
    implementation = getattr(type(servicer), method, None)
    if implementation is None or implementation.__module__.endswith("_pb2_grpc"):
        return None
    declared = getattr(implementation, ATTRIBUTE, None)
    if declared is None:
        raise TypeError(f"{type(servicer).__name__}.{method} declares no callers: add @callers(...) beside it")
    return frozenset(declared)
