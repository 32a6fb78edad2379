"""product_svc over gRPC: the real process against the real FerretDB and MinIO."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from google.protobuf.field_mask_pb2 import FieldMask
from pydantic import SecretStr
from shop.common.v1 import money_pb2, paging_pb2
from shop.product.v1 import product_pb2, product_pb2_grpc

from common.auth import TokenSigner
from common.clients import mongo_client, s3_client
from common.errors import Problem, problem_from_rpc_error
from common.settings import S3Settings
from devstack.cluster import Cluster
from devstack.docstore import FerretDB
from devstack.servers import S3
from tests.callers import CallerStub

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4
JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + b"\x42" * 500
WEBP = b"RIFF" + (600).to_bytes(4, "little") + b"WEBPVP8 " + b"\x17" * 600


# --- fixtures and helpers ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def product_cluster(services) -> Cluster:
    return services("product_svc")


@pytest.fixture(scope="module")
def signer(product_cluster: Cluster) -> TokenSigner:
    key = serialization.load_pem_private_key((product_cluster.keys / "jwt_private.pem").read_bytes(), None)
    return TokenSigner(key, issuer="shop", audience="shop", ttl=600)  # type: ignore[arg-type]


@pytest.fixture
def admin(signer: TokenSigner) -> list[tuple[str, str]]:
    token, _ = signer.sign(str(uuid.uuid4()), "admin")
    return [("authorization", f"Bearer {token}")]


@pytest.fixture
def customer(signer: TokenSigner) -> list[tuple[str, str]]:
    token, _ = signer.sign(str(uuid.uuid4()), "customer")
    return [("authorization", f"Bearer {token}")]


@pytest.fixture
async def stub(product_cluster: Cluster) -> AsyncIterator[product_pb2_grpc.ProductServiceStub]:
    # The catalog as the edge, stock reservations as order_svc: as each method's callers say.
    stub = CallerStub(product_cluster, "product_svc", product_pb2_grpc.ProductServiceStub)
    yield stub  # type: ignore[misc]
    await stub.close()


@pytest.fixture
def s3_settings(product_cluster: Cluster) -> S3Settings:
    server = product_cluster.servers["s3"]
    assert isinstance(server, S3)
    env = server.admin_env()
    return S3Settings(
        s3_endpoint=env["SHOP_S3_ENDPOINT"],
        s3_access_key=env["SHOP_S3_ACCESS_KEY"],
        s3_secret_key=SecretStr(env["SHOP_S3_SECRET_KEY"]),
    )


@pytest.fixture
async def catalog_db(product_cluster: Cluster) -> AsyncIterator[Any]:
    """The service's own database, to play a crashed caller's leftovers into it."""
    server = product_cluster.servers["mongo"]
    assert isinstance(server, FerretDB)
    client = mongo_client(server.url)
    try:
        yield client["shop_product"]
    finally:
        await client.close()


def eur(amount: int, currency: str = "EUR") -> money_pb2.Money:
    return money_pb2.Money(amount_minor=amount, currency_code=currency)


async def failure(call: Awaitable[Any], code: grpc.StatusCode) -> Problem:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    assert caught.value.code() == code, caught.value.details()
    return problem_from_rpc_error(caught.value)


def slug() -> str:
    return f"c-{uuid.uuid4().hex[:12]}"


async def new_category(stub, admin, parent: str | None = None, name: str = "Shoes") -> product_pb2.Category:
    request = product_pb2.CreateCategoryRequest(name=name, slug=slug())
    if parent:
        request.parent_id = parent
    return (await stub.CreateCategory(request, metadata=admin)).category


async def new_product(stub, admin, category: str, **fields: Any) -> product_pb2.Product:
    values: dict[str, Any] = {"name": "Trail Runner", "category_id": category, "price": eur(1999), "stock": 10}
    values.update(fields)
    return (await stub.CreateProduct(product_pb2.CreateProductRequest(**values), metadata=admin)).product


async def stock_of(stub, product_id: str) -> int:
    reply = await stub.GetProduct(product_pb2.GetProductRequest(product_id=product_id))
    return int(reply.product.stock)


async def reserve(stub, reservation_id: str, *items: tuple[str, int]) -> product_pb2.ReserveStockResponse:
    return await stub.ReserveStock(
        product_pb2.ReserveStockRequest(
            reservation_id=reservation_id,
            items=[product_pb2.ReservationItem(product_id=p, quantity=q) for p, q in items],
        )
    )


async def list_all(stub, **request: Any) -> list[product_pb2.Product]:
    page_size = request.pop("page_size", 100)
    reply = await stub.ListProducts(
        product_pb2.ListProductsRequest(page=paging_pb2.PageRequest(page_size=page_size), **request)
    )
    return list(reply.products)


# --- categories -------------------------------------------------------------------------------------


async def test_categories_tree_slugs_and_paging(stub, admin) -> None:
    root = await new_category(stub, admin, name="Sport")
    assert not root.HasField("parent_id")
    child = await new_category(stub, admin, parent=root.id, name="Running")
    assert child.parent_id == root.id

    by_slug = await stub.GetCategory(product_pb2.GetCategoryRequest(slug=child.slug))
    assert by_slug.category.id == child.id
    by_id = await stub.GetCategory(product_pb2.GetCategoryRequest(id=root.id))
    assert by_id.category.slug == root.slug

    taken = await failure(
        stub.CreateCategory(product_pb2.CreateCategoryRequest(name="Again", slug=root.slug), metadata=admin),
        grpc.StatusCode.ALREADY_EXISTS,
    )
    assert [e.field for e in taken.errors] == ["slug"]
    orphan = await failure(
        stub.CreateCategory(
            product_pb2.CreateCategoryRequest(name="Orphan", slug=slug(), parent_id=str(uuid.uuid4())), metadata=admin
        ),
        grpc.StatusCode.NOT_FOUND,
    )
    assert [e.field for e in orphan.errors] == ["parent_id"]
    bad = await failure(
        stub.CreateCategory(product_pb2.CreateCategoryRequest(name="", slug="Not A Slug"), metadata=admin),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert [e.field for e in bad.errors] == ["name", "slug"]
    await failure(stub.GetCategory(product_pb2.GetCategoryRequest(slug="no-such-slug-here")), grpc.StatusCode.NOT_FOUND)
    await failure(stub.GetCategory(product_pb2.GetCategoryRequest(id="42")), grpc.StatusCode.INVALID_ARGUMENT)

    children = [await new_category(stub, admin, parent=root.id, name=name) for name in ("b", "C", "a", "d")]
    seen: list[str] = []
    token = ""
    while True:
        reply = await stub.ListCategories(
            product_pb2.ListCategoriesRequest(
                parent_id=root.id, page=paging_pb2.PageRequest(page_size=2, page_token=token)
            )
        )
        seen += [c.name for c in reply.categories]
        token = reply.page.next_page_token
        if not token:
            break
    assert seen == ["a", "b", "C", "d", "Running"]  # by name, case-insensitively
    assert child.id not in {c.id for c in children}


# --- auth -------------------------------------------------------------------------------------------


async def test_writes_need_an_admin_and_reads_are_public(stub, admin, customer) -> None:
    category = await new_category(stub, admin)
    product = await new_product(stub, admin, category.id)
    create = product_pb2.CreateProductRequest(name="X", category_id=category.id, price=eur(1))
    writes: list[Callable[[Any], Awaitable[Any]]] = [
        lambda md: stub.CreateProduct(create, metadata=md),
        lambda md: stub.CreateCategory(product_pb2.CreateCategoryRequest(name="X", slug=slug()), metadata=md),
        lambda md: stub.UpdateProduct(
            product_pb2.UpdateProductRequest(
                product=product_pb2.Product(id=product.id, name="Y"), update_mask=FieldMask(paths=["name"])
            ),
            metadata=md,
        ),
        lambda md: stub.ArchiveProduct(product_pb2.ArchiveProductRequest(product_id=product.id), metadata=md),
        lambda md: stub.DeleteProduct(product_pb2.DeleteProductRequest(product_id=product.id), metadata=md),
        lambda md: stub.AddProductImage(
            product_pb2.AddProductImageRequest(product_id=product.id, content=PNG), metadata=md
        ),
        lambda md: stub.ListProducts(product_pb2.ListProductsRequest(include_archived=True), metadata=md),
    ]
    for write in writes:
        await failure(write(()), grpc.StatusCode.UNAUTHENTICATED)
        await failure(write(customer), grpc.StatusCode.PERMISSION_DENIED)
    # Nothing changed, and anybody can read.
    reply = await stub.GetProduct(product_pb2.GetProductRequest(product_id=product.id))
    assert reply.product.name == "Trail Runner" and not reply.product.images
    assert reply.product.status == product_pb2.PRODUCT_STATUS_ACTIVE
    assert [p.id for p in await list_all(stub, category_id=category.id)] == [product.id]
    forged = [("authorization", f"Bearer {customer[0][1].split()[1][:-3]}abc")]
    await failure(
        stub.GetProduct(product_pb2.GetProductRequest(product_id=product.id), metadata=forged),
        grpc.StatusCode.UNAUTHENTICATED,
    )


# --- products ---------------------------------------------------------------------------------------


async def test_product_lifecycle(stub, admin) -> None:
    category = await new_category(stub, admin)
    other = await new_category(stub, admin)
    product = await new_product(
        stub,
        admin,
        category.id,
        description="Grippy.",
        attributes={"color": "red", "size.eu": "42"},
        weight_grams=350,
    )
    assert product.price == eur(1999)
    assert dict(product.attributes) == {"color": "red", "size.eu": "42"}
    assert product.created_at.seconds > 0 and product.created_at == product.updated_at

    updated = (
        await stub.UpdateProduct(
            product_pb2.UpdateProductRequest(
                product=product_pb2.Product(
                    id=product.id, name="Trail Runner 2", price=eur(2499), category_id=other.id, description="ignored"
                ),
                update_mask=FieldMask(paths=["name", "price", "category_id"]),
            ),
            metadata=admin,
        )
    ).product
    assert (updated.name, updated.price, updated.category_id) == ("Trail Runner 2", eur(2499), other.id)
    assert updated.description == "Grippy."  # not in the mask
    assert updated.updated_at.ToDatetime() > product.updated_at.ToDatetime()

    archived = (
        await stub.ArchiveProduct(product_pb2.ArchiveProductRequest(product_id=product.id), metadata=admin)
    ).product
    assert archived.status == product_pb2.PRODUCT_STATUS_ARCHIVED
    again = await stub.ArchiveProduct(product_pb2.ArchiveProductRequest(product_id=product.id), metadata=admin)
    assert again.product.status == product_pb2.PRODUCT_STATUS_ARCHIVED  # idempotent
    assert await list_all(stub, category_id=other.id) == []  # hidden from listings
    admin_view = await stub.ListProducts(
        product_pb2.ListProductsRequest(category_id=other.id, include_archived=True), metadata=admin
    )
    assert [p.id for p in admin_view.products] == [product.id]
    readable = await stub.GetProduct(product_pb2.GetProductRequest(product_id=product.id))
    assert readable.product.status == product_pb2.PRODUCT_STATUS_ARCHIVED

    restored = await stub.UpdateProduct(
        product_pb2.UpdateProductRequest(
            product=product_pb2.Product(id=product.id, status=product_pb2.PRODUCT_STATUS_ACTIVE),
            update_mask=FieldMask(paths=["status"]),
        ),
        metadata=admin,
    )
    assert restored.product.status == product_pb2.PRODUCT_STATUS_ACTIVE
    assert [p.id for p in await list_all(stub, category_id=other.id)] == [product.id]

    await stub.DeleteProduct(product_pb2.DeleteProductRequest(product_id=product.id), metadata=admin)
    await failure(stub.GetProduct(product_pb2.GetProductRequest(product_id=product.id)), grpc.StatusCode.NOT_FOUND)
    await failure(
        stub.DeleteProduct(product_pb2.DeleteProductRequest(product_id=product.id), metadata=admin),
        grpc.StatusCode.NOT_FOUND,
    )


async def test_bad_input_gets_clear_errors(stub, admin) -> None:
    category = await new_category(stub, admin)

    async def create(**fields: Any) -> Problem:
        values: dict[str, Any] = {"name": "Shoe", "category_id": category.id, "price": eur(100)}
        values.update(fields)
        return await failure(
            stub.CreateProduct(product_pb2.CreateProductRequest(**values), metadata=admin),
            grpc.StatusCode.INVALID_ARGUMENT,
        )

    negative = await create(price=eur(-1))
    assert [e.field for e in negative.errors] == ["price.amount_minor"]
    assert negative.reason == "VALIDATION_FAILED" and negative.status == 400
    unknown_currency = await create(price=eur(100, "EURO"))
    assert [e.field for e in unknown_currency.errors] == ["price.currency_code"]
    assert "ISO 4217" in unknown_currency.errors[0].description
    several = await create(name="", stock=-1, weight_grams=-5, price=None)
    assert [e.field for e in several.errors] == ["name", "price", "stock", "weight_grams"]
    bad_category = await create(category_id="shoes")
    assert [e.field for e in bad_category.errors] == ["category_id"]
    unknown_category = await failure(
        stub.CreateProduct(
            product_pb2.CreateProductRequest(name="Shoe", category_id=str(uuid.uuid4()), price=eur(1)), metadata=admin
        ),
        grpc.StatusCode.NOT_FOUND,
    )
    assert [e.field for e in unknown_category.errors] == ["category_id"]

    await failure(stub.GetProduct(product_pb2.GetProductRequest(product_id="nope")), grpc.StatusCode.INVALID_ARGUMENT)
    await failure(stub.GetProduct(product_pb2.GetProductRequest(product_id="")), grpc.StatusCode.INVALID_ARGUMENT)
    await failure(
        stub.GetProduct(product_pb2.GetProductRequest(product_id=str(uuid.uuid4()))), grpc.StatusCode.NOT_FOUND
    )
    product = await new_product(stub, admin, category.id)

    async def update(paths: list[str], **fields: Any) -> Problem:
        return await failure(
            stub.UpdateProduct(
                product_pb2.UpdateProductRequest(
                    product=product_pb2.Product(id=product.id, **fields), update_mask=FieldMask(paths=paths)
                ),
                metadata=admin,
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
        )

    assert [e.field for e in (await update([])).errors] == ["update_mask"]
    assert "cannot be changed" in (await update(["images"])).errors[0].description
    assert [e.field for e in (await update(["price"], price=eur(-5))).errors] == ["product.price.amount_minor"]
    assert [e.field for e in (await update(["stock"], stock=-1)).errors] == ["product.stock"]
    missing = await failure(
        stub.UpdateProduct(
            product_pb2.UpdateProductRequest(
                product=product_pb2.Product(id=product.id, category_id=str(uuid.uuid4())),
                update_mask=FieldMask(paths=["category_id"]),
            ),
            metadata=admin,
        ),
        grpc.StatusCode.NOT_FOUND,
    )
    assert [e.field for e in missing.errors] == ["category_id"]

    ranges = await failure(
        stub.ListProducts(product_pb2.ListProductsRequest(min_price=eur(500), max_price=eur(100))),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert [e.field for e in ranges.errors] == ["max_price.amount_minor"]
    await failure(
        stub.ListProducts(product_pb2.ListProductsRequest(page=paging_pb2.PageRequest(page_token="garbage"))),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    await failure(
        stub.ListProducts(product_pb2.ListProductsRequest(page=paging_pb2.PageRequest(page_size=-1))),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    # The stored product is untouched by all of that.
    assert (await stub.GetProduct(product_pb2.GetProductRequest(product_id=product.id))).product == product


# --- listing -----------------------------------------------------------------------------------------


async def test_filters(stub, admin) -> None:
    shoes = await new_category(stub, admin, name="Shoes")
    trail = await new_category(stub, admin, parent=shoes.id, name="Trail")
    muddy = await new_category(stub, admin, parent=trail.id, name="Muddy")
    elsewhere = await new_category(stub, admin, name="Hats")
    a = await new_product(stub, admin, shoes.id, name="City Walker", price=eur(5000), stock=3)
    b = await new_product(
        stub, admin, trail.id, name="Trail Runner", description="For MUDDY paths", price=eur(8000), stock=0
    )
    c = await new_product(stub, admin, muddy.id, name="Bog Boot", description="C++ grip (tm)", price=eur(12000))
    d = await new_product(stub, admin, trail.id, name="Dollar Trail", price=eur(8000, "USD"))
    await new_product(stub, admin, elsewhere.id, name="Trail Cap", price=eur(1500))

    def ids(products: list[product_pb2.Product]) -> set[str]:
        return {p.id for p in products}

    assert ids(await list_all(stub, category_id=shoes.id)) == {a.id, b.id, c.id, d.id}  # with its children
    assert ids(await list_all(stub, category_id=trail.id)) == {b.id, c.id, d.id}
    assert ids(await list_all(stub, category_id=muddy.id)) == {c.id}
    assert await list_all(stub, category_id=str(uuid.uuid4())) == []
    assert ids(await list_all(stub, category_id=shoes.id, min_price=eur(6000))) == {b.id, c.id}
    assert ids(await list_all(stub, category_id=shoes.id, max_price=eur(8000))) == {a.id, b.id}
    assert ids(await list_all(stub, category_id=shoes.id, min_price=eur(8000), max_price=eur(8000))) == {b.id}
    assert ids(await list_all(stub, category_id=shoes.id, min_price=eur(0, "USD"))) == {d.id}
    assert ids(await list_all(stub, category_id=shoes.id, in_stock_only=True)) == {a.id, c.id, d.id}
    # Text: words, case-insensitive, over name and description, matched literally.
    assert ids(await list_all(stub, category_id=shoes.id, query="muddy")) == {b.id}
    assert ids(await list_all(stub, category_id=shoes.id, query="TRAIL")) == {b.id, d.id}
    assert ids(await list_all(stub, category_id=shoes.id, query="trail dollar")) == {d.id}
    assert ids(await list_all(stub, category_id=shoes.id, query="c++ (tm)")) == {c.id}
    assert await list_all(stub, category_id=shoes.id, query=".*") == []
    # Filters combine: b matches the words and the price but has no stock; d is in dollars.
    assert await list_all(stub, category_id=shoes.id, query="trail", in_stock_only=True, max_price=eur(9000)) == []
    assert ids(await list_all(stub, category_id=shoes.id, query="boot", min_price=eur(10000), in_stock_only=True)) == {
        c.id
    }


@pytest.mark.parametrize(
    ("sort", "expected"),
    [
        (product_pb2.PRODUCT_SORT_PRICE_ASC, ["b", "a", "C", "d"]),
        (product_pb2.PRODUCT_SORT_PRICE_DESC, ["d", "C", "a", "b"]),
        (product_pb2.PRODUCT_SORT_NAME_ASC, ["a", "b", "C", "d"]),
        (product_pb2.PRODUCT_SORT_NAME_DESC, ["d", "C", "b", "a"]),
        (product_pb2.PRODUCT_SORT_OLDEST, ["C", "a", "d", "b"]),
        (product_pb2.PRODUCT_SORT_NEWEST, ["b", "d", "a", "C"]),
        (product_pb2.PRODUCT_SORT_UNSPECIFIED, ["b", "d", "a", "C"]),
    ],
)
async def test_sorting(stub, admin, sort: product_pb2.ProductSort.ValueType, expected: list[str]) -> None:
    category = await new_category(stub, admin)
    for name, price in (("C", 300), ("a", 200), ("d", 400), ("b", 100)):
        await new_product(stub, admin, category.id, name=name, price=eur(price))
        await asyncio.sleep(0.005)  # distinct creation times
    assert [p.name for p in await list_all(stub, category_id=category.id, sort=sort)] == expected


@pytest.mark.parametrize(
    "sort",
    [product_pb2.PRODUCT_SORT_PRICE_ASC, product_pb2.PRODUCT_SORT_NEWEST, product_pb2.PRODUCT_SORT_NAME_DESC],
)
async def test_keyset_paging_stays_correct_while_products_are_added(
    stub, admin, sort: product_pb2.ProductSort.ValueType
) -> None:
    category = await new_category(stub, admin)
    # Many equal prices and names: the id breaks ties, so no item is skipped or repeated.
    original = {
        (await new_product(stub, admin, category.id, name=f"item {i % 4}", price=eur(100 * (i % 5)))).id
        for i in range(23)
    }
    seen: list[str] = []
    token, pages, added = "", 0, set()
    while True:
        reply = await stub.ListProducts(
            product_pb2.ListProductsRequest(
                category_id=category.id, sort=sort, page=paging_pb2.PageRequest(page_size=4, page_token=token)
            )
        )
        pages += 1
        assert len(reply.products) <= 4
        seen += [p.id for p in reply.products]
        token = reply.page.next_page_token
        if not token:
            break
        # Inserts between pages: before, inside and after the part already read.
        for price in (0, 200, 900):
            added.add((await new_product(stub, admin, category.id, name="item 2", price=eur(price))).id)
    assert len(seen) == len(set(seen)), "a product was listed twice"
    assert original <= set(seen), "a product that existed all along was skipped"
    assert set(seen) <= original | added
    assert pages >= 6
    # The token is bound to its query.
    first = await stub.ListProducts(
        product_pb2.ListProductsRequest(category_id=category.id, sort=sort, page=paging_pb2.PageRequest(page_size=2))
    )
    other_sort = product_pb2.PRODUCT_SORT_OLDEST
    bad = await failure(
        stub.ListProducts(
            product_pb2.ListProductsRequest(
                category_id=category.id,
                sort=other_sort,
                page=paging_pb2.PageRequest(page_size=2, page_token=first.page.next_page_token),
            )
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert [e.field for e in bad.errors] == ["page.page_token"]


async def test_batch_get(stub, admin) -> None:
    category = await new_category(stub, admin)
    a = await new_product(stub, admin, category.id, name="A")
    b = await new_product(stub, admin, category.id, name="B")
    await stub.ArchiveProduct(product_pb2.ArchiveProductRequest(product_id=b.id), metadata=admin)
    unknown = str(uuid.uuid4())
    reply = await stub.BatchGetProducts(product_pb2.BatchGetProductsRequest(product_ids=[b.id, unknown, a.id, b.id]))
    assert [p.id for p in reply.products] == [b.id, a.id]
    assert reply.products[0].status == product_pb2.PRODUCT_STATUS_ARCHIVED
    assert list(reply.missing_ids) == [unknown]
    await failure(
        stub.BatchGetProducts(product_pb2.BatchGetProductsRequest(product_ids=[a.id] * 501)),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    bad = await failure(
        stub.BatchGetProducts(product_pb2.BatchGetProductsRequest(product_ids=[a.id, "x"])),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert [e.field for e in bad.errors] == ["product_ids[1]"]


# --- stock reservations -------------------------------------------------------------------------------


async def test_concurrent_reservations_never_oversell(stub, admin) -> None:
    category = await new_category(stub, admin)
    product = await new_product(stub, admin, category.id, stock=10)
    results = await asyncio.gather(
        *(reserve(stub, str(uuid.uuid4()), (product.id, 1)) for _ in range(50)), return_exceptions=True
    )
    reserved = [r for r in results if isinstance(r, product_pb2.ReserveStockResponse)]
    refused = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
    assert len(reserved) == 10
    assert len(refused) == 40
    for error in refused:
        assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
        problem = problem_from_rpc_error(error)
        assert problem.reason == "OUT_OF_STOCK"
        assert problem.extra["product_id"] == product.id
        assert problem.extra["requested"] == "1"
        assert problem.extra["available"] == "0"
    assert all(r.reservation.status == product_pb2.RESERVATION_STATUS_RESERVED for r in reserved)
    assert await stock_of(stub, product.id) == 0


async def test_multi_item_reservation_is_all_or_nothing(stub, admin) -> None:
    category = await new_category(stub, admin)
    plenty = await new_product(stub, admin, category.id, name="plenty", stock=5)
    scarce = await new_product(stub, admin, category.id, name="scarce", stock=1)
    short = await failure(
        reserve(stub, str(uuid.uuid4()), (plenty.id, 2), (scarce.id, 2)), grpc.StatusCode.FAILED_PRECONDITION
    )
    assert short.reason == "OUT_OF_STOCK"
    assert (short.extra["product_id"], short.extra["requested"], short.extra["available"]) == (scarce.id, "2", "1")
    assert await stock_of(stub, plenty.id) == 5  # the first item's units came back
    assert await stock_of(stub, scarce.id) == 1

    # Racing multi-item reservations: the scarcer product decides how many succeed.
    many = await new_product(stub, admin, category.id, name="many", stock=40)
    few = await new_product(stub, admin, category.id, name="few", stock=7)
    results = await asyncio.gather(
        *(reserve(stub, str(uuid.uuid4()), (many.id, 2), (few.id, 1)) for _ in range(25)), return_exceptions=True
    )
    ok = [r for r in results if isinstance(r, product_pb2.ReserveStockResponse)]
    assert len(ok) == 7
    assert all(isinstance(r, grpc.aio.AioRpcError) and r.code() == grpc.StatusCode.FAILED_PRECONDITION
               for r in results if r not in ok)  # fmt: skip
    assert await stock_of(stub, many.id) == 40 - 2 * 7
    assert await stock_of(stub, few.id) == 0


async def test_reserve_release_commit_are_idempotent(stub, admin) -> None:
    category = await new_category(stub, admin)
    a = await new_product(stub, admin, category.id, name="a", stock=10)
    b = await new_product(stub, admin, category.id, name="b", stock=10)
    rid = str(uuid.uuid4())

    first = await reserve(stub, rid, (a.id, 3), (b.id, 1))
    repeats = await asyncio.gather(*(reserve(stub, rid, (b.id, 1), (a.id, 3)) for _ in range(5)))
    assert first.reservation.status == product_pb2.RESERVATION_STATUS_RESERVED
    assert {r.reservation.created_at.ToDatetime() for r in repeats} == {first.reservation.created_at.ToDatetime()}
    assert (await stock_of(stub, a.id), await stock_of(stub, b.id)) == (7, 9)  # taken once

    conflict = await failure(reserve(stub, rid, (a.id, 4), (b.id, 1)), grpc.StatusCode.ALREADY_EXISTS)
    assert conflict.reason == "RESERVATION_CONFLICT"

    release = product_pb2.ReleaseReservationRequest(reservation_id=rid)
    released = await asyncio.gather(*(stub.ReleaseReservation(release) for _ in range(4)))
    assert {r.reservation.status for r in released} == {product_pb2.RESERVATION_STATUS_RELEASED}
    assert (await stock_of(stub, a.id), await stock_of(stub, b.id)) == (10, 10)  # returned once
    after = await failure(reserve(stub, rid, (a.id, 3), (b.id, 1)), grpc.StatusCode.FAILED_PRECONDITION)
    assert after.reason == "INVALID_STATE" and after.extra["current_state"] == "RESERVATION_STATUS_RELEASED"
    committed_late = await failure(
        stub.CommitReservation(product_pb2.CommitReservationRequest(reservation_id=rid)),
        grpc.StatusCode.FAILED_PRECONDITION,
    )
    assert committed_late.reason == "INVALID_STATE"

    sold = str(uuid.uuid4())
    await reserve(stub, sold, (a.id, 2))
    commit = product_pb2.CommitReservationRequest(reservation_id=sold)
    commits = await asyncio.gather(*(stub.CommitReservation(commit) for _ in range(3)))
    assert {c.reservation.status for c in commits} == {product_pb2.RESERVATION_STATUS_COMMITTED}
    assert await stock_of(stub, a.id) == 8  # sold units stay gone
    no_release = await failure(
        stub.ReleaseReservation(product_pb2.ReleaseReservationRequest(reservation_id=sold)),
        grpc.StatusCode.FAILED_PRECONDITION,
    )
    assert no_release.extra["current_state"] == "RESERVATION_STATUS_COMMITTED"
    assert await stock_of(stub, a.id) == 8

    # Releasing an id never reserved succeeds, and a reserve arriving late with it holds nothing.
    late = str(uuid.uuid4())
    tombstone = await stub.ReleaseReservation(product_pb2.ReleaseReservationRequest(reservation_id=late))
    assert tombstone.reservation.status == product_pb2.RESERVATION_STATUS_RELEASED
    await failure(reserve(stub, late, (a.id, 1)), grpc.StatusCode.FAILED_PRECONDITION)
    assert await stock_of(stub, a.id) == 8
    await failure(
        stub.CommitReservation(product_pb2.CommitReservationRequest(reservation_id=str(uuid.uuid4()))),
        grpc.StatusCode.NOT_FOUND,
    )

    # A refused reservation stays refused for its id, even once stock is back.
    refused = str(uuid.uuid4())
    await failure(reserve(stub, refused, (b.id, 11)), grpc.StatusCode.FAILED_PRECONDITION)
    await stub.UpdateProduct(
        product_pb2.UpdateProductRequest(
            product=product_pb2.Product(id=b.id, stock=50), update_mask=FieldMask(paths=["stock"])
        ),
        metadata=admin,
    )
    again = await failure(reserve(stub, refused, (b.id, 11)), grpc.StatusCode.FAILED_PRECONDITION)
    assert again.reason == "OUT_OF_STOCK" and again.extra["available"] == "10"
    assert await stock_of(stub, b.id) == 50


async def test_reservation_refusals(stub, admin) -> None:
    category = await new_category(stub, admin)
    product = await new_product(stub, admin, category.id, stock=5)
    archived = await new_product(stub, admin, category.id, stock=5)
    await stub.ArchiveProduct(product_pb2.ArchiveProductRequest(product_id=archived.id), metadata=admin)
    gone = await failure(
        reserve(stub, str(uuid.uuid4()), (product.id, 1), (archived.id, 1)), grpc.StatusCode.FAILED_PRECONDITION
    )
    assert gone.reason == "PRODUCT_ARCHIVED" and gone.extra["product_id"] == archived.id
    await failure(reserve(stub, str(uuid.uuid4()), (product.id, 1), (str(uuid.uuid4()), 1)), grpc.StatusCode.NOT_FOUND)
    bad = await failure(reserve(stub, "order-1", (product.id, 0), (product.id, 1)), grpc.StatusCode.INVALID_ARGUMENT)
    assert [e.field for e in bad.errors] == ["reservation_id"]
    bad = await failure(
        reserve(stub, str(uuid.uuid4()), (product.id, 0), (product.id, 1)), grpc.StatusCode.INVALID_ARGUMENT
    )
    assert [e.field for e in bad.errors] == ["items[0].quantity", "items[1].product_id"]
    assert await stock_of(stub, product.id) == 5

    # A product with units on hold cannot be deleted; once released it can.
    rid = str(uuid.uuid4())
    await reserve(stub, rid, (product.id, 2))
    held = await failure(
        stub.DeleteProduct(product_pb2.DeleteProductRequest(product_id=product.id), metadata=admin),
        grpc.StatusCode.FAILED_PRECONDITION,
    )
    assert held.reason == "INVALID_STATE"
    await stub.ReleaseReservation(product_pb2.ReleaseReservationRequest(reservation_id=rid))
    await stub.DeleteProduct(product_pb2.DeleteProductRequest(product_id=product.id), metadata=admin)


async def test_an_interrupted_reservation_is_resumed_or_rolled_back(stub, admin, catalog_db) -> None:
    """A caller crashed after the record was written and one product was held:
    a retry with the same id finishes it; left alone, the sweep rolls it back."""
    category = await new_category(stub, admin)
    a = await new_product(stub, admin, category.id, name="a", stock=10)
    b = await new_product(stub, admin, category.id, name="b", stock=10)

    async def crash_midway(rid: str, updated_at: datetime) -> None:
        await catalog_db["reservations"].insert_one(
            {
                "_id": rid,
                "items": [{"product_id": a.id, "quantity": 4}, {"product_id": b.id, "quantity": 2}],
                "product_ids": [a.id, b.id],
                "state": "pending",
                "failure": None,
                "created_at": updated_at,
                "updated_at": updated_at,
            }
        )
        # The first hold was made; the second never was.
        await catalog_db["products"].update_one({"_id": a.id}, {"$inc": {"stock": -4}, "$set": {f"holds.{rid}": 4}})

    resumed = str(uuid.uuid4())
    await crash_midway(resumed, datetime.now(UTC))
    reply = await reserve(stub, resumed, (a.id, 4), (b.id, 2))
    assert reply.reservation.status == product_pb2.RESERVATION_STATUS_RESERVED
    assert (await stock_of(stub, a.id), await stock_of(stub, b.id)) == (6, 8)  # a not taken twice
    await stub.ReleaseReservation(product_pb2.ReleaseReservationRequest(reservation_id=resumed))
    assert (await stock_of(stub, a.id), await stock_of(stub, b.id)) == (10, 10)

    abandoned = str(uuid.uuid4())
    await crash_midway(abandoned, datetime.now(UTC) - timedelta(minutes=5))
    # And a hold left behind by a reservation already released (two instances racing, then a crash).
    c = await new_product(stub, admin, category.id, name="c", stock=10)
    leaked = str(uuid.uuid4())
    long_ago = datetime.now(UTC) - timedelta(minutes=5)
    await catalog_db["reservations"].insert_one(
        {"_id": leaked, "items": [{"product_id": c.id, "quantity": 3}], "product_ids": [c.id], "state": "released",
         "failure": None, "created_at": long_ago, "updated_at": long_ago}
    )  # fmt: skip
    await catalog_db["products"].update_one({"_id": c.id}, {"$inc": {"stock": -3}, "$set": {f"holds.{leaked}": 3}})
    assert (await stock_of(stub, a.id), await stock_of(stub, c.id)) == (6, 7)
    for _ in range(300):  # the test cluster sweeps every second, and scans for stale holds every 10th sweep
        if (await stock_of(stub, a.id), await stock_of(stub, c.id)) == (10, 10):
            break
        await asyncio.sleep(0.1)
    assert (await stock_of(stub, a.id), await stock_of(stub, b.id), await stock_of(stub, c.id)) == (10, 10, 10)
    late = await failure(reserve(stub, abandoned, (a.id, 4), (b.id, 2)), grpc.StatusCode.ABORTED)
    assert "new id" in late.detail
    assert await stock_of(stub, b.id) == 10
    # The product can be deleted now: nothing holds it.
    await stub.DeleteProduct(product_pb2.DeleteProductRequest(product_id=c.id), metadata=admin)


# --- images -----------------------------------------------------------------------------------------


async def test_images_are_stored_served_and_deleted(stub, admin, s3_settings) -> None:
    category = await new_category(stub, admin)
    product = await new_product(stub, admin, category.id)
    s3 = s3_client(s3_settings)

    added = await stub.AddProductImage(
        product_pb2.AddProductImageRequest(
            product_id=product.id, content=PNG, content_type="application/octet-stream", filename="../cat.png"
        ),
        metadata=admin,
    )
    image = added.image
    assert (image.content_type, image.size_bytes, image.filename) == ("image/png", len(PNG), "cat.png")
    assert [i.id for i in added.product.images] == [image.id]
    key = f"products/{product.id}/{image.id}.png"
    stored = await asyncio.to_thread(s3.get_object, Bucket=s3_settings.s3_bucket, Key=key)
    assert stored["Body"].read() == PNG
    assert stored["ContentType"] == "image/png"
    async with httpx.AsyncClient(timeout=10) as http:
        fetched = await http.get(image.url)
    assert fetched.status_code == 200
    assert fetched.content == PNG

    for content, kind, ext in ((JPEG, "image/jpeg", "jpg"), (WEBP, "image/webp", "webp")):
        reply = await stub.AddProductImage(
            product_pb2.AddProductImageRequest(product_id=product.id, content=content, filename=f"x.{ext}"),
            metadata=admin,
        )
        assert reply.image.content_type == kind
    listed = (await stub.GetProduct(product_pb2.GetProductRequest(product_id=product.id))).product
    assert [i.content_type for i in listed.images] == ["image/png", "image/jpeg", "image/webp"]

    text = await failure(
        stub.AddProductImage(
            product_pb2.AddProductImageRequest(
                product_id=product.id, content=b"just some text, honest\n", content_type="image/png", filename="a.png"
            ),
            metadata=admin,
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert text.reason == "UNSUPPORTED_IMAGE_TYPE" and text.status == 415
    big = await failure(
        stub.AddProductImage(
            product_pb2.AddProductImageRequest(product_id=product.id, content=PNG + b"\x00" * (4 * 1024 * 1024)),
            metadata=admin,
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert big.reason == "IMAGE_TOO_LARGE" and big.status == 413 and big.extra["max_bytes"] == str(4 * 1024 * 1024)
    await failure(
        stub.AddProductImage(
            product_pb2.AddProductImageRequest(product_id=str(uuid.uuid4()), content=PNG), metadata=admin
        ),
        grpc.StatusCode.NOT_FOUND,
    )
    objects = await asyncio.to_thread(
        s3.list_objects_v2, Bucket=s3_settings.s3_bucket, Prefix=f"products/{product.id}/"
    )
    assert len(objects["Contents"]) == 3  # refused uploads left nothing behind

    removed = await stub.DeleteProductImage(
        product_pb2.DeleteProductImageRequest(product_id=product.id, image_id=image.id), metadata=admin
    )
    assert [i.content_type for i in removed.product.images] == ["image/jpeg", "image/webp"]
    with pytest.raises(s3.exceptions.ClientError) as missing:
        await asyncio.to_thread(s3.head_object, Bucket=s3_settings.s3_bucket, Key=key)
    assert missing.value.response["Error"]["Code"] == "404"
    async with httpx.AsyncClient(timeout=10) as http:
        assert (await http.get(image.url)).status_code == 404
    await failure(
        stub.DeleteProductImage(
            product_pb2.DeleteProductImageRequest(product_id=product.id, image_id=image.id), metadata=admin
        ),
        grpc.StatusCode.NOT_FOUND,
    )

    # Deleting the product deletes its remaining objects.
    await stub.DeleteProduct(product_pb2.DeleteProductRequest(product_id=product.id), metadata=admin)
    objects = await asyncio.to_thread(
        s3.list_objects_v2, Bucket=s3_settings.s3_bucket, Prefix=f"products/{product.id}/"
    )
    assert objects.get("KeyCount", 0) == 0


# --- grpcurl ----------------------------------------------------------------------------------------


async def grpcurl(cluster: Cluster, *args: str) -> str:
    """grpcurl with the edge's certificate (every service wants mutual TLS)."""
    process = await asyncio.create_subprocess_exec(
        *cluster.grpcurl(*args), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await process.communicate()
    assert process.returncode == 0, err.decode()
    return out.decode()


async def test_grpcurl_lists_and_calls_the_service(stub, admin, product_cluster: Cluster) -> None:
    category = await new_category(stub, admin)
    product = await new_product(stub, admin, category.id, name="Grpcurl Boot", price=eur(4200))
    target = product_cluster.addr("product_svc")
    services = (await grpcurl(product_cluster, target, "list")).split()
    assert {"shop.product.v1.ProductService", "grpc.health.v1.Health"} <= set(services)
    methods = (await grpcurl(product_cluster, target, "list", "shop.product.v1.ProductService")).split()
    assert "shop.product.v1.ProductService.ReserveStock" in methods

    got = json.loads(
        await grpcurl(
            product_cluster,
            "-d",
            json.dumps({"product_id": product.id}),
            target,
            "shop.product.v1.ProductService/GetProduct",
        )
    )
    assert got["product"]["name"] == "Grpcurl Boot"
    assert got["product"]["price"] == {"amount_minor": "4200", "currency_code": "EUR"}
    listed = json.loads(
        await grpcurl(
            product_cluster,
            "-d",
            json.dumps({"category_id": category.id, "sort": "PRODUCT_SORT_PRICE_ASC"}),
            target,
            "shop.product.v1.ProductService/ListProducts",
        )
    )
    assert [p["id"] for p in listed["products"]] == [product.id]
