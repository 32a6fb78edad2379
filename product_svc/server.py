"""The ProductService servicer: proto in → convert → one use-case call → convert → proto out."""

from __future__ import annotations

from shop.common.v1 import paging_pb2
from shop.product.v1 import product_pb2, product_pb2_grpc

from common.auth import require_admin
from common.grpc_server import Context
from common.identity import callers
from product_svc import convert
from product_svc.catalog import Catalog
from product_svc.convert import ImageUrl
from product_svc.domain.products import Product
from product_svc.reservations import Reservations


class ProductService(product_pb2_grpc.ProductServiceServicer):
    def __init__(self, *, catalog: Catalog, reservations: Reservations, image_url: ImageUrl) -> None:
        self.catalog = catalog
        self.reservations = reservations
        self.image_url = image_url

    def _product(self, product: Product) -> product_pb2.Product:
        return convert.product_to_proto(product, self.image_url)

    # -- categories

    @callers("edge")
    async def CreateCategory(
        self, request: product_pb2.CreateCategoryRequest, context: Context
    ) -> product_pb2.CreateCategoryResponse:
        require_admin()
        parent_id = request.parent_id if request.HasField("parent_id") else None
        category = await self.catalog.create_category(request.name, request.slug, parent_id)
        return product_pb2.CreateCategoryResponse(category=convert.category_to_proto(category))

    @callers("edge")
    async def GetCategory(
        self, request: product_pb2.GetCategoryRequest, context: Context
    ) -> product_pb2.GetCategoryResponse:
        category = await self.catalog.get_category(convert.category_key(request))
        return product_pb2.GetCategoryResponse(category=convert.category_to_proto(category))

    @callers("edge")
    async def ListCategories(
        self, request: product_pb2.ListCategoriesRequest, context: Context
    ) -> product_pb2.ListCategoriesResponse:
        parent_id = request.parent_id if request.HasField("parent_id") else None
        page, token = await self.catalog.list_categories(parent_id, request.page.page_size, request.page.page_token)
        return product_pb2.ListCategoriesResponse(
            categories=[convert.category_to_proto(c) for c in page], page=paging_pb2.PageResponse(next_page_token=token)
        )

    # -- products

    @callers("edge")
    async def CreateProduct(
        self, request: product_pb2.CreateProductRequest, context: Context
    ) -> product_pb2.CreateProductResponse:
        require_admin()
        product = await self.catalog.create_product(convert.product_input(request))
        return product_pb2.CreateProductResponse(product=self._product(product))

    # comment_svc: does the reviewed product exist?
    @callers("edge", "comment_svc")
    async def GetProduct(
        self, request: product_pb2.GetProductRequest, context: Context
    ) -> product_pb2.GetProductResponse:
        product = await self.catalog.get_product(request.product_id, time_left=context.time_remaining())
        return product_pb2.GetProductResponse(product=self._product(product))

    @callers("edge")
    async def UpdateProduct(
        self, request: product_pb2.UpdateProductRequest, context: Context
    ) -> product_pb2.UpdateProductResponse:
        require_admin()
        product = await self.catalog.update_product(
            request.product.id, list(request.update_mask.paths), convert.product_input(request.product)
        )
        return product_pb2.UpdateProductResponse(product=self._product(product))

    @callers("edge")
    async def ArchiveProduct(
        self, request: product_pb2.ArchiveProductRequest, context: Context
    ) -> product_pb2.ArchiveProductResponse:
        require_admin()
        product = await self.catalog.archive_product(request.product_id)
        return product_pb2.ArchiveProductResponse(product=self._product(product))

    @callers("edge")
    async def DeleteProduct(
        self, request: product_pb2.DeleteProductRequest, context: Context
    ) -> product_pb2.DeleteProductResponse:
        require_admin()
        await self.catalog.delete_product(request.product_id)
        return product_pb2.DeleteProductResponse()

    @callers("edge")
    async def ListProducts(
        self, request: product_pb2.ListProductsRequest, context: Context
    ) -> product_pb2.ListProductsResponse:
        if request.include_archived:
            require_admin()
        products, token = await self.catalog.list_products(
            convert.listing_request(request), time_left=context.time_remaining()
        )
        return product_pb2.ListProductsResponse(
            products=[self._product(p) for p in products], page=paging_pb2.PageResponse(next_page_token=token)
        )

    # order_svc: prices and names of the lines it orders.
    @callers("edge", "order_svc")
    async def BatchGetProducts(
        self, request: product_pb2.BatchGetProductsRequest, context: Context
    ) -> product_pb2.BatchGetProductsResponse:
        batch = await self.catalog.batch_get(list(request.product_ids), time_left=context.time_remaining())
        return product_pb2.BatchGetProductsResponse(
            products=[self._product(p) for p in batch.products], missing_ids=batch.missing_ids
        )

    # -- stock reservations (internal: order_svc)

    # Stock reservations are the checkout saga's (order_svc), never a client's.
    @callers("order_svc")
    async def ReserveStock(
        self, request: product_pb2.ReserveStockRequest, context: Context
    ) -> product_pb2.ReserveStockResponse:
        reservation = await self.reservations.reserve(request.reservation_id, convert.reservation_items(request))
        return product_pb2.ReserveStockResponse(reservation=convert.reservation_to_proto(reservation))

    @callers("order_svc")
    async def ReleaseReservation(
        self, request: product_pb2.ReleaseReservationRequest, context: Context
    ) -> product_pb2.ReleaseReservationResponse:
        reservation = await self.reservations.release(request.reservation_id)
        return product_pb2.ReleaseReservationResponse(reservation=convert.reservation_to_proto(reservation))

    @callers("order_svc")
    async def CommitReservation(
        self, request: product_pb2.CommitReservationRequest, context: Context
    ) -> product_pb2.CommitReservationResponse:
        reservation = await self.reservations.commit(request.reservation_id)
        return product_pb2.CommitReservationResponse(reservation=convert.reservation_to_proto(reservation))

    # -- images

    @callers("edge")
    async def AddProductImage(
        self, request: product_pb2.AddProductImageRequest, context: Context
    ) -> product_pb2.AddProductImageResponse:
        require_admin()
        image, product = await self.catalog.add_image(convert.upload(request))
        return product_pb2.AddProductImageResponse(
            image=convert.image_to_proto(image, self.image_url), product=self._product(product)
        )

    @callers("edge")
    async def DeleteProductImage(
        self, request: product_pb2.DeleteProductImageRequest, context: Context
    ) -> product_pb2.DeleteProductImageResponse:
        require_admin()
        product = await self.catalog.delete_image(request.product_id, request.image_id)
        return product_pb2.DeleteProductImageResponse(product=self._product(product))
