"""The category tree, built from the edge's category listing (each category names
its parent): nested for the catalog's navigation, flattened with depths for a
select, and the path from the root to one category for a breadcrumb."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request

from web.session import api

# Enough pages for any shop this front end is for; a longer list is cut, never looped on.
MAX_PAGES = 20


@dataclass
class Node:
    id: str
    name: str
    slug: str
    parent_id: str | None
    depth: int = 0
    children: list[Node] = field(default_factory=list)


@dataclass
class Tree:
    roots: list[Node]
    by_id: dict[str, Node]

    def flat(self) -> list[Node]:
        """Every category, each after its parent (for an indented select)."""
        found: list[Node] = []

        def walk(nodes: list[Node]) -> None:
            for node in nodes:
                found.append(node)
                walk(node.children)

        walk(self.roots)
        return found

    def path(self, category_id: str) -> list[Node]:
        """From the root down to the category (empty when unknown)."""
        found: list[Node] = []
        node = self.by_id.get(category_id)
        while node is not None and node not in found:
            found.append(node)
            node = self.by_id.get(node.parent_id) if node.parent_id else None
        return found[::-1]


def build(items: list[dict[str, Any]]) -> Tree:
    by_id = {c["id"]: Node(c["id"], c["name"], c["slug"], c.get("parent_id")) for c in items}
    roots: list[Node] = []
    for node in by_id.values():  # the listing is by name, so children stay in name order
        parent = by_id.get(node.parent_id) if node.parent_id else None
        (parent.children if parent is not None else roots).append(node)

    def depths(nodes: list[Node], depth: int) -> None:
        for node in nodes:
            node.depth = depth
            depths(node.children, depth + 1)

    depths(roots, 0)
    return Tree(roots, by_id)


async def category_tree(request: Request) -> Tree:
    items: list[dict[str, Any]] = []
    params: dict[str, Any] = {"page_size": 100}
    for _ in range(MAX_PAGES):
        page = await api(request, "GET", "/api/v1/categories", auth=False, params=params)
        items.extend(page["items"])
        if not page["next_page_token"]:
            break
        params["page_token"] = page["next_page_token"]
    return build(items)
