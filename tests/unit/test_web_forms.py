"""The storefront's reading of amounts typed into its forms (web/app.py minor_units)."""

from __future__ import annotations

import pytest

from web.app import minor_units
from web.client import Problem


@pytest.mark.parametrize(("typed", "minor"), [("19.99", 1999), ("19,99", 1999), ("0", 0), ("1e-9999", 0)])
def test_amounts_in_minor_units(typed: str, minor: int) -> None:
    assert minor_units(typed, "price") == minor


@pytest.mark.parametrize(
    ("typed", "message"),
    [
        ("ten", "must be a number"),
        ("NaN", "must be a number"),
        ("sNaN", "must be a number"),
        ("Infinity", "must be a number"),
        ("-1", "must not be negative"),
        # Used to overflow (500) or make an integer too long to send as JSON (500).
        ("1e999999", "must be at most"),
        ("1e5000", "must be at most"),
    ],
)
def test_what_is_not_an_amount_is_a_field_error(typed: str, message: str) -> None:
    with pytest.raises(Problem) as raised:
        minor_units(typed, "price")
    assert raised.value.status == 400
    assert message in raised.value.errors["price"][0]
