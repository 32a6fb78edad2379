"""Listings: the filters and sort orders of ListProducts, and where a page of
products or categories ends (the keyset position a page token carries, in the
one page-token format of :mod:`common.paging`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Literal

from common.errors import InvalidArgumentError
from common.paging import DEFAULT_PAGE_SIZE, decode_page_token, encode_page_token, page_size, scope
from common.validation import Violations, require_uuid, uuid_problem
from product_svc.domain.categories import CATEGORY_ID, Category
from product_svc.domain.products import money_problems
from product_svc.domain.text import search_terms, sort_name

SortField = Literal["created", "price", "name"]


@dataclass(frozen=True)
class SortSpec:
    field: SortField
    descending: bool


SORTS: dict[str, SortSpec] = {
    "newest": SortSpec("created", True),
    "oldest": SortSpec("created", False),
    "price_asc": SortSpec("price", False),
    "price_desc": SortSpec("price", True),
    "name_asc": SortSpec("name", False),
    "name_desc": SortSpec("name", True),
}
DEFAULT_SORT = "newest"


@dataclass(frozen=True)
class Cursor:
    """Where the previous page ended: its last item's sort key and id."""

    key: int | str
    id: str


def cursor_token(cursor: Cursor, token_scope: str) -> str:
    return encode_page_token({"k": cursor.key, "i": cursor.id}, token_scope)


def read_cursor(token: str, token_scope: str, key_type: type[int] | type[str]) -> Cursor | None:
    """The cursor in ``token`` (None for an empty token); INVALID_ARGUMENT when it is
    malformed or was made for other filters or another sort order."""
    position = decode_page_token(token, token_scope)
    if position is None:
        return None
    key = position.integer("k") if key_type is int else position.text("k")
    return Cursor(key=key, id=str(position.identifier("i")))


@dataclass(frozen=True)
class ListingRequest:
    """ListProducts as a caller sent it (before validation)."""

    category_id: str | None = None
    min_price: tuple[int, str] | None = None
    max_price: tuple[int, str] | None = None
    in_stock_only: bool = False
    query: str = ""
    sort: str = DEFAULT_SORT
    include_archived: bool = False
    page_size_value: int = 0
    page_token: str = ""


@dataclass(frozen=True)
class ProductQuery:
    category_id: str | None
    currency: str | None
    min_price: int | None
    max_price: int | None
    in_stock_only: bool
    terms: tuple[str, ...]
    sort: str
    include_archived: bool
    page_size: int
    after: Cursor | None

    @property
    def sort_spec(self) -> SortSpec:
        return SORTS[self.sort]

    def scope(self) -> str:
        """What a page token of this listing is bound to: its filters and its sort."""
        return scope(
            "products",
            self.category_id,
            self.currency,
            self.min_price,
            self.max_price,
            self.in_stock_only,
            list(self.terms),
            self.sort,
            self.include_archived,
        )


def sort_key_type(spec: SortSpec) -> type[int] | type[str]:
    return str if spec.field == "name" else int


@dataclass(frozen=True)
class _PriceRange:
    currency: str | None = None
    low: int | None = None
    high: int | None = None


def _category_filter(value: str | None, problems: Violations) -> str | None:
    if value is None:
        return None
    problem = uuid_problem(value, CATEGORY_ID)
    if problem:
        problems.add("category_id", problem)
        return None
    return str(require_uuid(value, "category_id", CATEGORY_ID))


def _price_range(given: ListingRequest, problems: Violations) -> _PriceRange:
    low = money_problems(given.min_price, "min_price", problems, required=False)
    high = money_problems(given.max_price, "max_price", problems, required=False)
    if low and high and low.currency != high.currency:
        problems.add("max_price.currency_code", f"must be the currency of min_price ({low.currency})")
    elif low and high and high.amount_minor < low.amount_minor:
        problems.add("max_price.amount_minor", "must not be below min_price")
    either = low or high
    return _PriceRange(
        currency=either.currency if either else None,
        low=low.amount_minor if low else None,
        high=high.amount_minor if high else None,
    )


def _terms(query: str, problems: Violations) -> tuple[str, ...]:
    try:
        return search_terms(query)
    except InvalidArgumentError as exc:
        problems.items.extend(exc.violations)
        return ()


def _page_size(value: int, problems: Violations) -> int:
    try:
        return page_size(value)
    except InvalidArgumentError as exc:
        problems.items.extend(exc.violations)
        return DEFAULT_PAGE_SIZE


def validate_product_query(given: ListingRequest) -> ProductQuery:
    problems = Violations()
    category = _category_filter(given.category_id, problems)
    prices = _price_range(given, problems)
    terms = _terms(given.query, problems)
    if given.sort not in SORTS:
        problems.add("sort", f"must be one of {', '.join(SORTS)}")
    size = _page_size(given.page_size_value, problems)
    problems.check()
    partial = ProductQuery(
        category_id=category,
        currency=prices.currency,
        min_price=prices.low,
        max_price=prices.high,
        in_stock_only=given.in_stock_only,
        terms=terms,
        sort=given.sort,
        include_archived=given.include_archived,
        page_size=size,
        after=None,
    )
    after = read_cursor(given.page_token, partial.scope(), sort_key_type(partial.sort_spec))
    return replace(partial, after=after)


def next_page_token(query: ProductQuery, cursor: Cursor | None) -> str:
    return cursor_token(cursor, query.scope()) if cursor else ""


# --- categories: by name, then id ------------------------------------------------------------------


@dataclass(frozen=True)
class CategoryQuery:
    parent_id: str | None
    page_size: int
    after: Cursor | None

    def scope(self) -> str:
        return scope("categories", self.parent_id)


def validate_category_query(parent_id: str | None, page_size_value: int, page_token: str) -> CategoryQuery:
    parent = str(require_uuid(parent_id, "parent_id", CATEGORY_ID)) if parent_id is not None else None
    size = page_size(page_size_value)
    after = read_cursor(page_token, scope("categories", parent), str)
    return CategoryQuery(parent_id=parent, page_size=size, after=after)


def category_page(query: CategoryQuery, found: Sequence[Category]) -> tuple[list[Category], str]:
    """The page out of ``found`` (up to one more than the page), and the next page's token."""
    page = list(found[: query.page_size])
    if len(found) <= query.page_size:
        return page, ""
    last = page[-1]
    return page, cursor_token(Cursor(key=sort_name(last.name), id=last.id), query.scope())
