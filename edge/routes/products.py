"""The catalog: categories (``/api/v1/categories``), products and their images
(``/api/v1/products``).  Reads are public; writes need an admin's token."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from datetime import datetime
from typing import Annotated, Any, Literal, Self, TypeVar

from google.protobuf.field_mask_pb2 import FieldMask
from pydantic import BaseModel, Field
from shop.common.v1 import money_pb2
from shop.product.v1 import product_pb2
from starlette.requests import Request

from common.convert import optional_datetime_of
from common.errors import FieldViolation
from edge.api import Api, Contract
from edge.bodies import UploadedFile
from edge.clients import call_options, clients
from edge.problems import HttpProblemError, renaming_fields
from edge.routes.comments import RatingSummary, rating_summary
from edge.routes.models import Money, PageQuery, Strict, Uuid

api = Api(upstreams=["product_svc"])

T = TypeVar("T")
INT32_MAX = 2**31 - 1

Status = Literal["active", "archived"]
STATUS_TO_PROTO: dict[Status, product_pb2.ProductStatus.ValueType] = {
    "active": product_pb2.PRODUCT_STATUS_ACTIVE,
    "archived": product_pb2.PRODUCT_STATUS_ARCHIVED,
}
STATUS_OF_PROTO: dict[int, Status] = {value: key for key, value in STATUS_TO_PROTO.items()}
Sort = Literal["newest", "oldest", "price_asc", "price_desc", "name_asc", "name_desc"]
SORT_TO_PROTO: dict[Sort, product_pb2.ProductSort.ValueType] = {
    "newest": product_pb2.PRODUCT_SORT_NEWEST,
    "oldest": product_pb2.PRODUCT_SORT_OLDEST,
    "price_asc": product_pb2.PRODUCT_SORT_PRICE_ASC,
    "price_desc": product_pb2.PRODUCT_SORT_PRICE_DESC,
    "name_asc": product_pb2.PRODUCT_SORT_NAME_ASC,
    "name_desc": product_pb2.PRODUCT_SORT_NAME_DESC,
}

Id = Annotated[Uuid, Field(min_length=1, max_length=64)]
Name = Annotated[str, Field(min_length=1, max_length=200)]
Description = Annotated[str, Field(max_length=10_000)]
Stock = Annotated[int, Field(ge=0, le=INT32_MAX, description="units available")]
Weight = Annotated[int, Field(ge=0, le=INT32_MAX, description="grams per unit")]
Attributes = Annotated[dict[str, str], Field(max_length=50, description='e.g. {"color": "red"}')]


# --- shapes -----------------------------------------------------------------------------------------


class Category(BaseModel):
    id: Uuid
    name: str
    slug: str
    parent_id: Uuid | None
    created_at: datetime | None

    @classmethod
    def of(cls, message: product_pb2.Category) -> Category:
        return cls(
            id=message.id,
            name=message.name,
            slug=message.slug,
            parent_id=message.parent_id if message.HasField("parent_id") else None,
            created_at=optional_datetime_of(message.created_at),
        )


class CategoryPage(BaseModel):
    items: list[Category]
    next_page_token: str


class ProductImage(BaseModel):
    id: Uuid
    url: str = Field(description="fetchable by a browser; presigned URLs expire, so re-read the product for a new one")
    content_type: str
    size_bytes: int
    filename: str
    created_at: datetime | None

    @classmethod
    def of(cls, message: product_pb2.ProductImage) -> ProductImage:
        return cls(
            id=message.id,
            url=message.url,
            content_type=message.content_type,
            size_bytes=message.size_bytes,
            filename=message.filename,
            created_at=optional_datetime_of(message.created_at),
        )


class Product(BaseModel):
    id: Uuid
    name: str
    description: str
    category_id: Uuid
    price: Money
    stock: int
    attributes: dict[str, str]
    images: list[ProductImage]
    status: Status
    weight_grams: int
    created_at: datetime | None
    updated_at: datetime | None

    @classmethod
    def of(cls, message: product_pb2.Product, **extra: Any) -> Self:
        """The model of a product message; ``extra`` fills a subclass's own fields."""
        return cls(
            id=message.id,
            name=message.name,
            description=message.description,
            category_id=message.category_id,
            price=Money.of(message.price),
            stock=message.stock,
            attributes=dict(message.attributes),
            images=[ProductImage.of(image) for image in message.images],
            status=STATUS_OF_PROTO.get(message.status, "active"),
            weight_grams=message.weight_grams,
            created_at=optional_datetime_of(message.created_at),
            updated_at=optional_datetime_of(message.updated_at),
            **extra,
        )


class ProductPage(BaseModel):
    items: list[Product]
    next_page_token: str


class UploadedImage(BaseModel):
    image: ProductImage
    product: Product


class CategoryBody(Strict):
    name: Annotated[str, Field(min_length=1, max_length=100)]
    slug: Annotated[str, Field(min_length=1, max_length=100, description="lower-case letters, digits and hyphens")]
    parent_id: Id | None = None


class ProductBody(Strict):
    name: Name
    description: Description = ""
    category_id: Id
    price: Money
    stock: Stock = 0
    attributes: Attributes = Field(default_factory=dict)
    weight_grams: Weight = 0


class ProductPatch(Strict):
    """Only the fields present change; ``attributes`` replaces the whole map."""

    name: Name | None = None
    description: Description | None = None
    category_id: Id | None = None
    price: Money | None = None
    stock: Stock | None = None
    attributes: Attributes | None = None
    weight_grams: Weight | None = None
    status: Status | None = None


class ImageUpload(Strict):
    file: UploadedFile = Field(description="a JPEG, PNG or WebP image (its type is read from the content)")


class CategoriesQuery(PageQuery):
    parent_id: Id | None = Field(default=None, description="only the direct children of this category")


class ProductsQuery(PageQuery):
    category_id: Id | None = Field(default=None, description="this category and every category below it")
    min_price: Annotated[int, Field(ge=0, le=10**15)] | None = Field(default=None, description="minor units")
    max_price: Annotated[int, Field(ge=0, le=10**15)] | None = Field(default=None, description="minor units")
    currency: Annotated[str, Field(min_length=3, max_length=3)] | None = Field(
        default=None, description="currency of min_price/max_price (required with them)"
    )
    in_stock: bool = False
    q: Annotated[str, Field(max_length=200, description="words to find in name or description")] = ""
    sort: Sort = "newest"
    include_archived: bool = Field(default=False, description="admins only")


# --- calls ------------------------------------------------------------------------------------------

# The service names fields after the proto; clients know the JSON names.
_FIELD_NAMES = {
    "min_price.amount_minor": "min_price",
    "max_price.amount_minor": "max_price",
    "min_price.currency_code": "currency",
    "max_price.currency_code": "currency",
    "in_stock_only": "in_stock",
    "query": "q",
    "page.page_token": "page_token",
    "page.page_size": "page_size",
    "content": "file",
}


def _json_field(name: str) -> str:
    name = name.removeprefix("product.")
    return _FIELD_NAMES.get(name, name.replace("currency_code", "currency"))


async def _call(call: Awaitable[T]) -> T:
    """An upstream call whose 4xx problems name the fields as this API does."""
    return await renaming_fields(call, _json_field)


# --- /api/v1/categories -------------------------------------------------------------------------------


@api.operation("GET", "/api/v1/categories", Contract(
    summary="List categories by name", tag="catalog",
    query=CategoriesQuery, response=CategoryPage,
))  # fmt: skip
async def list_categories(request: Request, query: CategoriesQuery) -> CategoryPage:
    message = product_pb2.ListCategoriesRequest(page=query.page())
    if query.parent_id is not None:
        message.parent_id = query.parent_id
    reply = await _call(clients(request).product.ListCategories(message, **call_options(request)))
    return CategoryPage(items=[Category.of(c) for c in reply.categories], next_page_token=reply.page.next_page_token)


@api.operation("POST", "/api/v1/categories", Contract(
    summary="Create a category (admin)", tag="catalog",
    body=CategoryBody, response=Category, status=201, auth=True, errors=(403, 404, 409),
))  # fmt: skip
async def create_category(request: Request, body: CategoryBody) -> Category:
    """The slug is unique (409 when taken); an unknown ``parent_id`` is 404."""
    message = product_pb2.CreateCategoryRequest(name=body.name, slug=body.slug)
    if body.parent_id is not None:
        message.parent_id = body.parent_id
    reply = await _call(clients(request).product.CreateCategory(message, **call_options(request)))
    return Category.of(reply.category)


# --- /api/v1/products ------------------------------------------------------------------------------------


@api.operation("GET", "/api/v1/products", Contract(
    summary="List, filter, search and sort products", tag="catalog",
    query=ProductsQuery, response=ProductPage, errors=(401, 403),
))  # fmt: skip
async def list_products(request: Request, query: ProductsQuery) -> ProductPage:
    """Active products only, unless an admin asks for ``include_archived``. Page
    with ``next_page_token``; a token only works with the filters and sort that
    produced it."""
    bounded = query.min_price is not None or query.max_price is not None
    if bounded and query.currency is None:
        raise HttpProblemError(
            400,
            "a price range needs its currency",
            [FieldViolation("currency", "is required with min_price or max_price")],
        )
    message = product_pb2.ListProductsRequest(
        page=query.page(),
        in_stock_only=query.in_stock,
        query=query.q,
        sort=SORT_TO_PROTO[query.sort],
        include_archived=query.include_archived,
    )
    if query.category_id is not None:
        message.category_id = query.category_id
    currency = query.currency or ""
    if query.min_price is not None:
        message.min_price.CopyFrom(money_pb2.Money(amount_minor=query.min_price, currency_code=currency))
    if query.max_price is not None:
        message.max_price.CopyFrom(money_pb2.Money(amount_minor=query.max_price, currency_code=currency))
    reply = await _call(clients(request).product.ListProducts(message, **call_options(request)))
    return ProductPage(items=[Product.of(p) for p in reply.products], next_page_token=reply.page.next_page_token)


@api.operation("POST", "/api/v1/products", Contract(
    summary="Create a product (admin)", tag="catalog",
    body=ProductBody, response=Product, status=201, auth=True, errors=(403, 404),
))  # fmt: skip
async def create_product(request: Request, body: ProductBody) -> Product:
    """The category must exist (404 otherwise). Prices are integers of minor units
    with an ISO 4217 currency."""
    reply = await _call(
        clients(request).product.CreateProduct(
            product_pb2.CreateProductRequest(
                name=body.name,
                description=body.description,
                category_id=body.category_id,
                price=body.price.to_proto(),
                stock=body.stock,
                attributes=body.attributes,
                weight_grams=body.weight_grams,
            ),
            **call_options(request),
        )
    )
    return Product.of(reply.product)


class ProductDetail(Product):
    rating: RatingSummary | None = Field(description="its reviews' ratings (comment_svc); null when unavailable")


@api.operation("GET", "/api/v1/products/{product_id}", Contract(
    summary="One product (archived ones too)", tag="catalog",
    response=ProductDetail, errors=(400, 404),
))  # fmt: skip
async def get_product(request: Request) -> ProductDetail:
    """With the rating summary of its reviews."""
    product_id = request.path_params["product_id"]
    reply, rating = await asyncio.gather(
        _call(clients(request).product.GetProduct(
            product_pb2.GetProductRequest(product_id=product_id), **call_options(request)
        )),
        rating_summary(request, product_id),
    )  # fmt: skip
    return ProductDetail.of(reply.product, rating=rating)


@api.operation("PATCH", "/api/v1/products/{product_id}", Contract(
    summary="Change a product (admin)", tag="catalog",
    body=ProductPatch, response=Product, auth=True, errors=(403, 404),
))  # fmt: skip
async def update_product(request: Request, body: ProductPatch) -> Product:
    """``status`` archives (``archived``: hidden from listings, not sellable) or
    restores (``active``) a product."""
    present = body.model_dump(exclude_unset=True)
    if not present:
        raise HttpProblemError(400, f"send at least one of {', '.join(ProductPatch.model_fields)}")
    nulls = [FieldViolation(name, "must not be null") for name, value in present.items() if value is None]
    if nulls:
        raise HttpProblemError(400, "the request has invalid fields", nulls)
    product = product_pb2.Product(
        id=request.path_params["product_id"],
        name=body.name or "",
        description=body.description or "",
        category_id=body.category_id or "",
        stock=body.stock or 0,
        attributes=body.attributes or {},
        weight_grams=body.weight_grams or 0,
        status=STATUS_TO_PROTO[body.status] if body.status else product_pb2.PRODUCT_STATUS_UNSPECIFIED,
    )
    if body.price is not None:
        product.price.CopyFrom(body.price.to_proto())
    reply = await _call(
        clients(request).product.UpdateProduct(
            product_pb2.UpdateProductRequest(product=product, update_mask=FieldMask(paths=sorted(present))),
            **call_options(request),
        )
    )
    return Product.of(reply.product)


@api.operation("DELETE", "/api/v1/products/{product_id}", Contract(
    summary="Delete a product and its images (admin)", tag="catalog",
    status=204, auth=True, errors=(400, 403, 404, 409),
))  # fmt: skip
async def delete_product(request: Request) -> None:
    """A product with units held by open orders cannot be deleted (409): archive it instead."""
    await _call(
        clients(request).product.DeleteProduct(
            product_pb2.DeleteProductRequest(product_id=request.path_params["product_id"]), **call_options(request)
        )
    )


@api.operation("POST", "/api/v1/products/{product_id}/images", Contract(
    summary="Upload a product image (admin)", tag="catalog",
    form=ImageUpload, response=UploadedImage, status=201, auth=True, errors=(403, 404, 409, 413, 415),
))  # fmt: skip
async def upload_product_image(request: Request, form: ImageUpload) -> UploadedImage:
    """``multipart/form-data`` with the image in the field ``file``. The type is
    read from the content: anything but JPEG, PNG or WebP is 415 whatever its
    name; an image over the size limit is 413."""
    reply = await _call(
        clients(request).product.AddProductImage(
            product_pb2.AddProductImageRequest(
                product_id=request.path_params["product_id"],
                content=form.file.data,
                content_type=form.file.content_type,
                filename=form.file.filename,
            ),
            **call_options(request),
        )
    )
    return UploadedImage(image=ProductImage.of(reply.image), product=Product.of(reply.product))


@api.operation("DELETE", "/api/v1/products/{product_id}/images/{image_id}", Contract(
    summary="Delete a product image (admin)",
    tag="catalog", status=204, auth=True, errors=(400, 403, 404),
))  # fmt: skip
async def delete_product_image(request: Request) -> None:
    await _call(
        clients(request).product.DeleteProductImage(
            product_pb2.DeleteProductImageRequest(
                product_id=request.path_params["product_id"], image_id=request.path_params["image_id"]
            ),
            **call_options(request),
        )
    )
