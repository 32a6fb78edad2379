"""The catalog's use cases: categories, products, listings and product images.

The document store spans no transaction: each store call is atomic on its own,
and where a use case writes twice (an image's object, then its listing on the
product) it undoes the first write when the second fails.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from common.errors import FieldViolation, NotFoundError
from common.validation import require_uuid
from product_svc.domain import categories, images, listing, products
from product_svc.domain.categories import Category, CategoryKey
from product_svc.domain.images import Image, Upload
from product_svc.domain.listing import ListingRequest
from product_svc.domain.products import PRODUCT_ID, Product, ProductInput
from product_svc.images import ImageStorage
from product_svc.store import Store, utcnow

log = logging.getLogger("shop.product")

IMAGE_ID = "an image id"


@dataclass(frozen=True)
class ImageLimits:
    max_bytes: int
    max_count: int


@dataclass(frozen=True)
class Batch:
    """BatchGetProducts' answer: the products found, in the order asked, and the ids not found."""

    products: list[Product]
    missing_ids: list[str]


class Catalog:
    def __init__(self, *, store: Store, images: ImageStorage, limits: ImageLimits) -> None:
        self.store = store
        self.images = images
        self.limits = limits

    # -- categories

    async def create_category(self, name: str, slug: str, parent_id: str | None) -> Category:
        new = categories.validate_category(name, slug, parent_id)
        parent = None
        if new.parent_id is not None:
            parent = await self.store.categories.get(new.parent_id)
            if parent is None:
                raise NotFoundError(
                    f"no parent category {new.parent_id}",
                    violations=[FieldViolation("parent_id", "no such category")],
                )
        category = await self.store.categories.create(new, categories.child_ancestors(parent))
        log.info("category created", extra={"category_id": category.id, "slug": category.slug})
        return category

    async def get_category(self, key: CategoryKey) -> Category:
        checked = categories.validate_key(key)
        if checked.id is not None:
            category = await self.store.categories.get(checked.id)
        else:
            assert checked.slug is not None
            category = await self.store.categories.by_slug(checked.slug)
        if category is None:
            raise NotFoundError(f"no category {key.id if key.id is not None else key.slug!r}")
        return category

    async def list_categories(
        self, parent_id: str | None, page_size: int, page_token: str
    ) -> tuple[list[Category], str]:
        query = listing.validate_category_query(parent_id, page_size, page_token)
        return listing.category_page(query, await self.store.categories.page(query))

    # -- products

    async def _require_category(self, category_id: str) -> None:
        if not await self.store.categories.exists(category_id):
            raise NotFoundError(
                f"no category {category_id}", violations=[FieldViolation("category_id", "no such category")]
            )

    async def create_product(self, given: ProductInput) -> Product:
        fields = products.validate_new_product(given)
        await self._require_category(fields.category_id)
        product = await self.store.products.create(fields)
        log.info("product created", extra={"product_id": product.id})
        return product

    async def get_product(self, product_id: str, *, time_left: float | None = None) -> Product:
        with self.store.deadline(time_left):
            return await self._product(product_id)

    async def _product(self, product_id: str) -> Product:
        return _found(await self.store.products.get(_product_id(product_id)), product_id)

    async def update_product(self, product_id: str, paths: Sequence[str], given: ProductInput) -> Product:
        canonical = _product_id(product_id, "product.id")
        changes = products.validate_update(paths, given)
        if "category_id" in changes:
            await self._require_category(changes["category_id"])
        return _found(await self.store.products.update(canonical, changes), canonical)

    async def archive_product(self, product_id: str) -> Product:
        canonical = _product_id(product_id)
        return _found(await self.store.products.archive(canonical), canonical)

    async def delete_product(self, product_id: str) -> Product:
        """Delete a product without open reservations (and its image objects); answers what was deleted."""
        canonical = _product_id(product_id)
        product = _found(await self.store.products.get(canonical), canonical)
        if not product.holds:
            if await self.store.products.delete_unheld(canonical):
                await self.images.delete_quietly([image.key for image in product.images])
                log.info("product deleted", extra={"product_id": product.id})
                return product
            product = await self.store.products.get(canonical) or product
        raise products.open_reservations(product)

    async def list_products(
        self, given: ListingRequest, *, time_left: float | None = None
    ) -> tuple[list[Product], str]:
        query = listing.validate_product_query(given)
        with self.store.deadline(time_left):
            page, cursor = await self.store.products.page(query)
        return page, listing.next_page_token(query, cursor)

    async def batch_get(self, product_ids: Sequence[str], *, time_left: float | None = None) -> Batch:
        ids = products.batch_ids(product_ids)
        with self.store.deadline(time_left):
            found = await self.store.products.by_ids(ids)
        return Batch(products=[found[i] for i in ids if i in found], missing_ids=[i for i in ids if i not in found])

    # -- images

    async def add_image(self, upload: Upload) -> tuple[Image, Product]:
        """Store the object, then list it on the product; the object goes again when the listing fails."""
        product_id = _product_id(upload.product_id)
        content_type = images.check_image(upload.content, self.limits.max_bytes)
        product = await self._product(product_id)
        if len(product.images) >= self.limits.max_count:
            raise images.too_many_images(self.limits.max_count)
        image_id = str(uuid.uuid4())
        image = Image(
            id=image_id,
            key=images.image_key(product_id, image_id, content_type),
            content_type=content_type,
            size_bytes=len(upload.content),
            filename=images.clean_filename(upload.filename),
            created_at=utcnow(),
        )
        await self.images.put(image.key, upload.content, content_type)
        try:
            updated = await self.store.products.add_image(product_id, image, self.limits.max_count)
        except BaseException:
            await self.images.delete_quietly([image.key])
            raise
        if updated is None:  # deleted while the bytes were uploading
            await self.images.delete_quietly([image.key])
            raise NotFoundError(f"no product {product_id}")
        log.info("image added", extra={"product_id": product_id, "image_id": image_id, "bytes": image.size_bytes})
        return image, updated

    async def delete_image(self, product_id: str, image_id: str) -> Product:
        product = await self._product(product_id)
        canonical = str(require_uuid(image_id, "image_id", IMAGE_ID))
        image = next((item for item in product.images if item.id == canonical), None)
        if image is None:
            raise NotFoundError(f"product {product.id} has no image {canonical}")
        # The object first: a retry after a failure in between finds the image
        # still listed and completes; the reverse order could orphan the object.
        await self.images.delete(image.key)
        return _found(await self.store.products.remove_image(product.id, canonical), product.id)


def _product_id(value: str, path: str = "product_id") -> str:
    """A product id as the store keeps it (canonical UUID text); INVALID_ARGUMENT on ``path`` otherwise."""
    return str(require_uuid(value, path, PRODUCT_ID))


def _found(product: Product | None, product_id: str) -> Product:
    if product is None:
        raise NotFoundError(f"no product {product_id}")
    return product
