"""The storefront's pure pieces: the category tree built from the edge's flat
listing, and the numbers a person types into a form."""

from __future__ import annotations

import pytest

from web.categories import build
from web.edge_client import ProblemError
from web.pages import minor_units, whole_number


def category(id: str, name: str, parent: str | None = None) -> dict[str, str | None]:
    return {"id": id, "name": name, "slug": name.lower(), "parent_id": parent}


def test_the_tree_nests_children_under_their_parents_in_listing_order() -> None:
    tree = build([category("b", "Bowls", "k"), category("g", "Garden"), category("k", "Kitchen"),
                  category("t", "Teapots", "k"), category("c", "Clay", "t")])  # fmt: skip
    assert [n.name for n in tree.roots] == ["Garden", "Kitchen"]
    assert [(n.name, n.depth) for n in tree.flat()] == [
        ("Garden", 0), ("Kitchen", 0), ("Bowls", 1), ("Teapots", 1), ("Clay", 2),
    ]  # fmt: skip
    assert [n.name for n in tree.path("c")] == ["Kitchen", "Teapots", "Clay"]
    assert tree.path("unknown") == []


def test_a_category_whose_parent_is_missing_is_a_root_and_a_cycle_ends() -> None:
    tree = build([category("o", "Orphan", "gone"), category("a", "A", "b"), category("b", "B", "a")])
    assert [n.name for n in tree.roots] == ["Orphan"]
    assert [n.name for n in tree.path("a")] == ["B", "A"]  # stops where it would go round again


@pytest.mark.parametrize(("typed", "minor"), [("19.99", 1999), ("19,99", 1999), ("0", 0), ("7", 700), ("0.005", 0)])
def test_prices_become_minor_units(typed: str, minor: int) -> None:
    assert minor_units(typed, "price") == minor


@pytest.mark.parametrize("typed", ["abc", "-1", "NaN", "sNaN", "Infinity", "", "1e999999", "1e5000"])
def test_a_price_that_is_not_one_is_the_fields_problem(typed: str) -> None:
    with pytest.raises(ProblemError) as raised:
        minor_units(typed, "price")
    assert raised.value.status == 400
    assert list(raised.value.errors) == ["price"]


def test_a_count_must_be_whole() -> None:
    assert whole_number("12", "stock") == 12
    with pytest.raises(ProblemError) as raised:
        whole_number("1.5", "stock")
    assert raised.value.errors == {"stock": ["must be a whole number, e.g. 12"]}
