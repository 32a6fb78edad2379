"""Comments and reviews through the REST edge: user_svc for accounts, product_svc
for the catalog, comment_svc on PostgreSQL and Kafka (order_svc for the
verified-purchase mark)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from devstack.cluster import Cluster
from devstack.paths import REPO
from tests.comment_helpers import Caller, order_and_deliver
from tests.e2e.helpers import PASSWORD, admin_session, assert_problem, bearer, unique_email

ORDER_SVC_BUILT = (REPO / "order_svc" / "__main__.py").exists()


@pytest.fixture(scope="module")
def comment_cluster(services: Callable[..., Cluster]) -> Cluster:
    with_orders = ["order_svc"] if ORDER_SVC_BUILT else []  # for the verified mark
    return services("user_svc", "product_svc", *with_orders, "comment_svc", "edge")


@pytest.fixture
async def http(comment_cluster: Cluster) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=f"http://{comment_cluster.addr('edge')}", timeout=15) as client:
        yield client


@pytest.fixture
async def admin(http: httpx.AsyncClient, comment_cluster: Cluster) -> dict[str, Any]:
    return await admin_session(http, comment_cluster)


async def person(http: httpx.AsyncClient, name: str) -> dict[str, Any]:
    response = await http.post(
        "/api/v1/auth/register", json={"email": unique_email(), "password": PASSWORD, "display_name": name}
    )
    assert response.status_code == 201, response.text
    session: dict[str, Any] = response.json()
    return session


@pytest.fixture
async def product(http: httpx.AsyncClient, admin: dict[str, Any]) -> str:
    headers = bearer(admin)
    slug = f"c-{uuid.uuid4().hex[:12]}"
    category = await http.post("/api/v1/categories", headers=headers, json={"name": "Kitchen", "slug": slug})
    assert category.status_code == 201, category.text
    created = await http.post(
        "/api/v1/products",
        headers=headers,
        json={
            "name": "Kettle",
            "category_id": category.json()["id"],
            "price": {"amount_minor": 2999, "currency": "EUR"},
            "stock": 20,
        },
    )
    assert created.status_code == 201, created.text
    product_id: str = created.json()["id"]
    return product_id


def comments_of(product_id: str) -> str:
    return f"/api/v1/products/{product_id}/comments"


async def post(http: httpx.AsyncClient, who: dict[str, Any], product_id: str, **body: Any) -> dict[str, Any]:
    response = await http.post(comments_of(product_id), headers=bearer(who), json=body)
    assert response.status_code == 201, response.text
    comment: dict[str, Any] = response.json()
    return comment


async def test_a_review_its_thread_its_likes_and_the_rating(http: httpx.AsyncClient, product: str) -> None:
    ann, bob = await person(http, "Ann Reviewer"), await person(http, "Bob Asker")
    review = await post(http, ann, product, body="  Boils in two minutes.\r\nQuiet too. ", rating=5)
    assert review["body"] == "Boils in two minutes.\nQuiet too."
    assert review["rating"] == 5 and review["parent_id"] is None
    assert review["author_id"] == ann["user"]["id"] and review["author_display_name"] == "Ann Reviewer"
    assert review["verified_purchase"] is False and review["edited"] is False

    reply = await post(http, bob, product, body="Is the lid wide?", parent_id=review["id"])
    assert reply["parent_id"] == review["id"] and reply["author_display_name"] == "Bob Asker"

    listed = await http.get(comments_of(product))
    assert listed.status_code == 200, listed.text
    [top] = listed.json()["items"]
    assert top["id"] == review["id"] and top["reply_count"] == 1
    assert [r["id"] for r in top["replies"]] == [reply["id"]]
    replies = (await http.get(comments_of(product), params={"parent_id": review["id"]})).json()
    assert [r["id"] for r in replies["items"]] == [reply["id"]]

    like = f"/api/v1/comments/{review['id']}/like"
    for _ in range(2):  # idempotent
        liked = await http.put(like, headers=bearer(bob))
        assert liked.status_code == 200, liked.text
        assert liked.json() == {"like_count": 1, "liked_by_me": True}
    assert (await http.get(comments_of(product), headers=bearer(bob))).json()["items"][0]["liked_by_me"] is True
    assert (await http.get(comments_of(product))).json()["items"][0]["liked_by_me"] is False
    unliked = await http.delete(like, headers=bearer(bob))
    assert unliked.json() == {"like_count": 0, "liked_by_me": False}

    await post(http, bob, product, body="Mine leaks", rating=2)
    rating = await http.get(f"/api/v1/products/{product}/rating")
    assert rating.status_code == 200, rating.text
    assert rating.json() == {
        "product_id": product,
        "count": 2,
        "sum": 7,
        "average": 3.5,
        "histogram": [{"rating": r, "count": int(r in (2, 5))} for r in range(1, 6)],
    }
    detail = await http.get(f"/api/v1/products/{product}")  # product detail carries the summary
    assert detail.status_code == 200, detail.text
    assert detail.json()["id"] == product and detail.json()["rating"] == rating.json()


async def test_someone_elses_comment_is_403(http: httpx.AsyncClient, product: str, admin: dict[str, Any]) -> None:
    ann, bob = await person(http, "Ann"), await person(http, "Bob")
    review = await post(http, ann, product, body="Decent", rating=3)
    path = f"/api/v1/comments/{review['id']}"
    assert await page_rating(http, product) == (1, 3)  # the edge now keeps this summary briefly

    assert_problem(await http.patch(path, headers=bearer(bob), json={"body": "Terrible"}), 403)
    assert_problem(await http.delete(path, headers=bearer(bob)), 403)
    assert_problem(await http.patch(path, headers=bearer(admin), json={"body": "Moderated"}), 403)  # authors edit
    assert_problem(await http.patch(path, json={"body": "anon"}), 401)

    edited = await http.patch(path, headers=bearer(ann), json={"body": "Good, after all", "rating": 4})
    assert edited.status_code == 200, edited.text
    assert edited.json()["edited"] is True and edited.json()["edited_at"]
    assert (edited.json()["body"], edited.json()["rating"]) == ("Good, after all", 4)
    assert await page_rating(http, product) == (1, 4)  # an edit through the edge is shown at once
    unrated = await http.patch(path, headers=bearer(ann), json={"rating": None})
    assert unrated.json()["rating"] is None
    assert await page_rating(http, product) == (0, 0)
    assert_problem(await http.patch(path, headers=bearer(ann), json={}), 400)

    # An admin deletes anyone's comment; with a reply it stays as a removed placeholder.
    await post(http, bob, product, body="Agreed", parent_id=review["id"])
    deleted = await http.delete(path, headers=bearer(admin))
    assert deleted.status_code == 204, deleted.text
    placeholder = (await http.get(path)).json()
    assert placeholder["deleted"] is True and placeholder["body"] == "" and placeholder["author_id"] is None
    assert_problem(await post_raw(http, bob, product, body="Hello?", parent_id=review["id"]), 409)

    rated = await post(http, bob, product, body="Fine", rating=5)
    assert await page_rating(http, product) == (1, 5)
    assert (await http.delete(f"/api/v1/comments/{rated['id']}", headers=bearer(bob))).status_code == 204
    assert await page_rating(http, product) == (0, 0)  # so is a deletion

    own = await post(http, bob, product, body="Short-lived")
    assert (await http.delete(f"/api/v1/comments/{own['id']}", headers=bearer(bob))).status_code == 204
    assert_problem(await http.get(f"/api/v1/comments/{own['id']}"), 404)


async def page_rating(http: httpx.AsyncClient, product_id: str) -> tuple[int, int]:
    """Count and sum of the rating summary on the product page."""
    detail = await http.get(f"/api/v1/products/{product_id}")
    assert detail.status_code == 200, detail.text
    rating = detail.json()["rating"]
    return rating["count"], rating["sum"]


async def post_raw(http: httpx.AsyncClient, who: dict[str, Any], product_id: str, **body: Any) -> httpx.Response:
    return await http.post(comments_of(product_id), headers=bearer(who), json=body)


async def test_missing_product_404_invalid_rating_400(http: httpx.AsyncClient, product: str) -> None:
    ann = await person(http, "Ann")
    assert_problem(await post_raw(http, ann, str(uuid.uuid4()), body="Where is it?", rating=4), 404)
    for rating in (0, 6, "five"):
        problem = assert_problem(await post_raw(http, ann, product, body="Out of range", rating=rating), 400)
        assert [error["field"] for error in problem["errors"]] == ["rating"]
    problem = assert_problem(
        await post_raw(http, ann, product, body="stars on a reply", rating=5, parent_id=str(uuid.uuid4())), 400
    )
    assert [error["field"] for error in problem["errors"]] == ["rating"]
    for body in ("   ", "x" * 5001, "bell \x07"):
        problem = assert_problem(await post_raw(http, ann, product, body=body), 400)
        assert [error["field"] for error in problem["errors"]] == ["body"]
    assert_problem(await post_raw(http, ann, "not-a-product-id", body="hi"), 400)
    assert_problem(await http.post(comments_of(product), json={"body": "anonymous"}), 401)
    assert_problem(await http.put(f"/api/v1/comments/{uuid.uuid4()}/like", headers=bearer(ann)), 404)
    assert (await http.get(comments_of(product))).json()["items"] == []  # nothing was stored


async def test_paging_through_the_edge(http: httpx.AsyncClient, product: str) -> None:
    people = [await person(http, f"P{n}") for n in range(3)]
    ids = [(await post(http, people[0], product, body=f"comment {n}"))["id"] for n in range(5)]
    for who in people:
        assert (await http.put(f"/api/v1/comments/{ids[1]}/like", headers=bearer(who))).status_code == 200
    assert (await http.put(f"/api/v1/comments/{ids[3]}/like", headers=bearer(people[1]))).status_code == 200

    async def every(sort: str) -> list[str]:
        seen: list[str] = []
        token = ""
        while True:
            params: dict[str, str | int] = {"sort": sort, "page_size": 2}
            if token:
                params["page_token"] = token
            page = await http.get(comments_of(product), params=params)
            assert page.status_code == 200, page.text
            seen += [item["id"] for item in page.json()["items"]]
            token = page.json()["next_page_token"]
            if not token:
                return seen

    assert await every("newest") == list(reversed(ids))
    assert await every("most_liked") == [ids[1], ids[3], ids[4], ids[2], ids[0]]
    first = (await http.get(comments_of(product), params={"page_size": 2})).json()
    problem = assert_problem(
        await http.get(comments_of(product), params={"sort": "most_liked", "page_token": first["next_page_token"]}), 400
    )
    assert problem["errors"][0]["field"] == "page_token"
    assert_problem(await http.get(comments_of(product), params={"sort": "loudest"}), 400)


@pytest.mark.skipif(not ORDER_SVC_BUILT, reason="order_svc is not built yet (no order_svc/__main__.py)")
async def test_verified_purchase_after_a_delivered_order(
    http: httpx.AsyncClient, comment_cluster: Cluster, product: str, admin: dict[str, Any]
) -> None:
    cluster = comment_cluster
    buyer, browser = await person(http, "Buyer"), await person(http, "Browser")
    early = await post(http, buyer, product, body="Ordered, not here yet", rating=4)
    assert early["verified_purchase"] is False
    await order_and_deliver(
        cluster,
        Caller(buyer["user"]["id"], buyer["tokens"]["access_token"]),
        Caller(admin["user"]["id"], admin["tokens"]["access_token"]),
        product,
    )
    review = await post(http, buyer, product, body="Arrived and works", rating=5)
    assert review["verified_purchase"] is True
    assert (await post(http, browser, product, body="Looks nice", rating=4))["verified_purchase"] is False


async def test_the_comment_routes_are_documented(http: httpx.AsyncClient) -> None:
    paths = (await http.get("/openapi.json")).json()["paths"]
    assert set(paths["/api/v1/products/{product_id}/comments"]) == {"get", "post"}
    assert set(paths["/api/v1/comments/{comment_id}"]) == {"get", "patch", "delete"}
    assert set(paths["/api/v1/comments/{comment_id}/like"]) == {"put", "delete"}
    assert "get" in paths["/api/v1/products/{product_id}/rating"]
