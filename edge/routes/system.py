"""The edge's own endpoints: health, readiness, keys, the API description, metrics."""

from __future__ import annotations

import html
import json
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel
from shop.user.v1 import user_pb2
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response

from edge.api import Api
from edge.upstreams import call_options, upstreams

api = Api(upstreams=["user_svc"])  # the JWKS comes from user_svc


class Health(BaseModel):
    status: str


class Readiness(BaseModel):
    status: str
    upstreams: dict[str, str]


@api.operation("GET", "/healthz", summary="The edge process is alive", tag="system", response=Health)
async def healthz(request: Request) -> Health:
    return Health(status="ok")


@api.operation(
    "GET", "/readyz", summary="Every service behind the edge answers its gRPC health check", tag="system",
    response=Readiness, errors=(503,),
)  # fmt: skip
async def readyz(request: Request) -> Response:
    states = await upstreams(request).health()
    ready = all(state == "SERVING" for state in states.values())
    body = Readiness(status="ready" if ready else "not ready", upstreams=states)
    return JSONResponse(body.model_dump(), status_code=200 if ready else 503)


@api.operation(
    "GET", "/.well-known/jwks.json", summary="Public keys that verify access tokens (RFC 7517)", tag="system",
)  # fmt: skip
async def jwks(request: Request) -> Response:
    reply = await upstreams(request).user.GetJwks(user_pb2.GetJwksRequest(), **call_options(request))
    return Response(
        reply.jwks_json,
        media_type="application/jwk-set+json",
        headers={"Cache-Control": f"public, max-age={reply.max_age_seconds or 300}"},
    )


@api.operation("GET", "/openapi.json", summary="This API, as OpenAPI 3.1", tag="system")
async def openapi(request: Request) -> Response:
    document: dict[str, Any] = request.app.state.openapi
    return JSONResponse(document)


@api.operation("GET", "/docs", summary="Human-readable API reference", tag="system", content_type="text/html")
async def docs(request: Request) -> Response:
    document: dict[str, Any] = request.app.state.openapi
    rows = []
    for path, methods in document["paths"].items():
        for method, op in methods.items():
            content: dict[str, Any] = op.get("requestBody", {}).get("content", {})
            first: dict[str, Any] = next(iter(content.values()), {})
            schema = first.get("schema", {}).get("$ref", "").rsplit("/", 1)[-1]
            auth = "🔒" if op.get("security") else ""
            rows.append(
                f"<tr><td><code>{method.upper()}</code></td><td><code>{html.escape(path)}</code></td>"
                f"<td>{auth}</td><td>{html.escape(op['summary'])}</td><td>{html.escape(schema)}</td>"
                f"<td>{', '.join(sorted(op['responses']))}</td></tr>"
            )
    schemas = json.dumps(document["components"]["schemas"], indent=2)
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>shop API</title>
<style>body{{font-family:system-ui,sans-serif;margin:2rem}}td,th{{padding:.3rem .6rem;text-align:left;
border-bottom:1px solid #ddd}}pre{{background:#f6f6f6;padding:1rem;overflow:auto}}</style></head><body>
<h1>shop API</h1><p>Machine-readable: <a href="/openapi.json">/openapi.json</a> (OpenAPI 3.1).
Errors are <code>application/problem+json</code>. 🔒 needs <code>Authorization: Bearer &lt;access token&gt;</code>.</p>
<table><tr><th>method</th><th>path</th><th></th><th>summary</th><th>body</th><th>responses</th></tr>
{"".join(rows)}</table><h2>Schemas</h2><pre>{html.escape(schemas)}</pre></body></html>"""
    return HTMLResponse(page)


@api.operation("GET", "/metrics", summary="Prometheus metrics of the edge", tag="system", content_type="text/plain")
async def metrics(request: Request) -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
