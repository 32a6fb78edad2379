"""The ProductService servicer: proto in → domain rules and store → proto out."""

from __future__ import annotations

import contextlib
import logging
from datetime import datetime

import pymongo
from google.protobuf.timestamp_pb2 import Timestamp
from shop.common.v1 import money_pb2, paging_pb2
from shop.product.v1 import product_pb2, product_pb2_grpc

from common.auth import require_admin
from common.errors import FailedPreconditionError, NotFoundError
from common.grpc_server import Context
from common.identity import callers
from common.money import Money
from product_svc import domain
from product_svc.domain import Category, Image, Product, ProductInput, Reservation
from product_svc.images import ImageStorage
from product_svc.store import Store, utcnow

log = logging.getLogger("shop.product")

STATUS_TO_PROTO = {
    domain.ACTIVE: product_pb2.PRODUCT_STATUS_ACTIVE,
    domain.ARCHIVED: product_pb2.PRODUCT_STATUS_ARCHIVED,
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


def within_deadline(context: Context) -> contextlib.AbstractContextManager[None]:
    """Catalog reads inside stop at the caller's deadline: PyMongo sends what is
    left of it as ``maxTimeMS``, so the database stops a long scan nobody waits
    for any more (writes are left to finish: reservations must not stop midway)."""
    return pymongo.timeout(context.time_remaining())


# --- proto <-> domain -----------------------------------------------------------------------------


def _timestamp(value: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(value)
    return stamp


def money_to_proto(value: Money) -> money_pb2.Money:
    return money_pb2.Money(amount_minor=value.amount_minor, currency_code=value.currency)


def _money_in(message: money_pb2.Money) -> tuple[int, str]:
    return message.amount_minor, message.currency_code


def category_to_proto(category: Category) -> product_pb2.Category:
    message = product_pb2.Category(
        id=category.id, name=category.name, slug=category.slug, created_at=_timestamp(category.created_at)
    )
    if category.parent_id is not None:
        message.parent_id = category.parent_id
    return message


def reservation_to_proto(reservation: Reservation) -> product_pb2.Reservation:
    return product_pb2.Reservation(
        reservation_id=reservation.id,
        items=[product_pb2.ReservationItem(product_id=i.product_id, quantity=i.quantity) for i in reservation.items],
        status=product_pb2.ReservationStatus.Value(reservation.status_name),
        created_at=_timestamp(reservation.created_at),
        updated_at=_timestamp(reservation.updated_at),
    )


def product_input(message: product_pb2.Product | product_pb2.CreateProductRequest) -> ProductInput:
    status = STATUS_OF_PROTO.get(message.status) if isinstance(message, product_pb2.Product) else None
    return ProductInput(
        name=message.name,
        description=message.description,
        category_id=message.category_id,
        price=_money_in(message.price) if message.HasField("price") else None,
        stock=message.stock,
        attributes=dict(message.attributes),
        weight_grams=message.weight_grams,
        status=status,
    )


class ProductService(product_pb2_grpc.ProductServiceServicer):
    def __init__(self, *, store: Store, images: ImageStorage, image_max_bytes: int, image_max_count: int) -> None:
        self.store = store
        self.images = images
        self.image_max_bytes = image_max_bytes
        self.image_max_count = image_max_count

    def image_to_proto(self, image: Image) -> product_pb2.ProductImage:
        return product_pb2.ProductImage(
            id=image.id,
            url=self.images.url(image.key),
            content_type=image.content_type,
            size_bytes=image.size_bytes,
            filename=image.filename,
            created_at=_timestamp(image.created_at),
        )

    def product_to_proto(self, product: Product) -> product_pb2.Product:
        return product_pb2.Product(
            id=product.id,
            name=product.name,
            description=product.description,
            category_id=product.category_id,
            price=money_to_proto(product.price),
            stock=product.stock,
            attributes=product.attributes,
            images=[self.image_to_proto(image) for image in product.images],
            status=STATUS_TO_PROTO[product.status],
            weight_grams=product.weight_grams,
            created_at=_timestamp(product.created_at),
            updated_at=_timestamp(product.updated_at),
        )

    async def _product(self, product_id: str, name: str = "product_id") -> Product:
        product = await self.store.product(domain.parse_id(product_id, name))
        if product is None:
            raise NotFoundError(f"no product {product_id}")
        return product

    # -- categories

    @callers("edge")
    async def CreateCategory(
        self, request: product_pb2.CreateCategoryRequest, context: Context
    ) -> product_pb2.CreateCategoryResponse:
        require_admin()
        new = domain.validate_category(
            request.name, request.slug, request.parent_id if request.HasField("parent_id") else None
        )
        category = await self.store.create_category(new)
        log.info("category created", extra={"category_id": category.id, "slug": category.slug})
        return product_pb2.CreateCategoryResponse(category=category_to_proto(category))

    @callers("edge")
    async def GetCategory(
        self, request: product_pb2.GetCategoryRequest, context: Context
    ) -> product_pb2.GetCategoryResponse:
        key = request.WhichOneof("key")
        if key == "id":
            category = await self.store.category(domain.parse_id(request.id, "id"))
        elif key == "slug":
            problem = domain.slug_problem(request.slug)
            if problem:
                raise domain.invalid("slug", problem)
            category = await self.store.category_by_slug(request.slug)
        else:
            raise domain.invalid("key", "give the category's id or its slug")
        if category is None:
            raise NotFoundError(f"no category {getattr(request, key)!r}")
        return product_pb2.GetCategoryResponse(category=category_to_proto(category))

    @callers("edge")
    async def ListCategories(
        self, request: product_pb2.ListCategoriesRequest, context: Context
    ) -> product_pb2.ListCategoriesResponse:
        parent = domain.parse_id(request.parent_id, "parent_id") if request.HasField("parent_id") else None
        size = domain.page_size(request.page.page_size)
        fingerprint = domain.query_fingerprint("categories", parent)
        after = domain.decode_page_token(request.page.page_token, fingerprint, str)
        found = await self.store.list_categories(parent, size + 1, after)
        page, token = found[:size], ""
        if len(found) > size:
            last = page[-1]
            token = domain.encode_page_token(fingerprint, domain.Cursor(key=domain.sort_name(last.name), id=last.id))
        return product_pb2.ListCategoriesResponse(
            categories=[category_to_proto(c) for c in page], page=paging_pb2.PageResponse(next_page_token=token)
        )

    # -- products

    @callers("edge")
    async def CreateProduct(
        self, request: product_pb2.CreateProductRequest, context: Context
    ) -> product_pb2.CreateProductResponse:
        require_admin()
        fields = domain.validate_new_product(product_input(request))
        product = await self.store.create_product(fields)
        log.info("product created", extra={"product_id": product.id})
        return product_pb2.CreateProductResponse(product=self.product_to_proto(product))

    # comment_svc: does the reviewed product exist?
    @callers("edge", "comment_svc")
    async def GetProduct(
        self, request: product_pb2.GetProductRequest, context: Context
    ) -> product_pb2.GetProductResponse:
        with within_deadline(context):
            product = await self._product(request.product_id)
        return product_pb2.GetProductResponse(product=self.product_to_proto(product))

    @callers("edge")
    async def UpdateProduct(
        self, request: product_pb2.UpdateProductRequest, context: Context
    ) -> product_pb2.UpdateProductResponse:
        require_admin()
        product_id = domain.parse_id(request.product.id, "product.id")
        changes = domain.validate_update(list(request.update_mask.paths), product_input(request.product))
        product = await self.store.update_product(product_id, changes)
        if product is None:
            raise NotFoundError(f"no product {product_id}")
        return product_pb2.UpdateProductResponse(product=self.product_to_proto(product))

    @callers("edge")
    async def ArchiveProduct(
        self, request: product_pb2.ArchiveProductRequest, context: Context
    ) -> product_pb2.ArchiveProductResponse:
        require_admin()
        product_id = domain.parse_id(request.product_id, "product_id")
        product = await self.store.archive_product(product_id)
        if product is None:
            raise NotFoundError(f"no product {product_id}")
        return product_pb2.ArchiveProductResponse(product=self.product_to_proto(product))

    @callers("edge")
    async def DeleteProduct(
        self, request: product_pb2.DeleteProductRequest, context: Context
    ) -> product_pb2.DeleteProductResponse:
        require_admin()
        deleted = await self.store.delete_product(domain.parse_id(request.product_id, "product_id"))
        await self.images.delete_quietly([image.key for image in deleted.images])
        log.info("product deleted", extra={"product_id": deleted.id})
        return product_pb2.DeleteProductResponse()

    @callers("edge")
    async def ListProducts(
        self, request: product_pb2.ListProductsRequest, context: Context
    ) -> product_pb2.ListProductsResponse:
        if request.include_archived:
            require_admin()
        query = domain.validate_product_query(
            category_id=request.category_id if request.HasField("category_id") else None,
            min_price=_money_in(request.min_price) if request.HasField("min_price") else None,
            max_price=_money_in(request.max_price) if request.HasField("max_price") else None,
            in_stock_only=request.in_stock_only,
            query=request.query,
            sort=SORT_OF_PROTO.get(request.sort, "?"),
            include_archived=request.include_archived,
            page_size_value=request.page.page_size,
            page_token=request.page.page_token,
        )
        with within_deadline(context):
            products, cursor = await self.store.list_products(query)
        token = domain.encode_page_token(query.fingerprint(), cursor) if cursor else ""
        return product_pb2.ListProductsResponse(
            products=[self.product_to_proto(p) for p in products], page=paging_pb2.PageResponse(next_page_token=token)
        )

    # order_svc: prices and names of the lines it orders.
    @callers("edge", "order_svc")
    async def BatchGetProducts(
        self, request: product_pb2.BatchGetProductsRequest, context: Context
    ) -> product_pb2.BatchGetProductsResponse:
        ids = domain.batch_ids(list(request.product_ids))
        with within_deadline(context):
            found = await self.store.products_by_id(ids)
        return product_pb2.BatchGetProductsResponse(
            products=[self.product_to_proto(found[i]) for i in ids if i in found],
            missing_ids=[i for i in ids if i not in found],
        )

    # -- stock reservations (internal: order_svc)

    # Stock reservations are the checkout saga's (order_svc), never a client's.
    @callers("order_svc")
    async def ReserveStock(
        self, request: product_pb2.ReserveStockRequest, context: Context
    ) -> product_pb2.ReserveStockResponse:
        reservation_id, items = domain.validate_reservation(
            request.reservation_id, [(item.product_id, item.quantity) for item in request.items]
        )
        reservation = await self.store.reserve(reservation_id, items)
        return product_pb2.ReserveStockResponse(reservation=reservation_to_proto(reservation))

    @callers("order_svc")
    async def ReleaseReservation(
        self, request: product_pb2.ReleaseReservationRequest, context: Context
    ) -> product_pb2.ReleaseReservationResponse:
        reservation = await self.store.release(domain.parse_id(request.reservation_id, "reservation_id"))
        return product_pb2.ReleaseReservationResponse(reservation=reservation_to_proto(reservation))

    @callers("order_svc")
    async def CommitReservation(
        self, request: product_pb2.CommitReservationRequest, context: Context
    ) -> product_pb2.CommitReservationResponse:
        reservation = await self.store.commit(domain.parse_id(request.reservation_id, "reservation_id"))
        return product_pb2.CommitReservationResponse(reservation=reservation_to_proto(reservation))

    # -- images

    @callers("edge")
    async def AddProductImage(
        self, request: product_pb2.AddProductImageRequest, context: Context
    ) -> product_pb2.AddProductImageResponse:
        require_admin()
        product_id = domain.parse_id(request.product_id, "product_id")
        content_type = domain.check_image(request.content, self.image_max_bytes)
        product = await self._product(product_id)
        if len(product.images) >= self.image_max_count:
            raise FailedPreconditionError(f"a product has at most {self.image_max_count} images; delete one first")
        image_id = domain.new_id()
        image = Image(
            id=image_id,
            key=domain.image_key(product_id, image_id, content_type),
            content_type=content_type,
            size_bytes=len(request.content),
            filename=domain.clean_filename(request.filename),
            created_at=utcnow(),
        )
        await self.images.put(image.key, request.content, content_type)
        try:
            updated = await self.store.add_image(product_id, image, self.image_max_count)
        except BaseException:
            await self.images.delete_quietly([image.key])
            raise
        if updated is None:  # deleted while the bytes were uploading
            await self.images.delete_quietly([image.key])
            raise NotFoundError(f"no product {product_id}")
        log.info("image added", extra={"product_id": product_id, "image_id": image_id, "bytes": image.size_bytes})
        return product_pb2.AddProductImageResponse(
            image=self.image_to_proto(image), product=self.product_to_proto(updated)
        )

    @callers("edge")
    async def DeleteProductImage(
        self, request: product_pb2.DeleteProductImageRequest, context: Context
    ) -> product_pb2.DeleteProductImageResponse:
        require_admin()
        product = await self._product(request.product_id)
        image_id = domain.parse_id(request.image_id, "image_id")
        image = next((item for item in product.images if item.id == image_id), None)
        if image is None:
            raise NotFoundError(f"product {product.id} has no image {image_id}")
        # The object first: a retry after a failure in between finds the image
        # still listed and completes; the reverse order could orphan the object.
        await self.images.delete(image.key)
        updated = await self.store.remove_image(product.id, image_id)
        if updated is None:
            raise NotFoundError(f"no product {product.id}")
        return product_pb2.DeleteProductImageResponse(product=self.product_to_proto(updated))
