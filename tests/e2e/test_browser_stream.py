"""The README's live-notifications page, loaded in a real headless Chromium
(Debian's ``chromium``, driven by Playwright), sees an announcement arrive
through a single-use stream ticket and plain ``EventSource`` (issue 21)."""

from __future__ import annotations

import asyncio
import re
import socket
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response, StreamingResponse
from starlette.routing import Route

from devstack.cluster import Cluster
from tests.e2e.helpers import admin_session, assert_problem, bearer, register

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]  # fmt: skip
README = Path(__file__).resolve().parents[2] / "README.md"


@pytest.fixture(scope="module")
def stack(services) -> Cluster:
    return services("user_svc", "notify_svc", "edge")


def readme_page() -> str:
    text = README.read_text()
    found = re.search(r"<!-- browser-example:[^>]*-->\n```html\n(.*?)```", text, re.S)
    assert found, "the README shows the browser example"
    return found[1]


@pytest.fixture
async def site(stack: Cluster) -> AsyncIterator[tuple[str, list[str]]]:
    """A loopback origin serving the README's page at ``/`` and passing ``/api/``
    on to the edge (as a reverse proxy in front of both would), so the page's
    relative URLs reach the edge from the page's own origin."""
    pages: list[str] = []
    edge = httpx.AsyncClient(base_url=f"http://{stack.addr('edge')}", timeout=httpx.Timeout(30, read=None))

    async def page(request: Request) -> Response:
        return HTMLResponse(pages[-1])

    async def proxy(request: Request) -> Response:
        headers = [(k, v) for k, v in request.headers.items() if k not in ("host", "content-length", "connection")]
        outgoing = edge.build_request(
            request.method, request.url.path, params=request.url.query, headers=headers, content=await request.body()
        )
        upstream = await edge.send(outgoing, stream=True)
        kept = {k: v for k, v in upstream.headers.items() if k in ("content-type", "cache-control", "x-trace-id")}
        return StreamingResponse(
            upstream.aiter_raw(),
            status_code=upstream.status_code,
            headers=kept,
            background=BackgroundTask(upstream.aclose),
        )

    app = Starlette(routes=[Route("/", page), Route("/api/{rest:path}", proxy, methods=["GET", "POST"])])
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off"))
    serving = asyncio.create_task(server.serve())
    while not server.started:
        assert not serving.done(), "the page's server did not start"
        await asyncio.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}/", pages
    finally:
        server.should_exit = True
        await serving
        await edge.aclose()


async def test_the_readme_page_sees_a_notification_arrive_in_headless_chromium(
    http: httpx.AsyncClient, stack: Cluster, site: tuple[str, list[str]]
) -> None:
    from playwright.async_api import async_playwright

    url, pages = site
    buyer = await register(http)
    admin = await admin_session(http, stack)
    pages.append(readme_page().replace("ACCESS_TOKEN", buyer["tokens"]["access_token"]))
    title = f"Live {uuid.uuid4().hex[:8]}"

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = await browser.new_page()
            opened_stream = page.expect_response(lambda r: "/api/v1/notifications/stream?" in r.url)
            async with opened_stream as streamed:
                await page.goto(url)
            stream = await streamed.value
            assert stream.status == 200
            # The edge answers the stream's headers only once notify_svc has subscribed it.
            published = await http.post(
                "/api/v1/admin/announcements", headers=bearer(admin), json={"title": title, "body": "Hello, browser"}
            )
            assert published.status_code == 201, published.text
            await page.locator("#feed li", has_text=title).wait_for(timeout=30_000)
            seen: Any = await page.locator("#feed li").all_inner_texts()
            assert title in seen
        finally:
            await browser.close()

    # The ticket the browser used is spent.
    ticket = parse_qs(urlsplit(stream.url).query)["ticket"][0]
    again = await http.get("/api/v1/notifications/stream", params={"ticket": ticket})
    assert "ticket" in assert_problem(again, 401)["detail"]
