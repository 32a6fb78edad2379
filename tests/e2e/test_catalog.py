"""The catalog through the REST edge: user_svc for accounts, product_svc with the
real FerretDB and MinIO behind it."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from devstack.cluster import Cluster
from tests.e2e.helpers import admin_session, assert_problem, bearer, register

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8


@pytest.fixture(scope="module")
def catalog_cluster(services) -> Cluster:
    return services("user_svc", "product_svc", "edge")


@pytest.fixture
async def http(catalog_cluster: Cluster) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=f"http://{catalog_cluster.addr('edge')}", timeout=15) as client:
        yield client


@pytest.fixture
async def admin(http: httpx.AsyncClient, catalog_cluster: Cluster) -> dict[str, str]:
    return bearer(await admin_session(http, catalog_cluster))


@pytest.fixture
async def customer(http: httpx.AsyncClient) -> dict[str, str]:
    return bearer(await register(http))


def slug() -> str:
    return f"c-{uuid.uuid4().hex[:12]}"


async def create_category(http: httpx.AsyncClient, admin: dict, **fields: str) -> dict:
    response = await http.post("/api/v1/categories", headers=admin, json={"name": "Shoes", "slug": slug(), **fields})
    assert response.status_code == 201, response.text
    return response.json()


async def create_product(http: httpx.AsyncClient, admin: dict, category_id: str, **fields: Any) -> dict:
    body: dict[str, Any] = {
        "name": "Trail Runner",
        "category_id": category_id,
        "price": {"amount_minor": 1999, "currency": "EUR"},
    }
    body.update(fields)
    response = await http.post("/api/v1/products", headers=admin, json=body)
    assert response.status_code == 201, response.text
    return response.json()


async def test_writes_need_an_admin(http: httpx.AsyncClient, admin: dict, customer: dict) -> None:
    category = await create_category(http, admin)
    product = await create_product(http, admin, category["id"])
    new_product = {"name": "X", "category_id": category["id"], "price": {"amount_minor": 1, "currency": "EUR"}}
    attempts = [
        ("POST", "/api/v1/categories", {"json": {"name": "X", "slug": slug()}}),
        ("POST", "/api/v1/products", {"json": new_product}),
        ("PATCH", f"/api/v1/products/{product['id']}", {"json": {"name": "Mine now"}}),
        ("DELETE", f"/api/v1/products/{product['id']}", {}),
        ("POST", f"/api/v1/products/{product['id']}/images", {"files": {"file": ("a.png", PNG, "image/png")}}),
        ("DELETE", f"/api/v1/products/{product['id']}/images/{uuid.uuid4()}", {}),
    ]
    for method, path, kwargs in attempts:
        assert_problem(await http.request(method, path, **kwargs), 401)  # type: ignore[arg-type]
        assert_problem(await http.request(method, path, headers=customer, **kwargs), 403)  # type: ignore[arg-type]
    assert_problem(await http.get("/api/v1/products", params={"include_archived": "true"}, headers=customer), 403)
    # Untouched, and readable by anyone.
    public = await http.get(f"/api/v1/products/{product['id']}")
    assert public.status_code == 200
    assert public.json()["name"] == "Trail Runner" and public.json()["images"] == []


async def test_admin_builds_the_catalog_and_anyone_browses_it(http: httpx.AsyncClient, admin: dict) -> None:
    shoes = await create_category(http, admin, name="Shoes")
    trail = await create_category(http, admin, name="Trail", parent_id=shoes["id"])
    assert trail["parent_id"] == shoes["id"]
    children = await http.get("/api/v1/categories", params={"parent_id": shoes["id"]})
    assert [c["id"] for c in children.json()["items"]] == [trail["id"]]

    city = await create_product(http, admin, shoes["id"], name="City Walker", stock=0,
                                price={"amount_minor": 5000, "currency": "EUR"})  # fmt: skip
    runner = await create_product(
        http, admin, trail["id"], name="Trail Runner", description="Grips muddy paths", stock=5,
        attributes={"color": "red"}, weight_grams=350, price={"amount_minor": 8999, "currency": "EUR"},
    )  # fmt: skip
    assert runner["price"] == {"amount_minor": 8999, "currency": "EUR"}
    assert runner["status"] == "active" and runner["attributes"] == {"color": "red"}

    async def listed(**params: Any) -> list[str]:
        response = await http.get("/api/v1/products", params={"category_id": shoes["id"], **params})
        assert response.status_code == 200, response.text
        return [p["id"] for p in response.json()["items"]]

    assert set(await listed()) == {city["id"], runner["id"]}  # the child category's products too
    assert await listed(q="MUDDY") == [runner["id"]]
    assert await listed(in_stock="true") == [runner["id"]]
    assert await listed(min_price=6000, currency="EUR") == [runner["id"]]
    assert await listed(max_price=6000, currency="EUR") == [city["id"]]
    assert await listed(sort="price_desc") == [runner["id"], city["id"]]
    assert await listed(sort="name_asc") == [city["id"], runner["id"]]

    first = await http.get("/api/v1/products", params={"category_id": shoes["id"], "page_size": 1, "sort": "oldest"})
    token = first.json()["next_page_token"]
    assert [p["id"] for p in first.json()["items"]] == [city["id"]] and token
    second = await http.get(
        "/api/v1/products", params={"category_id": shoes["id"], "page_size": 1, "sort": "oldest", "page_token": token}
    )
    assert [p["id"] for p in second.json()["items"]] == [runner["id"]]
    assert second.json()["next_page_token"] == ""

    patched = await http.patch(
        f"/api/v1/products/{runner['id']}", headers=admin, json={"price": {"amount_minor": 7999, "currency": "EUR"}}
    )
    assert patched.status_code == 200, patched.text
    assert patched.json()["price"]["amount_minor"] == 7999
    assert patched.json()["description"] == "Grips muddy paths"

    archived = await http.patch(f"/api/v1/products/{runner['id']}", headers=admin, json={"status": "archived"})
    assert archived.json()["status"] == "archived"
    assert await listed() == [city["id"]]
    everything = await http.get(
        "/api/v1/products", headers=admin, params={"category_id": shoes["id"], "include_archived": "true"}
    )
    assert {p["id"] for p in everything.json()["items"]} == {city["id"], runner["id"]}
    assert (await http.get(f"/api/v1/products/{runner['id']}")).json()["status"] == "archived"

    deleted = await http.delete(f"/api/v1/products/{runner['id']}", headers=admin)
    assert deleted.status_code == 204
    assert_problem(await http.get(f"/api/v1/products/{runner['id']}"), 404)


async def test_image_upload_through_multipart(http: httpx.AsyncClient, admin: dict) -> None:
    category = await create_category(http, admin)
    product = await create_product(http, admin, category["id"])
    path = f"/api/v1/products/{product['id']}/images"

    uploaded = await http.post(path, headers=admin, files={"file": ("cat.png", PNG, "image/png")})
    assert uploaded.status_code == 201, uploaded.text
    image = uploaded.json()["image"]
    assert (image["content_type"], image["size_bytes"], image["filename"]) == ("image/png", len(PNG), "cat.png")
    assert [i["id"] for i in uploaded.json()["product"]["images"]] == [image["id"]]
    async with httpx.AsyncClient(timeout=10) as browser:
        fetched = await browser.get(image["url"])
    assert fetched.status_code == 200 and fetched.content == PNG
    shown = (await http.get(f"/api/v1/products/{product['id']}")).json()
    assert [i["id"] for i in shown["images"]] == [image["id"]]

    text = assert_problem(
        await http.post(
            path, headers=admin, files={"file": ("notes.png", b"plain text, not a picture\n", "image/png")}
        ),
        415,
    )
    assert text["type"] == "urn:shop:problem:unsupported_image_type"
    too_big = PNG + b"\x00" * (4 * 1024 * 1024)
    big = assert_problem(await http.post(path, headers=admin, files={"file": ("big.png", too_big, "image/png")}), 413)
    assert big["type"] == "urn:shop:problem:image_too_large"
    huge = PNG + b"\x00" * (6 * 1024 * 1024)  # over the edge's own upload cap
    assert_problem(await http.post(path, headers=admin, files={"file": ("huge.png", huge, "image/png")}), 413)
    misnamed = assert_problem(await http.post(path, headers=admin, files={"picture": ("a.png", PNG, "image/png")}), 400)
    assert {e["field"] for e in misnamed["errors"]} == {"file", "picture"}
    # "file" as a plain field (no filename) of a multipart body, then as a urlencoded form.
    as_text = assert_problem(await http.post(path, headers=admin, files={"file": (None, "not a file")}), 400)
    assert as_text["errors"] == [
        {"field": "file", "message": "Value error, must be a file (a form part with a filename)"}
    ]
    assert_problem(await http.post(path, headers=admin, data={"file": "not a file"}), 415)
    assert_problem(await http.post(path, headers=admin, json={"file": "x"}), 415)
    assert_problem(
        await http.post(f"/api/v1/products/{uuid.uuid4()}/images", headers=admin, files={"file": ("a.png", PNG)}), 404
    )

    removed = await http.delete(f"{path}/{image['id']}", headers=admin)
    assert removed.status_code == 204
    assert (await http.get(f"/api/v1/products/{product['id']}")).json()["images"] == []
    async with httpx.AsyncClient(timeout=10) as browser:
        assert (await browser.get(image["url"])).status_code == 404
    assert_problem(await http.delete(f"{path}/{image['id']}", headers=admin), 404)


async def test_bad_input_gets_problem_json(http: httpx.AsyncClient, admin: dict) -> None:
    category = await create_category(http, admin)

    async def create(status: int, **fields: object) -> dict:
        body = {"name": "Shoe", "category_id": category["id"], "price": {"amount_minor": 100, "currency": "EUR"}}
        body.update(fields)
        return assert_problem(await http.post("/api/v1/products", headers=admin, json=body), status)

    def fields(problem: dict) -> list[str]:
        return [error["field"] for error in problem["errors"]]

    assert fields(await create(400, price={"amount_minor": -1, "currency": "EUR"})) == ["price.amount_minor"]
    unknown_currency = await create(400, price={"amount_minor": 100, "currency": "XYZ"})
    assert fields(unknown_currency) == ["price.currency"]
    assert "ISO 4217" in unknown_currency["errors"][0]["message"]
    assert fields(await create(404, category_id=str(uuid.uuid4()))) == ["category_id"]
    assert fields(await create(400, category_id="shoes")) == ["category_id"]
    assert fields(await create(400, stock=-1)) == ["stock"]
    assert fields(await create(400, colour="red")) == ["colour"]
    assert_problem(await http.post("/api/v1/categories", headers=admin, json={"name": "Dup", "slug": "Bad Slug"}), 400)
    taken = await http.post("/api/v1/categories", headers=admin, json={"name": "Dup", "slug": category["slug"]})
    assert fields(assert_problem(taken, 409)) == ["slug"]

    assert_problem(await http.get("/api/v1/products/not-an-id"), 400)
    assert_problem(await http.get(f"/api/v1/products/{uuid.uuid4()}"), 404)
    product = await create_product(http, admin, category["id"])
    patch = f"/api/v1/products/{product['id']}"
    assert_problem(await http.patch(patch, headers=admin, json={}), 400)
    assert fields(assert_problem(await http.patch(patch, headers=admin, json={"name": None}), 400)) == ["name"]
    assert fields(assert_problem(await http.patch(patch, headers=admin, json={"status": "gone"}), 400)) == ["status"]

    assert fields(assert_problem(await http.get("/api/v1/products", params={"min_price": 5}), 400)) == ["currency"]
    reversed_range = await http.get("/api/v1/products", params={"min_price": 5, "max_price": 1, "currency": "EUR"})
    assert fields(assert_problem(reversed_range, 400)) == ["max_price"]
    assert fields(assert_problem(await http.get("/api/v1/products", params={"sort": "cheapest"}), 400)) == ["sort"]
    bad_token = await http.get("/api/v1/products", params={"page_token": "garbage"})
    assert fields(assert_problem(bad_token, 400)) == ["page_token"]
    # Nothing of that changed the product (the detail adds its rating summary).
    assert {k: v for k, v in (await http.get(patch)).json().items() if k != "rating"} == product


async def test_catalog_is_described_and_ready(http: httpx.AsyncClient) -> None:
    document = (await http.get("/openapi.json")).json()
    paths = document["paths"]
    assert {"get", "post"} <= set(paths["/api/v1/categories"])
    assert {"get", "post"} <= set(paths["/api/v1/products"])
    assert {"get", "patch", "delete"} <= set(paths["/api/v1/products/{product_id}"])
    upload = paths["/api/v1/products/{product_id}/images"]["post"]
    assert "multipart/form-data" in upload["requestBody"]["content"]
    assert "delete" in paths["/api/v1/products/{product_id}/images/{image_id}"]
    money = document["components"]["schemas"]["Money"]
    assert set(money["properties"]) == {"amount_minor", "currency"}
    ready = await http.get("/readyz")
    assert ready.json()["upstreams"]["product_svc"] == "SERVING"
