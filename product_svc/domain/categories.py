"""The category tree: names, slugs, nesting depth."""

from __future__ import annotations

import string
from dataclasses import dataclass
from datetime import datetime

from common.errors import FieldViolation
from common.validation import Violations, invalid, require_uuid, uuid_problem
from product_svc.domain.text import text_problem

CATEGORY_NAME_MAX = 100
SLUG_MAX = 100
CATEGORY_DEPTH_MAX = 8  # a root category is depth 1
CATEGORY_ID = "a category id"

_SLUG_CHARS = set(string.ascii_lowercase + string.digits + "-")


@dataclass(frozen=True)
class Category:
    id: str
    name: str
    slug: str
    parent_id: str | None
    # Ids from the root down to the parent: "this category and its descendants"
    # is one indexed query on this list.
    ancestors: tuple[str, ...]
    created_at: datetime


@dataclass(frozen=True)
class NewCategory:
    name: str
    slug: str
    parent_id: str | None


@dataclass(frozen=True)
class CategoryKey:
    """How GetCategory names a category: by id or by slug (exactly one is set)."""

    id: str | None = None
    slug: str | None = None


def slug_problem(slug: str) -> str | None:
    if not slug:
        return "is required"
    if len(slug) > SLUG_MAX:
        return f"must be at most {SLUG_MAX} characters"
    if set(slug) - _SLUG_CHARS or slug.startswith("-") or slug.endswith("-") or "--" in slug:
        return "must be lower-case letters, digits and single hyphens, e.g. 'running-shoes'"
    return None


def validate_category(name: str, slug: str, parent_id: str | None) -> NewCategory:
    problems = Violations()
    name = name.strip()
    problem = text_problem(name, max_len=CATEGORY_NAME_MAX, required=True)
    if problem:
        problems.add("name", problem)
    problem = slug_problem(slug)
    if problem:
        problems.add("slug", problem)
    if parent_id is not None:
        problem = uuid_problem(parent_id, CATEGORY_ID)
        if problem:
            problems.add("parent_id", problem)
    problems.check()
    parent = str(require_uuid(parent_id, "parent_id", CATEGORY_ID)) if parent_id is not None else None
    return NewCategory(name=name, slug=slug, parent_id=parent)


def validate_key(key: CategoryKey) -> CategoryKey:
    """The key canonical: an id in its lower-case form, a slug checked."""
    if key.id is not None:
        return CategoryKey(id=str(require_uuid(key.id, "id", CATEGORY_ID)))
    if key.slug is not None:
        problem = slug_problem(key.slug)
        if problem:
            raise invalid(FieldViolation("slug", problem))
        return key
    raise invalid(FieldViolation("key", "give the category's id or its slug"))


def child_ancestors(parent: Category | None) -> tuple[str, ...]:
    """The ancestors of a new child of ``parent``; refuses trees deeper than the limit."""
    if parent is None:
        return ()
    ancestors = (*parent.ancestors, parent.id)
    if len(ancestors) >= CATEGORY_DEPTH_MAX:
        raise invalid(FieldViolation("parent_id", f"categories nest at most {CATEGORY_DEPTH_MAX} levels deep"))
    return ancestors
