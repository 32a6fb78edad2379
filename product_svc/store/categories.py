"""The ``categories`` collection:
``{_id, name, name_key, slug, parent_id, ancestors: [ids root..parent], created_at}``."""

from __future__ import annotations

import uuid
from typing import Any

from pymongo import ASCENDING
from pymongo.errors import DuplicateKeyError

from common.errors import AlreadyExistsError, FieldViolation
from product_svc.domain.categories import Category, NewCategory
from product_svc.domain.listing import CategoryQuery
from product_svc.domain.text import sort_name
from product_svc.store.mongo import Collection, Doc, aware, keyset, mongo_errors, utcnow


def category_of(doc: Doc) -> Category:
    return Category(
        id=doc["_id"],
        name=doc["name"],
        slug=doc["slug"],
        parent_id=doc.get("parent_id"),
        ancestors=tuple(doc.get("ancestors", ())),
        created_at=aware(doc["created_at"]),
    )


class CategoryStore:
    def __init__(self, collection: Collection) -> None:
        self.collection = collection

    async def ensure_indexes(self) -> None:
        await self.collection.create_index([("slug", ASCENDING)], unique=True, name="slug_unique")
        await self.collection.create_index([("parent_id", ASCENDING), ("name_key", ASCENDING), ("_id", ASCENDING)])
        await self.collection.create_index([("ancestors", ASCENDING)])
        await self.collection.create_index([("name_key", ASCENDING), ("_id", ASCENDING)])

    @mongo_errors
    async def create(self, new: NewCategory, ancestors: tuple[str, ...]) -> Category:
        """A new category under its parent's ``ancestors``; ALREADY_EXISTS when its slug is taken."""
        category = Category(
            id=str(uuid.uuid4()),
            name=new.name,
            slug=new.slug,
            parent_id=new.parent_id,
            ancestors=ancestors,
            created_at=utcnow(),
        )
        try:
            await self.collection.insert_one(
                {
                    "_id": category.id,
                    "name": category.name,
                    "name_key": sort_name(category.name),
                    "slug": category.slug,
                    "parent_id": category.parent_id,
                    "ancestors": list(category.ancestors),
                    "created_at": category.created_at,
                }
            )
        except DuplicateKeyError as exc:
            raise AlreadyExistsError(
                f"the slug {new.slug!r} is taken",
                violations=[FieldViolation("slug", "is taken by another category")],
            ) from exc
        return category

    @mongo_errors
    async def get(self, category_id: str) -> Category | None:
        doc = await self.collection.find_one({"_id": category_id})
        return category_of(doc) if doc else None

    @mongo_errors
    async def by_slug(self, slug: str) -> Category | None:
        doc = await self.collection.find_one({"slug": slug})
        return category_of(doc) if doc else None

    @mongo_errors
    async def exists(self, category_id: str) -> bool:
        return await self.collection.find_one({"_id": category_id}, {"_id": 1}) is not None

    @mongo_errors
    async def page(self, query: CategoryQuery) -> list[Category]:
        """The page of ``query`` and one more (to know whether another follows), by name then id."""
        clauses: list[dict[str, Any]] = []
        if query.parent_id is not None:
            clauses.append({"parent_id": query.parent_id})
        if query.after is not None:
            clauses.append(keyset("name_key", False, query.after))
        found = self.collection.find({"$and": clauses} if clauses else {})
        cursor = found.sort([("name_key", ASCENDING), ("_id", ASCENDING)]).limit(query.page_size + 1)
        return [category_of(doc) async for doc in cursor]

    async def tree(self, category_id: str) -> list[str]:
        """The category and every category below it."""
        below = self.collection.find({"ancestors": category_id}, {"_id": 1})
        return [category_id, *[doc["_id"] async for doc in below]]
