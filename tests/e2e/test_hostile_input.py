"""The edge against hostile input, through one keep-alive connection: bodies that
break parsers answer 4xx problem+json (never 500) and the connection stays usable;
forwarding headers are believed only from trusted proxies."""

from __future__ import annotations

import http.client
import json
import random
import sys
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from devstack.cluster import Cluster
from devstack.paths import REPO
from devstack.process import Process, free_port
from tests.e2e.helpers import PASSWORD

DEEP = 10_000
JSON = "application/json"
ORDER = {"items": [{"product_id": str(uuid.uuid4()), "quantity": 1}], "shipping_method": "standard"}


@pytest.fixture(scope="module")
def edge_cluster(services: Callable[..., Cluster]) -> Cluster:
    return services("user_svc", "edge")


class Connection:
    """One HTTP/1.1 connection that is never reopened behind the test's back."""

    def __init__(self, address: str, source: str | None = None) -> None:
        host, port = address.rsplit(":", 1)
        self.http = http.client.HTTPConnection(
            host, int(port), timeout=15, source_address=(source, 0) if source else None
        )
        self.http.connect()
        self.http.auto_open = 0  # a closed connection raises instead of reconnecting
        self.socket = self.http.sock

    def send(
        self, method: str, path: str, body: bytes | None = None, **headers: str
    ) -> tuple[int, dict[str, str], Any]:
        sent = {key.replace("_", "-"): value for key, value in headers.items()}
        self.http.request(method, path, body=body, headers=sent)
        response = self.http.getresponse()
        data = response.read()
        assert self.http.sock is self.socket, "the edge closed the connection"
        received = {key.lower(): value for key, value in response.getheaders()}
        assert received.get("connection") != "close", "the edge closes the connection after this answer"
        parsed = json.loads(data) if data and "json" in received.get("content-type", "") else data
        return response.status, received, parsed

    def post_json(self, path: str, value: Any, **headers: str) -> tuple[int, dict[str, str], Any]:
        return self.send("POST", path, json.dumps(value).encode(), content_type=JSON, **headers)

    def close(self) -> None:
        self.http.close()


@pytest.fixture
def connection(edge_cluster: Cluster) -> Iterator[Connection]:
    opened = Connection(edge_cluster.addr("edge"))
    yield opened
    opened.close()


@pytest.fixture(scope="module")
def account(edge_cluster: Cluster) -> str:
    email = f"hostile.{uuid.uuid4().hex[:10]}@example.com"
    body = json.dumps({"email": email, "password": PASSWORD, "display_name": "Mallory"}).encode()
    request = urllib.request.Request(
        f"http://{edge_cluster.addr('edge')}/api/v1/auth/register", body, {"Content-Type": JSON}
    )
    with urllib.request.urlopen(request, timeout=15) as response:
        assert response.status == 201
    return email


def assert_problem(answer: tuple[int, dict[str, str], Any], status: int, *words: str) -> str:
    code, headers, body = answer
    assert code == status, body
    assert headers["content-type"].startswith("application/problem+json")
    assert body["status"] == status
    detail: str = body["detail"]
    for word in words:
        assert word in detail, detail
    return detail


def signs_in(connection: Connection, email: str) -> None:
    """The next request on the same connection reaches user_svc and succeeds."""
    code, _, body = connection.post_json("/api/v1/auth/login", {"email": email, "password": PASSWORD})
    assert code == 200, body
    assert body["tokens"]["access_token"]


def nested(field: str) -> bytes:
    return b'{"' + field.encode() + b'":' + b"[" * DEEP + b"]" * DEEP + b"}"


def test_deeply_nested_login_answers_400_and_the_connection_stays_usable(connection: Connection, account: str) -> None:
    detail = assert_problem(connection.send("POST", "/api/v1/auth/login", nested("email"), content_type=JSON), 400)
    assert "nested too deeply" in detail
    assert_problem(connection.send("POST", "/api/v1/auth/login", b"[" * DEEP, content_type=JSON), 400)
    signs_in(connection, account)


def test_deeply_nested_order_answers_400_and_the_connection_stays_usable(connection: Connection, account: str) -> None:
    code, _, session = connection.post_json("/api/v1/auth/login", {"email": account, "password": PASSWORD})
    assert code == 200
    bearer = f"Bearer {session['tokens']['access_token']}"
    answer = connection.send("POST", "/api/v1/orders", nested("items"), content_type=JSON, authorization=bearer)
    assert_problem(answer, 400, "nested too deeply")
    # The same connection still takes an order through (this one names no real product: 4xx from order_svc).
    code, _, body = connection.post_json("/api/v1/orders", ORDER, authorization=bearer)
    assert 400 <= code < 500 and code != 413, body


HOSTILE = {
    # name: (body, content type, extra headers, status, words of the detail)
    "huge integer": (b'{"email": "a@example.com", "password": ' + b"9" * 100_000 + b"}", JSON, {}, 400, ["digits"]),
    "huge float": (b'{"email": "a@example.com", "password": 1e999}', JSON, {}, 400, []),
    "NaN": (b'{"email": NaN, "password": "x"}', JSON, {}, 400, ["NaN"]),
    "Infinity": (b'{"email": "a@example.com", "password": -Infinity}', JSON, {}, 400, ["Infinity"]),
    "invalid UTF-8": (b'{"email": "\xff\xfe@example.com", "password": "x"}', JSON, {}, 400, ["UTF-8"]),
    "UTF-16 with a BOM": ('{"email": "a@example.com", "password": "x"}'.encode("utf-16"), JSON, {}, 400, ["UTF-8"]),
    "UTF-16 without BOM": ('{"email": "a@e.com"}'.encode("utf-16-le"), JSON, {}, 400, ["UTF-8"]),
    "lone surrogate": (b'{"email": "\\ud800@example.com", "password": "x"}', JSON, {}, 400, ["surrogate"]),
    "NUL in a string": (b'{"email": "a\\u0000@example.com", "password": "x"}', JSON, {}, 401, []),
    "not an object": (b"[1, 2, 3]", JSON, {}, 400, ["object"]),
    "truncated": (b'{"email": "a@example.com", "pass', JSON, {}, 400, ["not valid JSON"]),
    "latin-1 charset": (b'{"email": "a@example.com", "password": "x"}', f"{JSON}; charset=latin-1", {}, 415, ["UTF-8"]),
    "text/plain": (b'{"email": "a@example.com", "password": "x"}', "text/plain", {}, 415, ["application/json"]),
    "form": (b"email=a%40example.com&password=x", "application/x-www-form-urlencoded", {}, 415, ["JSON"]),
    "gzip": (b"\x1f\x8b\x08\x00", JSON, {"content_encoding": "gzip"}, 415, ["compressed"]),
    "oversized": (b'{"email": "' + b"a" * (2 * 1024 * 1024) + b'"}', JSON, {}, 413, ["larger than"]),
}


@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_login_bodies_answer_4xx_problems(connection: Connection, account: str, name: str) -> None:
    body, content_type, headers, status, words = HOSTILE[name]
    if status == 401:  # refused by user_svc: no such account
        code, received, answer = connection.send(
            "POST", "/api/v1/auth/login", body, content_type=content_type, **headers
        )
        assert 400 <= code < 500 and received["content-type"].startswith("application/problem+json"), answer
    else:
        assert_problem(connection.send("POST", "/api/v1/auth/login", body, content_type=content_type, **headers),
                       status, *words)  # fmt: skip
    signs_in(connection, account)


def test_every_json_route_refuses_deep_nesting(connection: Connection) -> None:
    _, _, document = connection.send("GET", "/openapi.json")
    routes = [
        (method.upper(), path)
        for path, operations in document["paths"].items()
        for method, operation in operations.items()
        if JSON in operation.get("requestBody", {}).get("content", {})
    ]
    assert len(routes) > 10
    for method, path in routes:
        concrete = "/".join(str(uuid.uuid4()) if part.startswith("{") else part for part in path.split("/"))
        answer = connection.send(method, concrete, nested("x"), content_type=JSON, authorization="Bearer x")
        assert_problem(answer, 400, "nested too deeply")
    _, _, health = connection.send("GET", "/healthz")
    assert health == {"status": "ok"}


def test_a_broken_multipart_upload_answers_400(connection: Connection) -> None:
    path = f"/api/v1/products/{uuid.uuid4()}/images"
    answer = connection.send("POST", path, b"\xff" * 64, content_type="multipart/form-data", authorization="Bearer x")
    assert_problem(answer, 400, "multipart")
    answer = connection.send("POST", path, b"{}", content_type=JSON, authorization="Bearer x")
    assert_problem(answer, 415, "multipart")
    _, _, health = connection.send("GET", "/healthz")
    assert health == {"status": "ok"}


# --- forwarding headers ------------------------------------------------------------------------------


def _loopback() -> str:
    """A loopback address of its own (all of 127.0.0.0/8 is this host), so the rate-limit
    buckets of one run never meet another's."""
    return f"127.{random.randint(1, 254)}.{random.randint(0, 255)}.{random.randint(1, 254)}"


def _documentation_address() -> str:
    """A client address from the IPv6 documentation range, a /64 of its own (login buckets are /64s)."""
    return f"2001:db8:{random.getrandbits(16):x}:{random.getrandbits(16):x}::7"


class Edge:
    def __init__(self, address: str, proxy: str) -> None:
        self.address = address
        self.proxy = proxy

    def login(self, source: str, **headers: str) -> int:
        """One sign-in attempt with an unknown account (so only the address budget is at stake)."""
        connection = Connection(self.address, source)
        try:
            email = f"nobody.{uuid.uuid4().hex[:12]}@example.com"
            code, _, _ = connection.post_json("/api/v1/auth/login", {"email": email, "password": "wrong-password-1"},
                                              **headers)  # fmt: skip
            return code
        finally:
            connection.close()


ADDRESS_LIMIT = 3


@pytest.fixture(scope="module")
def proxied_edge(services: Callable[..., Cluster]) -> Iterator[Edge]:
    """A user_svc with a per-address login budget of 3 attempts a minute, and an edge
    in front of it that trusts one proxy (a loopback address of its own)."""
    cluster = services("user_svc")
    proxy = _loopback()
    user_port, edge_port = free_port(), free_port()
    started: list[Process] = []

    def start(name: str, port: int, **env: str) -> None:
        full = {**cluster.service_env_for(name), "SHOP_PORT": str(port), "SHOP_METRICS_PORT": "0", **env}
        log = cluster.root / "logs" / f"{name}-proxied.log"
        process = Process(f"{name}-proxied", [sys.executable, "-m", name], log, env=full, cwd=REPO).start()
        started.append(process)
        process.wait_ready(lambda: cluster.service_ready(name, port), 30)

    try:
        start("user_svc", user_port, SHOP_LOGIN_ADDRESS_LIMIT=str(ADDRESS_LIMIT), SHOP_LOGIN_ADDRESS_WINDOW="60")
        start("edge", edge_port, SHOP_USER_SVC_ADDR=f"127.0.0.1:{user_port}", SHOP_TRUSTED_PROXIES=json.dumps([proxy]))
        yield Edge(f"127.0.0.1:{edge_port}", proxy)
    finally:
        for process in reversed(started):
            process.stop()


def test_a_spoofed_forwarding_header_does_not_reset_the_login_budget(proxied_edge: Edge) -> None:
    client = _loopback()
    spoofs = [{"x_forwarded_for": _documentation_address()}, {"forwarded": f'for="[{_documentation_address()}]"'}]
    for attempt in range(ADDRESS_LIMIT):
        assert proxied_edge.login(client, **spoofs[attempt % 2]) == 401
    # Past the budget: a made-up header (either kind) does not give a fresh one.
    assert proxied_edge.login(client, x_forwarded_for=_documentation_address()) == 429
    assert proxied_edge.login(client, forwarded=f"for={_documentation_address()}") == 429
    assert proxied_edge.login(client) == 429


def test_a_trusted_proxys_header_is_believed_from_the_right(proxied_edge: Edge) -> None:
    proxy, first, second = proxied_edge.proxy, _documentation_address(), _documentation_address()
    for _ in range(ADDRESS_LIMIT):
        assert proxied_edge.login(proxy, x_forwarded_for=first) == 401
    assert proxied_edge.login(proxy, x_forwarded_for=first) == 429
    # The proxy's own address is not what is counted: another client behind it has its budget.
    assert proxied_edge.login(proxy, x_forwarded_for=second) == 401
    # What the client wrote itself (left of what the proxy appended) is not believed either.
    assert proxied_edge.login(proxy, x_forwarded_for=f"{second}, {first}") == 429
    assert proxied_edge.login(proxy, x_forwarded_for=f"{first}, {second}") == 401


def test_uvicorn_does_not_believe_the_loopback_either(proxied_edge: Edge) -> None:
    """uvicorn by itself believes X-Forwarded-For from 127.0.0.1; the edge turns that off."""
    for _ in range(ADDRESS_LIMIT + 1):  # other tests may have used some of 127.0.0.1's budget already
        if proxied_edge.login("127.0.0.1") == 429:
            break
    else:
        pytest.fail("127.0.0.1's login budget never ran out")
    assert proxied_edge.login("127.0.0.1", x_forwarded_for=_documentation_address()) == 429


# --- the storefront ----------------------------------------------------------------------------------


def test_the_storefront_refuses_forged_forms_without_a_500(services: Callable[..., Cluster]) -> None:
    """Form bodies the storefront parses itself: a CSRF token that is not ASCII (it used to
    reach compare_digest, which raised: 500) or not UTF-8 answers 403, a broken multipart 400."""
    cluster = services("user_svc", "edge", "web")
    connection = Connection(cluster.addr("web"))
    try:
        code, headers, _ = connection.send("GET", "/signin")
        assert code == 200
        cookie = headers["set-cookie"].split(";", 1)[0]
        assert cookie.startswith("shop_csrf=")
        form = "application/x-www-form-urlencoded"
        for body, content_type, status in [
            (b"csrf=%C3%A9t%C3%A9&email=a%40example.com", form, 403),
            (b"csrf=%ff%fe&email=\xff\xfe", form, 403),
            (b'--b\r\nContent-Disposition: form-data; name="csrf"\r\n\r\n\xff\xfe\r\n--b--\r\n',
             "multipart/form-data; boundary=b", 403),
            (b"\xff" * 32, "multipart/form-data", 400),
        ]:  # fmt: skip
            # (An admin form is not read for a guest at all: it is sent to sign in first.)
            for path in ("/signin", "/cart/items"):
                code, _, page = connection.send("POST", path, body, content_type=content_type, cookie=cookie)
                assert code == status, (path, body, page)
        code, _, _ = connection.send("GET", "/healthz")
        assert code == 200
    finally:
        connection.close()
