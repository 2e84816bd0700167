"""Closed trades and equity marks as reported by a trading-platform bridge, validated."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from json.encoder import encode_basestring_ascii as _ascii
from typing import Any

from domain.errors import InvalidInput
from domain.money import Money, parse_decimal

SIDES = ("buy", "sell")
_SIDE_SPELLINGS = {"buy": "buy", "sell": "sell", "long": "buy", "short": "sell"}
TRADE_FIELDS = (
    "trade_id", "symbol", "side", "volume", "opened_at", "closed_at",
    "profit", "commission", "swap",
)  # fmt: skip
_TRADE_FIELD_SET = frozenset(TRADE_FIELDS)

_TRADE_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/#-]{0,127}$")
# Platform symbols: EURUSD, XAUUSD.r, US30.cash, BTC/USD, ESZ5, NQ#, 6E-M...
_SYMBOL_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/#:-]{0,31}$")
_RFC3339_PATTERN = re.compile(
    r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:[0-5]\d)$"
)
_MAX_VOLUME = Decimal(10) ** 9
_EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
_LATEST = datetime(2999, 12, 31, 23, 59, 59, tzinfo=UTC)


def parse_timestamp(value: Any, *, field: str) -> datetime:
    """An aware datetime from an RFC 3339 string with an offset; naive ones and numbers fail."""
    if not isinstance(value, str) or not _RFC3339_PATTERN.match(value):
        raise InvalidInput(
            f"{field} must be an RFC 3339 timestamp with an offset, "
            f"such as 2026-03-02T14:05:00Z, got {value!r}",
            code="invalid_timestamp",
            details={"field": field},
        )
    text = value.upper().replace(" ", "T")
    # Python keeps microseconds: nanosecond digits beyond them are cut, never rounded up.
    if "." in text:
        head, _, tail = text.partition(".")
        digits = re.match(r"\d+", tail)
        assert digits is not None
        text = head + "." + digits.group(0)[:6].ljust(6, "0") + tail[digits.end() :]
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as error:
        raise InvalidInput(
            f"{field} is not a valid date and time: {value!r}",
            code="invalid_timestamp",
            details={"field": field},
        ) from error
    assert parsed.tzinfo is not None
    try:
        in_range = _EARLIEST <= parsed.astimezone(UTC) <= _LATEST
    except OverflowError:  # year 1 or 9999 pushed past the calendar by its offset
        in_range = False
    if not in_range:
        # Zero times of unset fields ("0001-01-01T00:00:00Z") are bridge bugs, not trades.
        raise InvalidInput(
            f"{field} is out of range (years 1970 to 2999): {value!r}",
            code="invalid_timestamp",
            details={"field": field},
        )
    return parsed


@dataclass(frozen=True, slots=True)
class Trade:
    trade_id: str
    symbol: str
    side: str
    volume: Decimal
    opened_at: datetime
    closed_at: datetime
    profit: Money
    commission: Money
    swap: Money

    @property
    def net(self) -> Money:
        """Net P&L: profit + commission + swap (costs arrive negative)."""
        return self.profit + self.commission + self.swap

    @classmethod
    def parse(cls, data: Any, currency: str) -> Trade:
        if not isinstance(data, dict):
            raise InvalidInput("a trade must be a JSON object", code="invalid_trade")
        if not _TRADE_FIELD_SET.issuperset(data):
            unknown = sorted(set(data) - _TRADE_FIELD_SET)
            raise InvalidInput(
                f"unknown trade fields: {', '.join(unknown)}",
                code="unknown_field",
                details={"fields": unknown},
            )
        trade_id = data.get("trade_id")
        if type(trade_id) is int and trade_id >= 0:
            # A platform's ticket number (MT5 writes them as integers): the same trade as
            # its decimal text.
            trade_id = str(trade_id)
        if not isinstance(trade_id, str) or not _TRADE_ID_PATTERN.match(trade_id):
            raise InvalidInput(
                "trade_id must be 1-128 characters of letters, digits and ._:/#-",
                code="invalid_trade_id",
                details={"field": "trade_id"},
            )
        symbol = data.get("symbol")
        if not isinstance(symbol, str) or not _SYMBOL_PATTERN.match(symbol):
            raise InvalidInput(
                f"symbol {symbol!r} has an unknown format: expected 1-32 letters, digits "
                "and ._/#:- such as EURUSD or US30.cash",
                code="invalid_symbol",
                details={"field": "symbol"},
            )
        side = data.get("side")
        if side not in SIDES:
            # Bridges write it "BUY", "Sell", "long": the same two sides.
            side = _SIDE_SPELLINGS.get(side.strip().lower()) if isinstance(side, str) else None
            if side is None:
                raise InvalidInput(
                    "side must be 'buy' or 'sell' (any case; 'long' and 'short' too)",
                    code="invalid_side",
                    details={"field": "side"},
                )
        volume = _volume(data.get("volume"))
        opened_at = parse_timestamp(data.get("opened_at"), field="opened_at")
        closed_at = parse_timestamp(data.get("closed_at"), field="closed_at")
        if closed_at < opened_at:
            raise InvalidInput(
                "closed_at is before opened_at",
                code="closed_before_opened",
                details={"opened_at": data.get("opened_at"), "closed_at": data.get("closed_at")},
            )
        if "profit" not in data:
            raise InvalidInput(
                "profit is required", code="invalid_decimal", details={"field": "profit"}
            )
        return cls(
            trade_id=trade_id,
            symbol=symbol,
            side=str(side),
            volume=volume,
            opened_at=opened_at,
            closed_at=closed_at,
            profit=Money.of(data["profit"], currency, field="profit"),
            commission=Money.of(data.get("commission", "0"), currency, field="commission"),
            swap=Money.of(data.get("swap", "0"), currency, field="swap"),
        )

    def to_event_dict(self) -> dict[str, Any]:
        return {
            "trade_id": self.trade_id,
            "symbol": self.symbol,
            "side": self.side,
            "volume": self.volume,
            "opened_at": self.opened_at,
            "closed_at": self.closed_at,
            "profit": self.profit.amount,
            "commission": self.commission.amount,
            "swap": self.swap.amount,
        }

    @property
    def fingerprint(self) -> str:
        """Identifies the trade's content, so a retry can be told from a different trade
        that reuses a trade_id. Instants are compared in UTC: the same moment written
        with another offset is the same trade.

        The hash is over `json.dumps(canonical, sort_keys=True)` of the fields below
        (stored fingerprints are that text's), composed here directly: the C string
        escaper for the strings, `float.__repr__` for the instants, as json does it.
        tests/unit/test_hot_path.py holds the two to the same text."""
        canonical = "".join(
            [
                '{"closed_at": ',
                float.__repr__(self.closed_at.timestamp()),
                ', "commission": ',
                _ascii(str(self.commission.amount)),
                ', "opened_at": ',
                float.__repr__(self.opened_at.timestamp()),
                ', "profit": ',
                _ascii(str(self.profit.amount)),
                ', "side": ',
                _ascii(self.side),
                ', "swap": ',
                _ascii(str(self.swap.amount)),
                ', "symbol": ',
                _ascii(self.symbol),
                ', "volume": ',
                _ascii(str(self.volume.normalize())),
                "}",
            ]
        )
        return hashlib.sha256(canonical.encode()).hexdigest()[:32]


def _volume(value: Any) -> Decimal:
    # Volume is a quantity of lots or contracts, not money: a JSON number is accepted, and
    # converted through its decimal text so 0.1 stays exactly 0.1.
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise InvalidInput(
            "volume must be a positive number", code="invalid_volume", details={"field": "volume"}
        )
    try:
        volume = parse_decimal(str(value), field="volume")
    except InvalidInput as error:
        raise InvalidInput(
            "volume must be a positive number", code="invalid_volume", details={"field": "volume"}
        ) from error
    if volume <= 0 or volume > _MAX_VOLUME:
        raise InvalidInput(
            f"volume must be positive and at most {_MAX_VOLUME}, got {volume}",
            code="invalid_volume",
            details={"field": "volume"},
        )
    return volume


def parse_equity_mark(data: Any, currency: str) -> tuple[Money, datetime]:
    if not isinstance(data, dict):
        raise InvalidInput("an equity mark must be a JSON object", code="invalid_equity")
    unknown = sorted(set(data) - {"equity", "at"})
    if unknown:
        raise InvalidInput(
            f"unknown equity fields: {', '.join(unknown)}",
            code="unknown_field",
            details={"fields": unknown},
        )
    equity = Money.of(data.get("equity"), currency, field="equity")
    at = parse_timestamp(data.get("at"), field="at")
    return equity, at
