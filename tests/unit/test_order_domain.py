"""The pure rules of orders and carts."""

from __future__ import annotations

import uuid

import pytest

from common.errors import FailedPreconditionError, InvalidArgumentError, NotFoundError, UnauthenticatedError
from common.money import Money
from order_svc import domain
from order_svc.domain import CatalogEntry, Item, ShippingMethod, ShippingRule, Status

P1, P2 = str(uuid.uuid4()), str(uuid.uuid4())


def test_state_machine() -> None:
    domain.check_transition(Status.PENDING_PAYMENT, Status.PAID)
    domain.check_transition(Status.PAID, Status.CANCELLED)
    domain.check_transition(Status.SHIPPED, Status.DELIVERED)
    for current, target in [
        (Status.PENDING_PAYMENT, Status.SHIPPED),
        (Status.SHIPPED, Status.CANCELLED),
        (Status.DELIVERED, Status.CANCELLED),
        (Status.CANCELLED, Status.PAID),
    ]:
        with pytest.raises(FailedPreconditionError) as refused:
            domain.check_transition(current, target)
        assert refused.value.metadata == {"current_state": f"ORDER_STATUS_{current.value}"}
        assert refused.value.reason == "INVALID_STATE"


def test_items_are_validated() -> None:
    limits = domain.Limits(max_items=2, max_line_quantity=5)
    assert domain.validate_items([Item(f" {P1} ", 2)], limits) == [Item(P1, 2)]
    with pytest.raises(InvalidArgumentError) as bad:
        domain.validate_items([Item(P1, 0), Item(P1, 6), Item("x", 1)], limits)
    fields = [v.field for v in bad.value.violations]
    assert fields == ["items", "items[0].quantity", "items[1].product_id", "items[1].quantity", "items[2].product_id"]


def catalog(*entries: CatalogEntry) -> dict[str, CatalogEntry]:
    return {entry.product_id: entry for entry in entries}


def test_pricing_uses_catalog_prices_and_the_shipping_rule() -> None:
    rule = ShippingRule(standard_minor=499, express_minor=1499, free_over_minor=5000, heavy_grams=1000,
                        heavy_surcharge_minor=300)  # fmt: skip
    books = catalog(
        CatalogEntry(P1, "Book", Money(1999, "EUR"), True, weight_grams=400),
        CatalogEntry(P2, "Pen", Money(250, "EUR"), True, weight_grams=20),
    )
    priced = domain.price([Item(P1, 2), Item(P2, 1)], books, ShippingMethod.STANDARD, rule)
    assert [line.line_total.amount_minor for line in priced.lines] == [3998, 250]
    assert (priced.subtotal, priced.shipping, priced.total) == (
        Money(4248, "EUR"), Money(499, "EUR"), Money(4747, "EUR")
    )  # fmt: skip
    free = domain.price([Item(P1, 3)], books, ShippingMethod.STANDARD, rule)
    assert free.shipping == Money(300, "EUR")  # free over 50.00, but 1.2 kg pays the surcharge
    express = domain.price([Item(P2, 1)], books, ShippingMethod.EXPRESS, rule)
    assert express.shipping == Money(1499, "EUR")


def test_pricing_refusals() -> None:
    rule = ShippingRule()
    mixed = catalog(CatalogEntry(P1, "A", Money(1, "EUR"), True), CatalogEntry(P2, "B", Money(1, "USD"), True))
    with pytest.raises(FailedPreconditionError, match="different currencies"):
        domain.price([Item(P1, 1), Item(P2, 1)], mixed, ShippingMethod.STANDARD, rule)
    archived = catalog(CatalogEntry(P1, "A", Money(1, "EUR"), False))
    with pytest.raises(FailedPreconditionError) as gone:
        domain.price([Item(P1, 1)], archived, ShippingMethod.STANDARD, rule)
    assert gone.value.reason == "PRODUCT_ARCHIVED"
    with pytest.raises(NotFoundError):
        domain.price([Item(P2, 1)], archived, ShippingMethod.STANDARD, rule)


def test_guest_cart_tokens() -> None:
    secret, guest = b"s3cret", uuid.uuid4()
    token = domain.sign_cart_token(secret, guest, expires=2_000)
    assert domain.verify_cart_token(secret, token, now=1_000) == (guest, 2_000)
    with pytest.raises(UnauthenticatedError, match="expired"):
        domain.verify_cart_token(secret, token, now=2_000)
    with pytest.raises(UnauthenticatedError, match="not one of ours"):
        domain.verify_cart_token(b"other", token, now=1_000)
    forged = domain.sign_cart_token(b"attacker", guest, expires=9_999)
    with pytest.raises(UnauthenticatedError):
        domain.verify_cart_token(secret, forged, now=1_000)
    with pytest.raises(UnauthenticatedError, match="malformed"):
        domain.verify_cart_token(secret, "!!not-a-token", now=1_000)


def test_idempotency_fingerprint_ignores_nothing_but_the_key() -> None:
    assert domain.fingerprint(b"a") == domain.fingerprint(b"a") != domain.fingerprint(b"b")
    with pytest.raises(InvalidArgumentError):
        domain.validate_idempotency_key("x" * 256)
