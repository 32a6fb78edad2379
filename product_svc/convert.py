"""Proto ⇄ domain for ProductService (Timestamp and Money through :mod:`common.convert`)."""

from __future__ import annotations

from collections.abc import Callable

from shop.product.v1 import product_pb2

from common.convert import money_parts, money_to_proto, timestamp
from product_svc.domain.categories import Category, CategoryKey
from product_svc.domain.images import Image, Upload
from product_svc.domain.listing import ListingRequest
from product_svc.domain.products import ACTIVE, ARCHIVED, Product, ProductInput
from product_svc.domain.reservations import Reservation

# An object key -> the URL a browser fetches the image at.
ImageUrl = Callable[[str], str]

STATUS_TO_PROTO = {
    ACTIVE: product_pb2.PRODUCT_STATUS_ACTIVE,
    ARCHIVED: product_pb2.PRODUCT_STATUS_ARCHIVED,
}
STATUS_OF_PROTO = {value: key for key, value in STATUS_TO_PROTO.items()}
SORT_OF_PROTO: dict[int, str] = {
    product_pb2.PRODUCT_SORT_UNSPECIFIED: "newest",
    product_pb2.PRODUCT_SORT_NEWEST: "newest",
    product_pb2.PRODUCT_SORT_OLDEST: "oldest",
    product_pb2.PRODUCT_SORT_PRICE_ASC: "price_asc",
    product_pb2.PRODUCT_SORT_PRICE_DESC: "price_desc",
    product_pb2.PRODUCT_SORT_NAME_ASC: "name_asc",
    product_pb2.PRODUCT_SORT_NAME_DESC: "name_desc",
}


def category_to_proto(category: Category) -> product_pb2.Category:
    message = product_pb2.Category(
        id=category.id, name=category.name, slug=category.slug, created_at=timestamp(category.created_at)
    )
    if category.parent_id is not None:
        message.parent_id = category.parent_id
    return message


def category_key(request: product_pb2.GetCategoryRequest) -> CategoryKey:
    key = request.WhichOneof("key")
    if key == "id":
        return CategoryKey(id=request.id)
    if key == "slug":
        return CategoryKey(slug=request.slug)
    return CategoryKey()


def reservation_to_proto(reservation: Reservation) -> product_pb2.Reservation:
    return product_pb2.Reservation(
        reservation_id=reservation.id,
        items=[product_pb2.ReservationItem(product_id=i.product_id, quantity=i.quantity) for i in reservation.items],
        status=product_pb2.ReservationStatus.Value(reservation.status_name),
        created_at=timestamp(reservation.created_at),
        updated_at=timestamp(reservation.updated_at),
    )


def reservation_items(request: product_pb2.ReserveStockRequest) -> list[tuple[str, int]]:
    return [(item.product_id, item.quantity) for item in request.items]


def product_input(message: product_pb2.Product | product_pb2.CreateProductRequest) -> ProductInput:
    status = STATUS_OF_PROTO.get(message.status) if isinstance(message, product_pb2.Product) else None
    return ProductInput(
        name=message.name,
        description=message.description,
        category_id=message.category_id,
        price=money_parts(message.price) if message.HasField("price") else None,
        stock=message.stock,
        attributes=dict(message.attributes),
        weight_grams=message.weight_grams,
        status=status,
    )


def listing_request(request: product_pb2.ListProductsRequest) -> ListingRequest:
    return ListingRequest(
        category_id=request.category_id if request.HasField("category_id") else None,
        min_price=money_parts(request.min_price) if request.HasField("min_price") else None,
        max_price=money_parts(request.max_price) if request.HasField("max_price") else None,
        in_stock_only=request.in_stock_only,
        query=request.query,
        sort=SORT_OF_PROTO.get(request.sort, "?"),
        include_archived=request.include_archived,
        page_size_value=request.page.page_size,
        page_token=request.page.page_token,
    )


def upload(request: product_pb2.AddProductImageRequest) -> Upload:
    return Upload(product_id=request.product_id, content=request.content, filename=request.filename)


def image_to_proto(image: Image, url: ImageUrl) -> product_pb2.ProductImage:
    return product_pb2.ProductImage(
        id=image.id,
        url=url(image.key),
        content_type=image.content_type,
        size_bytes=image.size_bytes,
        filename=image.filename,
        created_at=timestamp(image.created_at),
    )


def product_to_proto(product: Product, url: ImageUrl) -> product_pb2.Product:
    return product_pb2.Product(
        id=product.id,
        name=product.name,
        description=product.description,
        category_id=product.category_id,
        price=money_to_proto(product.price),
        stock=product.stock,
        attributes=product.attributes,
        images=[image_to_proto(image, url) for image in product.images],
        status=STATUS_TO_PROTO[product.status],
        weight_grams=product.weight_grams,
        created_at=timestamp(product.created_at),
        updated_at=timestamp(product.updated_at),
    )
