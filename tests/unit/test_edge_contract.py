"""The edge's OpenAPI document and its routes are the same set, both ways."""

from __future__ import annotations

from starlette.routing import Route

from edge.app import create_app


def test_every_route_is_described_and_every_description_routes() -> None:
    app = create_app()
    routed = {
        (method.lower(), route.path)
        for route in app.routes
        if isinstance(route, Route)
        for method in (route.methods or ())
        if method != "HEAD"
    }
    document = app.state.openapi
    described = {(method, path) for path, methods in document["paths"].items() for method in methods}
    assert routed == described
    assert document["openapi"].startswith("3.1")


def test_described_bodies_and_errors_resolve() -> None:
    document = create_app().state.openapi
    schemas = document["components"]["schemas"]
    for path, methods in document["paths"].items():
        for method, operation in methods.items():
            for response in operation["responses"].values():
                for content in response.get("content", {}).values():
                    ref = content["schema"]["$ref"].rsplit("/", 1)[-1]
                    assert ref in schemas, f"{method} {path}: {ref} is not in components"
            body = operation.get("requestBody")
            if body:
                assert set(body["content"]) <= {"application/json", "multipart/form-data"}
                for content in body["content"].values():
                    ref = content["schema"]["$ref"].rsplit("/", 1)[-1]
                    assert ref in schemas, f"{method} {path}: {ref} is not in components"
    register = document["paths"]["/api/v1/auth/register"]["post"]
    # 413 and 415: every JSON body is refused when too large or not JSON (edge/bodies.py read_json);
    # 429: the per-address registration limit; 503 and 504: user_svc is down, busy or too slow
    assert set(register["responses"]) == {"201", "400", "409", "413", "415", "429", "503", "504"}
    assert set(document["paths"]["/healthz"]["get"]["responses"]) == {"200"}
    assert document["paths"]["/api/v1/users/me"]["get"]["security"] == [{"bearerAuth": []}]


def test_uploads_are_described_as_multipart() -> None:
    document = create_app().state.openapi
    upload = document["paths"]["/api/v1/products/{product_id}/images"]["post"]
    ref = upload["requestBody"]["content"]["multipart/form-data"]["schema"]["$ref"].rsplit("/", 1)[-1]
    form = document["components"]["schemas"][ref]
    assert form["required"] == ["file"]
    assert form["properties"]["file"]["type"] == "string"
    assert form["properties"]["file"]["format"] == "binary"
    assert {"201", "400", "401", "403", "404", "413", "415"} <= set(upload["responses"])


def test_headers_ids_servers_and_tags_are_declared() -> None:
    document = create_app().state.openapi
    paths = document["paths"]

    def headers(path: str, method: str) -> set[str]:
        return {p["name"] for p in paths[path][method].get("parameters", []) if p["in"] == "header"}

    assert "X-Cart-Token" in headers("/api/v1/auth/login", "post")
    assert "Idempotency-Key" in headers("/api/v1/orders", "post")
    assert "Last-Event-ID" in headers("/api/v1/notifications/stream", "get")
    order_id = paths["/api/v1/orders/{order_id}/pay"]["post"]["parameters"][0]
    assert order_id["schema"] == {"type": "string", "format": "uuid"}
    assert document["servers"] and document["info"]["description"]
    assert {tag["name"] for tag in document["tags"]} == {op["tags"][0] for m in paths.values() for op in m.values()}
