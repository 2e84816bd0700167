"""Money: an exact Decimal amount in an ISO 4217 currency, at the currency's minor unit.

A float never becomes Money: the constructors take `Decimal` or decimal strings only, and
arithmetic refuses to mix currencies. Amounts are always quantised to the currency's
minor unit (JPY has none, KWD three); input with more places than that is refused rather
than silently rounded, and derived amounts (percentages, splits) round half-even.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import MAX_EMAX, MIN_EMIN, ROUND_HALF_EVEN, Context, Decimal, InvalidOperation
from functools import lru_cache
from typing import Any

from domain.errors import CurrencyMismatch, InvalidInput

# ISO 4217 minor units for the currencies whose exponent is not 2.
_EXPONENT_NOT_TWO: dict[str, int] = {
    # zero-decimal
    "BIF": 0, "CLP": 0, "DJF": 0, "GNF": 0, "ISK": 0, "JPY": 0, "KMF": 0, "KRW": 0,
    "PYG": 0, "RWF": 0, "UGX": 0, "UYI": 0, "VND": 0, "VUV": 0, "XAF": 0, "XOF": 0,
    "XPF": 0,
    # three-decimal
    "BHD": 3, "IQD": 3, "JOD": 3, "KWD": 3, "LYD": 3, "OMR": 3, "TND": 3,
    # four-decimal
    "CLF": 4, "UYW": 4,
}  # fmt: skip

# Active ISO 4217 codes with two decimal places.
_EXPONENT_TWO = frozenset(
    """
    AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BMD BND BOB BOV BRL BSD BTN
    BWP BYN BZD CAD CDF CHE CHF CHW CNY COP COU CRC CUP CVE CZK DKK DOP DZD EGP ERN ETB
    EUR FJD FKP GBP GEL GHS GIP GMD GTQ GYD HKD HNL HTG HUF IDR ILS INR IRR JMD KES KGS
    KHR KPW KYD KZT LAK LBP LKR LRD LSL MAD MDL MGA MKD MMK MNT MOP MRU MUR MVR MWK MXN
    MXV MYR MZN NAD NGN NIO NOK NPR NZD PAB PEN PGK PHP PKR PLN QAR RON RSD RUB SAR SBD
    SCR SDG SEK SGD SHP SLE SOS SRD SSP STN SVC SYP SZL THB TJS TMT TOP TRY TTD TWD TZS
    UAH USD USN UYU UZS VED VES WST XCD XCG YER ZAR ZMW ZWG
    """.split()  # noqa: SIM905 - a table reads better as text
)

_CURRENCY_PATTERN = re.compile(r"^[A-Z]{3}$")
# ASCII digits only: `\d` and Decimal() also take other scripts' digits (Arabic-Indic...).
_AMOUNT_PATTERN = re.compile(r"^[+-]?([0-9]+)(\.[0-9]+)?$")
# 10^12 units (a trillion): far above any real amount, and far enough below 2^63 minor
# units (9.2e18) that the journal's 64-bit sums of many such amounts cannot overflow.
_MAX_INTEGER_DIGITS = 12


def minor_unit_exponent(currency: str) -> int:
    """Number of decimal places of the currency's minor unit (ISO 4217)."""
    if currency in _EXPONENT_NOT_TWO:
        return _EXPONENT_NOT_TWO[currency]
    if currency in _EXPONENT_TWO:
        return 2
    raise InvalidInput(
        f"unknown currency {currency!r}: expected an ISO 4217 code such as 'USD'",
        code="unknown_currency",
        details={"currency": currency},
    )


def check_currency(currency: Any) -> str:
    if not isinstance(currency, str) or not _CURRENCY_PATTERN.match(currency):
        raise InvalidInput(
            f"currency must be a three-letter ISO 4217 code, got {currency!r}",
            code="unknown_currency",
        )
    minor_unit_exponent(currency)
    return currency


_QUANTA: dict[str, Decimal] = {}  # currency -> its minor unit; known currencies only


def _quantum(currency: str) -> Decimal:
    quantum = _QUANTA.get(currency)
    if quantum is None:
        quantum = Decimal(1).scaleb(-minor_unit_exponent(currency))  # raises if unknown
        _QUANTA[currency] = quantum
    return quantum


def parse_decimal(value: Any, *, field: str = "amount") -> Decimal:
    """A decimal from a decimal string (or Decimal). JSON numbers and floats are refused."""
    return _parse_decimal(value, field)[0]


def _parse_decimal(value: Any, field: str) -> tuple[Decimal, int]:
    """`parse_decimal`, and how many digits the text has after its point."""
    if isinstance(value, Decimal):
        text = str(value)
    elif isinstance(value, str):
        text = value
    else:
        raise InvalidInput(
            f'{field} must be a decimal string such as "540.00", not {type(value).__name__}',
            code="invalid_decimal",
            details={"field": field},
        )
    match = _AMOUNT_PATTERN.fullmatch(text)
    if match is None:
        raise InvalidInput(
            f'{field} must be a decimal string such as "540.00", got {value!r}',
            code="invalid_decimal",
            details={"field": field},
        )
    if len(match.group(1).lstrip("0")) > _MAX_INTEGER_DIGITS:
        raise InvalidInput(
            f"{field} is too large: at most {_MAX_INTEGER_DIGITS} digits before the point, "
            f"got {value!r}",
            code="invalid_decimal",
            details={"field": field},
        )
    fraction = match.group(2)
    try:
        return Decimal(text), 0 if fraction is None else len(fraction) - 1
    except InvalidOperation as error:  # pragma: no cover - the pattern already guards
        raise InvalidInput(
            f"{field} is not a decimal: {value!r}", code="invalid_decimal"
        ) from error


@dataclass(frozen=True, slots=True)
class Money:
    amount: Decimal
    currency: str

    def __post_init__(self) -> None:
        if not isinstance(self.amount, Decimal):
            raise TypeError(f"Money amount must be Decimal, not {type(self.amount).__name__}")
        if not self.amount.is_finite():
            raise InvalidInput("money amount must be finite", code="invalid_decimal")
        quantum = _quantum(self.currency)
        exact = self.amount.quantize(quantum, rounding=ROUND_HALF_EVEN)
        if self.amount != exact:
            raise InvalidInput(
                f"{self.amount} has more decimal places than {self.currency} allows "
                f"({minor_unit_exponent(self.currency)})",
                code="too_many_decimal_places",
                details={"amount": str(self.amount), "currency": self.currency},
            )
        # Normalise the scale so equal amounts print identically ("5" -> "5.00"); an
        # amount equal to its rounding is the same whatever the rounding mode.
        object.__setattr__(self, "amount", exact)

    # Construction --------------------------------------------------------------------

    @classmethod
    def of(cls, amount: Any, currency: str, *, field: str = "amount") -> Money:
        """Money from a decimal string or Decimal, refusing floats and excess places."""
        check_currency(currency)
        number, places = _parse_decimal(amount, field)
        if not number and number.is_signed():
            number = number.copy_abs()  # "-0" is zero: never echoed, stored or summed as "-0.00"
        if places == minor_unit_exponent(currency):
            # Written with exactly the minor unit's places ("540.00" USD): already what
            # __post_init__ would quantise it to, so it is not checked again.
            money = object.__new__(cls)
            object.__setattr__(money, "amount", number)
            object.__setattr__(money, "currency", currency)
            return money
        return cls(number, currency)

    @classmethod
    def zero(cls, currency: str) -> Money:
        return cls(Decimal(0), currency)

    @classmethod
    def rounded(cls, amount: Decimal, currency: str, rounding: str = ROUND_HALF_EVEN) -> Money:
        """Money from a derived amount, rounded to the minor unit (half-even unless told)."""
        return cls(amount.quantize(_quantum(currency), rounding=rounding), currency)

    @classmethod
    def from_minor_units(cls, minor_units: int, currency: str) -> Money:
        """Money from an integer count of minor units (how Stripe sends amounts)."""
        if isinstance(minor_units, bool) or not isinstance(minor_units, int):
            raise InvalidInput("minor units must be an integer", code="invalid_decimal")
        return cls(Decimal(minor_units).scaleb(-minor_unit_exponent(currency)), currency)

    # Arithmetic ------------------------------------------------------------------------

    def _check(self, other: Money) -> None:
        if not isinstance(other, Money):
            raise TypeError(f"cannot combine Money with {type(other).__name__}")
        if other.currency != self.currency:
            raise CurrencyMismatch(
                f"cannot combine {self.currency} with {other.currency}",
                details={"currencies": [self.currency, other.currency]},
            )

    def __add__(self, other: Money) -> Money:
        self._check(other)
        return _sum(self.amount, other.amount, self.amount + other.amount, self.currency)

    def __sub__(self, other: Money) -> Money:
        self._check(other)
        return _sum(self.amount, other.amount, self.amount - other.amount, self.currency)

    def __neg__(self) -> Money:
        return Money(-self.amount, self.currency)

    def __lt__(self, other: Money) -> bool:
        self._check(other)
        return self.amount < other.amount

    def __le__(self, other: Money) -> bool:
        self._check(other)
        return self.amount <= other.amount

    def __gt__(self, other: Money) -> bool:
        self._check(other)
        return self.amount > other.amount

    def __ge__(self, other: Money) -> bool:
        self._check(other)
        return self.amount >= other.amount

    def percent(self, pct: Decimal, rounding: str = ROUND_HALF_EVEN) -> Money:
        """`pct` percent of this amount, rounded to the minor unit (half-even unless told)."""
        if type(pct) is not Decimal:  # keyed by value, a float or int would hit a Decimal
            return Money.rounded(exact_percent(self.amount, pct), self.currency, rounding)
        # Signs are part of the key: -0 equals 0 but prints "-0.00".
        return _percent(
            self.amount, self.currency, pct, rounding, self.amount.is_signed(), pct.is_signed()
        )

    def max(self, other: Money) -> Money:
        return other if other > self else self

    def min(self, other: Money) -> Money:
        return other if other < self else self

    @property
    def minor_units(self) -> int:
        return int(self.amount.scaleb(minor_unit_exponent(self.currency)))

    def __str__(self) -> str:
        return f"{self.amount} {self.currency}"


@lru_cache(maxsize=4096)
def _percent(
    amount: Decimal,
    currency: str,
    pct: Decimal,
    rounding: str,
    _amount_signed: bool,
    _pct_signed: bool,
) -> Money:
    """Remembered: the rules take the same few percentages of an account's initial
    balance (its floors, its target) on every trade. The result depends only on the
    values (Money is immutable), so a remembered one is the one that would be computed."""
    return Money.rounded(exact_percent(amount, pct), currency, rounding)


# Products computed exactly, then rounded once: the default context keeps 28 digits, and a
# 16-digit amount times a many-digit percentage would be rounded there first (a half-even
# share of 1.00 at 1.4999...9 % came out 0.02, not 0.01).
_EXACT = Context(prec=400, Emax=MAX_EMAX, Emin=MIN_EMIN)


def exact_product(a: Decimal | int, b: Decimal | int) -> Decimal:
    """`a` x `b` with every digit kept (the operands are bounded by input validation).
    A float is refused (TypeError), as Decimal arithmetic refuses it."""
    return _EXACT.multiply(a, b)


def exact_difference(a: Decimal, b: Decimal) -> Decimal:
    """`a` - `b` with every digit kept."""
    return _EXACT.subtract(a, b)


def exact_percent(amount: Decimal, pct: Decimal | int) -> Decimal:
    """`pct` % of `amount`, every digit kept: to be rounded once, by the caller."""
    return _EXACT.scaleb(exact_product(amount, pct), Decimal(-2))


_EXACT_BOUND = Decimal(10) ** 20


def _sum(a: Decimal, b: Decimal, result: Decimal, currency: str) -> Money:
    """Money from the sum or difference of two amounts of `currency`. Both are already at
    the currency's minor unit (at most 4 places); below 10^20 each, their sum has at most
    25 digits, so Decimal computed it exactly at that same exponent: exactly what the
    checks of Money() would keep, so they are skipped. Larger amounts take them."""
    if -_EXACT_BOUND < a < _EXACT_BOUND and -_EXACT_BOUND < b < _EXACT_BOUND:
        money = object.__new__(Money)
        object.__setattr__(money, "amount", result)
        object.__setattr__(money, "currency", currency)
        return money
    return Money(result, currency)
