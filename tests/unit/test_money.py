import pytest

from common.money import Money, MoneyError, check_currency


def test_sums_stay_in_minor_units() -> None:
    line = Money(1999, "EUR").times(3)
    assert line == Money(5997, "EUR")
    assert str(line + Money(3, "EUR")) == "60.00 EUR"
    assert str(Money(1500, "JPY")) == "1500 JPY"
    assert str(Money(-1234, "KWD")) == "-1.234 KWD"


def test_mixed_currencies_are_refused() -> None:
    with pytest.raises(MoneyError, match="cannot combine EUR with USD"):
        Money(1, "EUR") + Money(1, "USD")


@pytest.mark.parametrize("code", ["EURO", "eur", "", "XYZ"])
def test_unknown_currency(code: str) -> None:
    with pytest.raises(MoneyError, match="ISO 4217"):
        check_currency(code)


def test_amounts_are_integers_in_range() -> None:
    with pytest.raises(MoneyError, match="whole numbers"):
        Money(19.99, "EUR")  # type: ignore[arg-type]
    with pytest.raises(MoneyError, match="out of range"):
        Money(10**16, "EUR")
