"""One rule for every free-text field, in every service: no control characters
(multi-line text keeps its line breaks and tabs), answered at the edge as 400
with the field's violation."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

from devstack.cluster import Cluster
from tests.e2e.helpers import PASSWORD, assert_problem, bearer, register, unique_email

BELL = "\u0007"
ADDRESS = {"recipient_name": "Ann Buyer", "line1": "1 Main St", "city": "Berlin", "postal_code": "10115",
           "country_code": "DE"}  # fmt: skip


@pytest.fixture(scope="module")
def stack(services) -> Cluster:
    return services("user_svc", "product_svc", "order_svc", "notify_svc", "edge")


def violation(response: httpx.Response, field: str) -> str:
    errors = {e["field"]: e["message"] for e in assert_problem(response, 400)["errors"]}
    assert field in errors, errors
    return errors[field]


async def test_announcements_refuse_control_characters_in_title_and_body(
    http: httpx.AsyncClient, admin: dict[str, Any]
) -> None:
    title = await http.post(
        "/api/v1/admin/announcements", headers=bearer(admin), json={"title": f"Sale{BELL}", "body": "Soon"}
    )
    assert violation(title, "title") == "must not contain control characters or line breaks (found U+0007)"
    broken = await http.post(
        "/api/v1/admin/announcements", headers=bearer(admin), json={"title": "Two\nlines", "body": "Soon"}
    )
    assert "U+000A" in violation(broken, "title")
    body = await http.post(
        "/api/v1/admin/announcements", headers=bearer(admin), json={"title": "Sale", "body": "Soon\x1b[2J"}
    )
    assert (
        violation(body, "body") == "must not contain control characters (found U+001B); line breaks and tabs are fine"
    )
    fine = await http.post(
        "/api/v1/admin/announcements", headers=bearer(admin), json={"title": "Sale", "body": "Soon:\n\tall week"}
    )
    assert fine.status_code == 201, fine.text


async def test_names_addresses_and_descriptions_refuse_control_characters(
    http: httpx.AsyncClient, admin: dict[str, Any]
) -> None:
    registered = await http.post(
        "/api/v1/auth/register", json={"email": unique_email(), "password": PASSWORD, "display_name": f"Ann{BELL}"}
    )
    assert "control characters" in violation(registered, "display_name")

    category = await http.post(
        "/api/v1/categories", headers=bearer(admin), json={"name": f"Books{BELL}", "slug": f"b-{uuid.uuid4().hex[:8]}"}
    )
    assert "control characters" in violation(category, "name")
    category_id = (
        await http.post(
            "/api/v1/categories", headers=bearer(admin), json={"name": "Books", "slug": f"b-{uuid.uuid4().hex[:8]}"}
        )
    ).json()["id"]
    product = await http.post(
        "/api/v1/products", headers=bearer(admin),
        json={"name": "Tome", "description": f"Long\nread{BELL}", "category_id": category_id, "stock": 1,
              "price": {"amount_minor": 100, "currency": "EUR"}},
    )  # fmt: skip
    assert "U+0007" in violation(product, "description")

    buyer = await register(http)
    renamed = await http.patch("/api/v1/users/me", headers=bearer(buyer), json={"display_name": "Ann\u2028B"})
    assert "U+2028" in violation(renamed, "profile.display_name")  # the edge does not rename this one (yet)

    order = await http.post(
        "/api/v1/orders", headers=bearer(buyer),
        json={"items": [{"product_id": str(uuid.uuid4()), "quantity": 1}],
              "shipping_address": {**ADDRESS, "city": f"Berlin{BELL}"}},
    )  # fmt: skip
    assert "control characters" in violation(order, "shipping_address.city")

    webhook = await http.post(
        "/api/v1/webhooks", headers=bearer(buyer),
        json={"url": "https://hooks.example.com/shop", "description": f"mine{BELL}"},
    )  # fmt: skip
    assert "control characters" in violation(webhook, "description")
