"""The ceilings of the edge overhead scenario, run on the same machine as the system:

    python -m bench.refs http PORT    a plain Starlette app on uvicorn (one process, like
                                      the edge) answering GET /api/v1/products/{id} with
                                      a product-shaped JSON body
    python -m bench.refs grpc PORT    a plain grpc.aio server whose one method
                                      (bench.v1.EchoService/Echo, bench/echo.proto) sends
                                      the request's bytes back

Neither has middleware, interceptors, auth, validation or an upstream: they are
what Starlette/uvicorn and grpc.aio cost on their own.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

# What the edge answers for a seeded product, give or take the values.
PRODUCT: dict[str, Any] = {
    "id": "",
    "name": "Bench product 000042",
    "description": "A sturdy everyday thing, made to be listed, filtered, searched and bought.",
    "category_id": "6f1f6a8e-3c54-4f0e-9a51-4a9f7f9e0c11",
    "price": {"amount_minor": 2599, "currency": "EUR"},
    "stock": 1000,
    "attributes": {"color": "red", "size": "m"},
    "images": [],
    "status": "active",
    "weight_grams": 250,
    "created_at": "2026-01-01T00:00:00Z",
    "updated_at": "2026-01-01T00:00:00Z",
    "rating": {"count": 0, "average": 0.0, "histogram": [0, 0, 0, 0, 0]},
}


def serve_http(port: int) -> None:
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    async def product(request: Request) -> JSONResponse:
        return JSONResponse({**PRODUCT, "id": request.path_params["product_id"]})

    app = Starlette(routes=[Route("/api/v1/products/{product_id}", product)])
    uvicorn.run(app, host="127.0.0.1", port=port, log_config=None, access_log=False, server_header=False)


async def _serve_grpc(port: int) -> None:
    import grpc

    async def echo(request: bytes, context: object) -> bytes:
        return request

    # No (de)serializers: the handler gets and returns the raw message bytes.
    handler = grpc.method_handlers_generic_handler(
        "bench.v1.EchoService", {"Echo": grpc.unary_unary_rpc_method_handler(echo)}
    )
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((handler,))
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in ("http", "grpc"):
        print(__doc__, file=sys.stderr)
        return 2
    kind, port = argv[0], int(argv[1])
    if kind == "http":
        serve_http(port)
    else:  # the default event loop, like the shop services
        asyncio.run(_serve_grpc(port))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
