"""Money: exact decimals at the currency's minor unit; floats, mixed currencies and excess
places are refused, derived amounts round half-even."""

from __future__ import annotations

from decimal import Decimal

import pytest

from domain.errors import CurrencyMismatch, InvalidInput
from domain.money import Money, exact_percent, exact_product, minor_unit_exponent

# Refusals of the amount ------------------------------------------------------------------


@pytest.mark.parametrize("amount", [0.1, 100.0, 1e3, float("nan")])
def test_money_of_refuses_a_float_amount(amount: float) -> None:
    with pytest.raises(InvalidInput) as caught:
        Money.of(amount, "USD")
    assert caught.value.code == "invalid_decimal"


@pytest.mark.parametrize("amount", [100, 0, -5, True])
def test_money_of_refuses_an_int_amount_because_a_json_number_is_not_money(amount: int) -> None:
    with pytest.raises(InvalidInput) as caught:
        Money.of(amount, "USD")
    assert caught.value.code == "invalid_decimal"


def test_the_constructor_refuses_a_float_even_when_called_directly() -> None:
    with pytest.raises(TypeError):
        Money(0.1, "USD")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "text",
    [
        "", "abc", "1e3", "1E-2", "NaN", "Infinity", "1,00", "1.", ".5", "1 000", "0x10",
        # Other scripts' digits (Decimal() takes them) and padding are not decimal strings.
        "\u0661\u0660\u0660", "\uff11\uff10", " 1.00", "1.00 ", "\u00a0100.00\u2003", "1.00\n",
    ],
)  # fmt: skip
def test_money_of_refuses_text_that_is_not_a_plain_decimal(text: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        Money.of(text, "USD")
    assert caught.value.code == "invalid_decimal"


def test_an_amount_too_large_says_so() -> None:
    with pytest.raises(InvalidInput) as caught:
        Money.of("1000000000000.01", "USD", field="profit")
    assert caught.value.code == "invalid_decimal"
    assert "too large" in caught.value.message
    assert Money.of("999999999999.99", "USD").amount == Decimal("999999999999.99")


def test_money_of_names_the_field_it_was_given_in_the_refusal() -> None:
    with pytest.raises(InvalidInput) as caught:
        Money.of(5.0, "USD", field="profit")
    assert caught.value.details == {"field": "profit"}


def test_money_of_accepts_a_decimal_and_a_signed_decimal_string() -> None:
    assert Money.of(Decimal("12.34"), "USD").amount == Decimal("12.34")
    assert Money.of("-12.34", "USD").amount == Decimal("-12.34")
    assert Money.of("+12.34", "USD").amount == Decimal("12.34")


# Currencies ------------------------------------------------------------------------------


def test_adding_two_currencies_raises_currency_mismatch() -> None:
    with pytest.raises(CurrencyMismatch) as caught:
        Money.of("1.00", "USD") + Money.of("1.00", "EUR")
    assert caught.value.code == "currency_mismatch"
    assert caught.value.details == {"currencies": ["USD", "EUR"]}


def test_subtracting_and_comparing_two_currencies_raise_currency_mismatch() -> None:
    usd, eur = Money.of("1.00", "USD"), Money.of("1.00", "EUR")
    with pytest.raises(CurrencyMismatch):
        usd - eur
    with pytest.raises(CurrencyMismatch):
        _ = usd < eur
    with pytest.raises(CurrencyMismatch):
        _ = usd >= eur
    with pytest.raises(CurrencyMismatch):
        usd.max(eur)


def test_money_never_equals_the_same_amount_in_another_currency() -> None:
    assert Money.of("1.00", "USD") != Money.of("1.00", "EUR")


@pytest.mark.parametrize("currency", ["XYZ", "usd", "US", "USDT", "", None, 840])
def test_an_unknown_currency_is_refused(currency: object) -> None:
    with pytest.raises(InvalidInput) as caught:
        Money.of("1", currency)  # type: ignore[arg-type]
    assert caught.value.code == "unknown_currency"


def test_the_constructor_refuses_an_unknown_currency_too() -> None:
    with pytest.raises(InvalidInput) as caught:
        Money(Decimal("1.00"), "XYZ")
    assert caught.value.code == "unknown_currency"


@pytest.mark.parametrize(
    ("currency", "places"), [("USD", 2), ("EUR", 2), ("JPY", 0), ("KRW", 0), ("KWD", 3)]
)
def test_minor_unit_exponents_follow_iso_4217(currency: str, places: int) -> None:
    assert minor_unit_exponent(currency) == places


# Minor units -----------------------------------------------------------------------------


def test_usd_amounts_carry_two_decimal_places() -> None:
    assert str(Money.of("5", "USD")) == "5.00 USD"
    assert str(Money.of("540.5", "USD").amount) == "540.50"


def test_usd_refuses_a_third_decimal_place_instead_of_rounding() -> None:
    with pytest.raises(InvalidInput) as caught:
        Money.of("0.125", "USD")
    assert caught.value.code == "too_many_decimal_places"


def test_jpy_has_no_minor_unit_so_100_5_yen_is_refused() -> None:
    with pytest.raises(InvalidInput) as caught:
        Money.of("100.5", "JPY")
    assert caught.value.code == "too_many_decimal_places"


def test_jpy_accepts_a_whole_number_of_yen() -> None:
    yen = Money.of("100", "JPY")
    assert yen.amount == Decimal("100")
    assert str(yen) == "100 JPY"


def test_kwd_accepts_three_decimal_places_and_refuses_four() -> None:
    assert str(Money.of("1.234", "KWD").amount) == "1.234"
    assert str(Money.of("1.2", "KWD").amount) == "1.200"
    with pytest.raises(InvalidInput) as caught:
        Money.of("1.2345", "KWD")
    assert caught.value.code == "too_many_decimal_places"


def test_trailing_zeros_beyond_the_minor_unit_lose_nothing_and_are_normalised() -> None:
    # No rounding happens: the value is exact at the minor unit.
    assert str(Money.of("1.000", "USD").amount) == "1.00"
    assert str(Money.of("100.0", "JPY").amount) == "100"


def test_equal_amounts_written_with_different_scales_are_equal_money() -> None:
    assert Money.of("5", "USD") == Money.of("5.00", "USD")
    assert hash(Money.of("5", "USD")) == hash(Money.of("5.00", "USD"))


# Arithmetic ------------------------------------------------------------------------------


def test_addition_and_subtraction_are_exact_to_the_cent() -> None:
    a, b = Money.of("0.10", "USD"), Money.of("0.20", "USD")
    assert (a + b).amount == Decimal("0.30")
    assert (a + b - Money.of("0.30", "USD")).amount == Decimal("0.00")
    assert (Money.of("100000.00", "USD") - Money.of("5000.01", "USD")).amount == Decimal("94999.99")


def test_negation_and_ordering() -> None:
    a = Money.of("12.34", "USD")
    assert (-a).amount == Decimal("-12.34")
    assert Money.of("94999.99", "USD") < Money.of("95000.00", "USD")
    assert Money.of("95000.00", "USD") <= Money.of("95000", "USD")
    assert Money.of("1.00", "USD").max(Money.of("2.00", "USD")).amount == Decimal("2.00")
    assert Money.of("1.00", "USD").min(Money.of("2.00", "USD")).amount == Decimal("1.00")


# percent rounds half-even ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("amount", "pct", "expected"),
    [
        ("12.50", "1", "0.12"),  # 0.125 -> 0.12 (2 is even)
        ("13.50", "1", "0.14"),  # 0.135 -> 0.14 (4 is even)
        ("14.50", "1", "0.14"),  # 0.145 -> 0.14
        ("15.50", "1", "0.16"),  # 0.155 -> 0.16
        ("-12.50", "1", "-0.12"),  # -0.125 -> -0.12
        ("0.25", "50", "0.12"),  # 0.125 -> 0.12
        ("0.27", "50", "0.14"),  # 0.135 -> 0.14
        ("100000.00", "5", "5000.00"),
        ("100000.00", "10", "10000.00"),
        ("100000.00", "0.0001", "0.10"),
        ("33.33", "33.3333", "11.11"),  # 11.1099888... -> 11.11
        ("1000.00", "12.345", "123.45"),
    ],
)
def test_percent_of_usd_rounds_half_even_to_the_cent(amount: str, pct: str, expected: str) -> None:
    result = Money.of(amount, "USD").percent(Decimal(pct))
    assert str(result.amount) == expected
    assert result.currency == "USD"


@pytest.mark.parametrize(
    ("amount", "pct", "expected"),
    [("250", "1", "2"), ("350", "1", "4"), ("50", "1", "0"), ("150", "1", "2")],
)
def test_percent_of_jpy_rounds_half_even_to_the_yen(amount: str, pct: str, expected: str) -> None:
    assert str(Money.of(amount, "JPY").percent(Decimal(pct)).amount) == expected


@pytest.mark.parametrize(
    ("amount", "pct", "expected"),
    [("1.250", "1", "0.012"), ("1.350", "1", "0.014"), ("10.000", "80", "8.000")],
)
def test_percent_of_kwd_rounds_half_even_to_the_fils(amount: str, pct: str, expected: str) -> None:
    assert str(Money.of(amount, "KWD").percent(Decimal(pct)).amount) == expected


def test_rounded_rounds_a_derived_amount_half_even() -> None:
    assert str(Money.rounded(Decimal("2.345"), "USD").amount) == "2.34"
    assert str(Money.rounded(Decimal("2.355"), "USD").amount) == "2.36"
    assert str(Money.rounded(Decimal("2.5"), "JPY").amount) == "2"


# From minor units (Stripe amounts) -------------------------------------------------------


@pytest.mark.parametrize(
    ("minor", "currency", "expected"),
    [
        (54000, "USD", "540.00"),
        (1, "USD", "0.01"),
        (-1, "USD", "-0.01"),
        (0, "USD", "0.00"),
        (540, "JPY", "540"),
        (1234, "KWD", "1.234"),
        (5, "KWD", "0.005"),
    ],
)
def test_from_minor_units_places_the_decimal_point_per_currency(
    minor: int, currency: str, expected: str
) -> None:
    money = Money.from_minor_units(minor, currency)
    assert str(money.amount) == expected
    assert money.currency == currency
    assert money.minor_units == minor


@pytest.mark.parametrize("minor", [1.0, "100", True, Decimal(100)])
def test_from_minor_units_refuses_anything_but_an_int(minor: object) -> None:
    with pytest.raises(InvalidInput):
        Money.from_minor_units(minor, "USD")  # type: ignore[arg-type]


def test_from_minor_units_refuses_an_unknown_currency() -> None:
    with pytest.raises(InvalidInput) as caught:
        Money.from_minor_units(100, "XYZ")
    assert caught.value.code == "unknown_currency"


def test_zero_is_zero_at_the_minor_unit() -> None:
    assert str(Money.zero("USD").amount) == "0.00"
    assert str(Money.zero("JPY").amount) == "0"
    assert str(Money.zero("KWD").amount) == "0.000"


# Exact products --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("amount", "pct", "expected"),
    [
        # 84,738,220,744.915 less 10^-24: .91. Rounded to 28 digits first, the product was
        # exactly the half cent, and half-even made it .92.
        ("123456789012.33", "68.63795942113150181103", "84738220744.91"),
        ("1.00", "1.49999999999999999999", "0.01"),
        ("0.05", "50.00000000000000000001", "0.03"),  # 0.025000...0005: above the half
    ],
)
def test_a_percentage_of_many_digits_is_rounded_once(amount: str, pct: str, expected: str) -> None:
    assert str(Money.of(amount, "USD").percent(Decimal(pct)).amount) == expected


def test_an_exact_product_keeps_every_digit_and_refuses_a_float() -> None:
    product = exact_product(Decimal("123456789.01"), Decimal("24.18606216753409468899"))
    assert product == Decimal("2985933573.9999999999999999999999")  # 28 digits: 2985933574
    assert exact_percent(Decimal("1.00"), Decimal("1.49999999999999999999")) == Decimal(
        "0.0149999999999999999999"
    )
    with pytest.raises(TypeError):
        exact_product(Decimal(1), 0.5)  # type: ignore[arg-type]


@pytest.mark.parametrize("text", ["-0", "-0.00", "-0.0", "+0.00", "0"])
def test_a_signed_zero_is_plain_zero(text: str) -> None:
    money = Money.of(text, "USD")
    assert str(money.amount) == "0.00"
    assert not money.amount.is_signed()
    assert money == Money.zero("USD")
