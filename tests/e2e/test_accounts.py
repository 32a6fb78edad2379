"""Accounts through the REST edge, against the real user_svc, PostgreSQL and Redis."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization

from common.auth import TokenSigner
from devstack.cluster import Cluster
from edge.app import UPSTREAMS
from tests.e2e.helpers import PASSWORD, admin_session, assert_problem, bearer, register, unique_email


@pytest.fixture(scope="module")
def edge_cluster(services) -> Cluster:
    # Every service the edge's routes call: readiness (test_edge_plumbing) checks them all.
    return services(*UPSTREAMS, "edge")


@pytest.fixture
async def http(edge_cluster: Cluster) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=f"http://{edge_cluster.addr('edge')}", timeout=15) as client:
        yield client


async def test_register_normalizes_email_and_refuses_duplicates(http: httpx.AsyncClient) -> None:
    email = unique_email()
    session = await register(http, email)
    assert session["user"]["email"] == email.lower()
    assert session["user"]["role"] == "customer"
    assert session["tokens"]["token_type"] == "Bearer"
    duplicate = await http.post(
        "/api/v1/auth/register", json={"email": email.upper(), "password": PASSWORD, "display_name": "Bob"}
    )
    assert_problem(duplicate, 409)


async def test_password_policy_is_explained(http: httpx.AsyncClient) -> None:
    response = await http.post(
        "/api/v1/auth/register", json={"email": unique_email(), "password": "short", "display_name": "Ann"}
    )
    body = assert_problem(response, 400)
    assert [error["field"] for error in body["errors"]] == ["password"]
    assert "10" in body["errors"][0]["message"]


async def test_login_failures_look_the_same(http: httpx.AsyncClient) -> None:
    session = await register(http)
    email = session["user"]["email"]
    ok = await http.post("/api/v1/auth/login", json={"email": email.upper(), "password": PASSWORD})
    assert ok.status_code == 200
    assert ok.json()["user"]["id"] == session["user"]["id"]
    wrong = assert_problem(await http.post("/api/v1/auth/login", json={"email": email, "password": "nope-nope-1"}), 401)
    unknown = assert_problem(
        await http.post("/api/v1/auth/login", json={"email": unique_email(), "password": PASSWORD}), 401
    )
    assert wrong["detail"] == unknown["detail"]


async def test_refresh_rotation_and_reuse_detection(http: httpx.AsyncClient) -> None:
    session = await register(http)
    first = session["tokens"]["refresh_token"]
    rotated = await http.post("/api/v1/auth/refresh", json={"refresh_token": first})
    assert rotated.status_code == 200, rotated.text
    second = rotated.json()["refresh_token"]
    assert second != first
    me = await http.get("/api/v1/users/me", headers={"Authorization": f"Bearer {rotated.json()['access_token']}"})
    assert me.status_code == 200
    # The old token again: refused, and its whole family is revoked.
    assert_problem(await http.post("/api/v1/auth/refresh", json={"refresh_token": first}), 401)
    assert_problem(await http.post("/api/v1/auth/refresh", json={"refresh_token": second}), 401)


async def test_logout_ends_the_session(http: httpx.AsyncClient) -> None:
    session = await register(http)
    token = session["tokens"]["refresh_token"]
    response = await http.post("/api/v1/auth/logout", json={"refresh_token": token})
    assert response.status_code == 204
    assert_problem(await http.post("/api/v1/auth/refresh", json={"refresh_token": token}), 401)
    assert_problem(await http.post("/api/v1/auth/logout", json={}), 400)


async def test_profile_read_and_update(http: httpx.AsyncClient) -> None:
    session = await register(http)
    assert_problem(await http.get("/api/v1/users/me"), 401)
    address = {"recipient_name": "Ann Smith", "line1": "1 Main St", "city": "Berlin", "postal_code": "10115",
               "country_code": "DE"}  # fmt: skip
    patched = await http.patch(
        "/api/v1/users/me",
        headers=bearer(session),
        json={"display_name": "Ann S.", "phone": "+4930123456",
              "shipping_addresses": [{"label": "Home", "is_default": True, "address": address}]},
    )  # fmt: skip
    assert patched.status_code == 200, patched.text
    me = (await http.get("/api/v1/users/me", headers=bearer(session))).json()
    assert me["display_name"] == "Ann S."
    assert me["phone"] == "+4930123456"
    assert me["shipping_addresses"][0]["address"]["city"] == "Berlin"
    assert me["shipping_addresses"][0]["id"]
    bad_phone = assert_problem(await http.patch("/api/v1/users/me", headers=bearer(session), json={"phone": "12"}), 400)
    assert any(error["field"].endswith("phone") for error in bad_phone["errors"])
    unknown = assert_problem(await http.patch("/api/v1/users/me", headers=bearer(session), json={"role": "admin"}), 400)
    assert unknown["errors"] == [{"field": "role", "message": "unknown field"}]


async def test_password_change_revokes_other_sessions(http: httpx.AsyncClient) -> None:
    session = await register(http)
    email = session["user"]["email"]
    other = (await http.post("/api/v1/auth/login", json={"email": email, "password": PASSWORD})).json()
    changed = await http.post(
        "/api/v1/users/me/password",
        headers=bearer(session),
        json={"current_password": PASSWORD, "new_password": "another-horse-43"},
    )
    assert changed.status_code == 200, changed.text
    assert_problem(
        await http.post("/api/v1/auth/refresh", json={"refresh_token": other["tokens"]["refresh_token"]}), 401
    )
    fresh = await http.post("/api/v1/auth/refresh", json={"refresh_token": changed.json()["refresh_token"]})
    assert fresh.status_code == 200
    assert_problem(await http.post("/api/v1/auth/login", json={"email": email, "password": PASSWORD}), 401)
    relog = await http.post("/api/v1/auth/login", json={"email": email, "password": "another-horse-43"})
    assert relog.status_code == 200


async def test_expired_tampered_and_foreign_tokens(http: httpx.AsyncClient, edge_cluster: Cluster) -> None:
    session = await register(http)
    key = serialization.load_pem_private_key((edge_cluster.keys / "jwt_private.pem").read_bytes(), None)
    signer = TokenSigner(key, issuer="shop", audience="shop", ttl=60)  # type: ignore[arg-type]
    expired, _ = signer.sign(session["user"]["id"], "customer", now=0)
    body = assert_problem(await http.get("/api/v1/users/me", headers={"Authorization": f"Bearer {expired}"}), 401)
    assert "expired" in body["detail"]
    access = session["tokens"]["access_token"]
    header, payload, signature = access.split(".")
    claims = json.loads(jwt.utils.base64url_decode(payload))
    claims["role"] = "admin"
    forged = jwt.utils.base64url_encode(json.dumps(claims).encode()).decode()
    assert_problem(
        await http.get("/api/v1/users", headers={"Authorization": f"Bearer {header}.{forged}.{signature}"}), 401
    )
    assert_problem(await http.get("/api/v1/users/me", headers={"Authorization": "Basic abc"}), 401)


async def test_jwks_verifies_access_tokens(http: httpx.AsyncClient) -> None:
    session = await register(http)
    response = await http.get("/.well-known/jwks.json")
    assert response.status_code == 200
    assert "max-age" in response.headers["cache-control"]
    keys = response.json()["keys"]
    token = session["tokens"]["access_token"]
    kid = jwt.get_unverified_header(token)["kid"]
    jwk = next(key for key in keys if key["kid"] == kid)
    assert "d" not in jwk  # public part only
    public = jwt.PyJWK(jwk).key
    claims = jwt.decode(token, public, algorithms=["EdDSA"], audience="shop")
    assert claims["sub"] == session["user"]["id"]


async def test_login_rate_limit_then_recovery(http: httpx.AsyncClient) -> None:
    session = await register(http)
    email = session["user"]["email"]
    for _ in range(5):  # the test cluster allows 5 failures per account per 3 s
        assert_problem(await http.post("/api/v1/auth/login", json={"email": email, "password": "wrong-wrong-1"}), 401)
    limited = await http.post("/api/v1/auth/login", json={"email": email, "password": PASSWORD})
    assert_problem(limited, 429)
    assert int(limited.headers["retry-after"]) >= 1
    await asyncio.sleep(int(limited.headers["retry-after"]) + 0.5)
    recovered = await http.post("/api/v1/auth/login", json={"email": email, "password": PASSWORD})
    assert recovered.status_code == 200, recovered.text


async def test_admin_lists_users_and_changes_roles(http: httpx.AsyncClient, edge_cluster: Cluster) -> None:
    customer = await register(http)
    assert_problem(await http.get("/api/v1/users", headers=bearer(customer)), 403)

    admin = await admin_session(http, edge_cluster)

    seen: list[str] = []
    token = ""
    for _ in range(50):
        page = await http.get("/api/v1/users", headers=bearer(admin), params={"page_size": 2, "page_token": token})
        assert page.status_code == 200, page.text
        seen += [user["id"] for user in page.json()["items"]]
        token = page.json()["next_page_token"]
        if not token:
            break
    assert len(seen) == len(set(seen))
    assert customer["user"]["id"] in seen and admin["user"]["id"] in seen

    promoted = await http.put(
        f"/api/v1/users/{customer['user']['id']}/role", headers=bearer(admin), json={"role": "admin"}
    )
    assert promoted.status_code == 200 and promoted.json()["role"] == "admin"
    assert_problem(
        await http.put(f"/api/v1/users/{uuid.uuid4()}/role", headers=bearer(admin), json={"role": "admin"}), 404
    )
    assert_problem(
        await http.put(f"/api/v1/users/{customer['user']['id']}/role", headers=bearer(admin), json={"role": "x"}), 400
    )


async def test_bad_requests_get_clear_4xx(http: httpx.AsyncClient) -> None:
    headers = {"Content-Type": "application/json"}
    assert_problem(await http.post("/api/v1/auth/login", content=b"{not json", headers=headers), 400)
    assert_problem(await http.post("/api/v1/auth/login", content=b"[1, 2]", headers=headers), 400)
    assert_problem(
        await http.post("/api/v1/auth/login", content=b"email=a", headers={"Content-Type": "text/plain"}), 415
    )
    huge = b'{"email": "' + b"a" * (2 * 1024 * 1024) + b'"}'
    assert_problem(await http.post("/api/v1/auth/login", content=huge, headers=headers), 413)
    missing = assert_problem(await http.post("/api/v1/auth/login", json={"email": "a@b.co"}), 400)
    assert missing["errors"][0]["field"] == "password"
    assert_problem(await http.get("/api/v1/nothing-here"), 404)
    assert_problem(await http.delete("/api/v1/auth/login"), 405)


async def test_edge_plumbing(http: httpx.AsyncClient) -> None:
    echoed = await http.get("/healthz", headers={"X-Request-ID": "trace-me-123"})
    assert echoed.headers["x-request-id"] == "trace-me-123"
    assert len((await http.get("/healthz")).headers["x-request-id"]) == 32
    ready = await http.get("/readyz")
    assert ready.status_code == 200, ready.text
    assert ready.json()["upstreams"]["user_svc"] == "SERVING"
    preflight = await http.options(
        "/api/v1/auth/login",
        headers={"Origin": "http://shop.test", "Access-Control-Request-Method": "POST"},
    )
    assert preflight.headers["access-control-allow-origin"] == "http://shop.test"
    assert (
        "access-control-allow-origin"
        not in (await http.get("/healthz", headers={"Origin": "http://evil.test"})).headers
    )
    docs = await http.get("/docs")
    assert docs.status_code == 200 and "/openapi.json" in docs.text  # Swagger UI over the document
    assert "/api/v1/users/me" in (await http.get("/openapi.json")).json()["paths"]
