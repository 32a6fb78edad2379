"""The edge's own endpoints: health, readiness, keys, the API description (its
Prometheus metrics are on their own port, ``SHOP_METRICS_PORT``)."""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from shop.user.v1 import user_pb2
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response

from edge.api import Api, Contract
from edge.clients import call_options, clients
from edge.problems import HttpProblemError

api = Api(upstreams=["user_svc"])  # the JWKS comes from user_svc


class Health(BaseModel):
    status: str


class Readiness(BaseModel):
    status: str
    upstreams: dict[str, str]


@api.operation(
    "GET", "/healthz", Contract(summary="The edge process is alive", tag="system", response=Health, upstream=False)
)
async def healthz(request: Request) -> Health:
    return Health(status="ok")


@api.operation("GET", "/readyz", Contract(
    summary="Every service behind the edge answers its gRPC health check", tag="system",
    response=Readiness, errors=(503,), upstream=False,
))  # fmt: skip
async def readyz(request: Request) -> Response:
    states = await clients(request).health()
    ready = all(state == "SERVING" for state in states.values())
    body = Readiness(status="ready" if ready else "not ready", upstreams=states)
    return JSONResponse(body.model_dump(), status_code=200 if ready else 503)


@api.operation("GET", "/.well-known/jwks.json", Contract(
    summary="Public keys that verify access tokens (RFC 7517)", tag="system",
))  # fmt: skip
async def jwks(request: Request) -> Response:
    reply = await clients(request).user.GetJwks(user_pb2.GetJwksRequest(), **call_options(request))
    return Response(
        reply.jwks_json,
        media_type="application/jwk-set+json",
        headers={"Cache-Control": f"public, max-age={reply.max_age_seconds or 300}"},
    )


@api.operation("GET", "/openapi.json", Contract(summary="This API, as OpenAPI 3.1", tag="system", upstream=False))
async def openapi(request: Request) -> Response:
    document: dict[str, Any] = request.app.state.openapi
    return JSONResponse(document)


# Swagger UI's own files, from the pinned PyPI package ``swagger-ui-py``: /docs needs no CDN.
_SWAGGER_SPEC = importlib.util.find_spec("swagger_ui")
_SWAGGER_STATIC = (
    Path(next(iter(_SWAGGER_SPEC.submodule_search_locations))) / "static"
    if _SWAGGER_SPEC is not None and _SWAGGER_SPEC.submodule_search_locations
    else None
)
DOCS_ASSETS = {
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "swagger-ui.css": "text/css; charset=utf-8",
    "favicon-32x32.png": "image/png",
}
_DOCS_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>shop API</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="stylesheet" href="/docs/assets/swagger-ui.css">
<link rel="icon" type="image/png" href="/docs/assets/favicon-32x32.png">
</head><body><div id="swagger-ui"></div>
<script src="/docs/assets/swagger-ui-bundle.js"></script>
<script>
window.ui = SwaggerUIBundle({
  url: "/openapi.json", dom_id: "#swagger-ui", deepLinking: true,
  persistAuthorization: true, tryItOutEnabled: true, validatorUrl: null,
  displayRequestDuration: true, showExtensions: true,
});
</script></body></html>"""


@api.operation(
    "GET",
    "/docs",
    Contract(summary="Interactive API reference (Swagger UI)", tag="system", content_type="text/html", upstream=False),
)
async def docs(request: Request) -> Response:
    """Swagger UI over ``/openapi.json``: press *Authorize*, paste an access token
    (from ``POST /api/v1/auth/login``) and *Try it out* sends it as a bearer token."""
    return HTMLResponse(_DOCS_PAGE, headers={"Cache-Control": "no-cache"})


@functools.cache
def _asset(name: str) -> bytes:
    assert _SWAGGER_STATIC is not None
    return (_SWAGGER_STATIC / name).read_bytes()


@api.operation("GET", "/docs/assets/{asset}", Contract(
    summary="The files of the interactive API reference", tag="system",
               errors=(404,), upstream=False,
))  # fmt: skip
async def docs_asset(request: Request) -> Response:
    name = request.path_params["asset"]
    media_type = DOCS_ASSETS.get(name)
    if media_type is None or _SWAGGER_STATIC is None:
        raise HttpProblemError(404, f"no such documentation asset: {name!r}")
    return Response(_asset(name), media_type=media_type, headers={"Cache-Control": "public, max-age=86400"})
