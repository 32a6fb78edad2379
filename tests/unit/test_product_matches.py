"""product_svc.store.matches: the filter forms checked in the process on FerretDB."""

from __future__ import annotations

import pytest

from product_svc.store import matches

DOC = {"_id": "p1", "status": "active", "stock": 3, "rev": 2, "holds": {"r1": 2}, "state": "reserved"}


@pytest.mark.parametrize(
    ("condition", "expected"),
    [
        ({}, True),
        ({"status": "active", "stock": {"$gte": 3}}, True),
        ({"stock": {"$gte": 4}}, False),
        ({"rev": 2}, True),
        ({"rev": 3}, False),
        ({"holds.r1": {"$exists": True}}, True),
        ({"holds.r2": {"$exists": False}}, True),
        ({"holds.r1": {"$exists": False}}, False),
        ({"holds.r1": 2}, True),
        ({"holds.r1": 1}, False),
        ({"holds.r2": 2}, False),
        ({"state": {"$in": ["pending", "reserved"]}}, True),
        ({"state": {"$in": ["pending"]}}, False),
        ({"missing": {"$gte": 0}}, False),
        ({"holds": {}}, False),
        ({"status.deeper": "x"}, False),
    ],
)
def test_matches(condition: dict[str, object], expected: bool) -> None:
    assert matches(DOC, condition) is expected


def test_an_empty_document_equals_only_an_empty_document() -> None:
    assert matches({"holds": {}}, {"holds": {}})
    assert not matches({}, {"holds": {}})


def test_an_unknown_operator_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match=r"\$lt"):
        matches(DOC, {"stock": {"$lt": 5}})
