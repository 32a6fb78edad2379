"""/docs is Swagger UI served from the edge's own files (no CDN), over the
document that declares the bearer scheme its *Authorize* button uses (issue 21)."""

from __future__ import annotations

import re
from html.parser import HTMLParser

import httpx
import pytest

from devstack.cluster import Cluster
from tests.e2e.helpers import assert_problem


@pytest.fixture(scope="module")
def stack(services) -> Cluster:
    return services("user_svc", "edge")


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self.scripts: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._in_script = tag == "script"
        self.urls += [value for name, value in attrs if name in ("src", "href") and value]

    def handle_data(self, data: str) -> None:
        if self._in_script:
            self.scripts.append(data)


async def test_docs_is_swagger_ui_from_local_assets_only(http: httpx.AsyncClient) -> None:
    page = await http.get("/docs")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    links = _Links()
    links.feed(page.text)
    assert links.urls, page.text
    assert all(url.startswith("/") and not url.startswith("//") for url in links.urls), links.urls
    assert not re.search(r"https?://", page.text), "the page names no outside host"
    assert any("SwaggerUIBundle" in script and '"/openapi.json"' in script for script in links.scripts)

    kinds = {".js": "text/javascript", ".css": "text/css", ".png": "image/png"}
    for url in links.urls:
        asset = await http.get(url)
        assert asset.status_code == 200, url
        assert asset.headers["content-type"].startswith(kinds[url[url.rindex(".") :]]), url
        assert asset.content
    bundle = await http.get("/docs/assets/swagger-ui-bundle.js")
    assert b"SwaggerUIBundle" in bundle.content

    assert_problem(await http.get("/docs/assets/..%2Fcore.py"), 404)
    assert_problem(await http.get("/docs/assets/index.html"), 404)


async def test_the_document_gives_authorize_a_bearer_scheme_to_use(http: httpx.AsyncClient) -> None:
    document = (await http.get("/openapi.json")).json()
    assert document["components"]["securitySchemes"]["bearerAuth"] == {
        "type": "http", "scheme": "bearer", "bearerFormat": "JWT",
    }  # fmt: skip
    me = document["paths"]["/api/v1/users/me"]["get"]
    assert me["security"] == [{"bearerAuth": []}]
