"""The hot path's shortcuts give exactly what the long way gives.

- `Money.percent` remembers results by value: signs, types and errors stay as they were.
- `Money.of` skips re-checking text written at the minor unit's places: the same Money.
- A trade's fingerprint is the SHA-256 of `json.dumps(..., sort_keys=True)`, unchanged,
  though composed without json (property test over symbols, volumes, offsets, amounts).
- An export line is composed directly, byte for byte what `json.dumps` of its record gives.
- Report amounts are formatted from minor units with integers: the Decimal text exactly.
- An account loaded from a snapshot keeps its trade ids as the snapshot's text until a
  command needs them; parsed, they are the same ids, and old snapshots still load.
- Deciding a trade hands the computed state to the event's apply instead of computing it
  twice: the decided account equals a replay of its events, whatever the trades do
  (breaches, passes, late trades, other days, trailing floors).
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from domain.account import TradingAccount
from domain.errors import InvalidInput
from domain.money import Money, parse_decimal
from domain.trade import Trade
from ledger.audit import export_line
from projections.payouts import minor_text
from tests.unit.builders import close, open_account, replay, trade


def test_percent_keeps_the_sign_of_zero_whatever_came_first() -> None:
    assert str(Money(Decimal("0.00"), "USD").percent(Decimal("5"))) == "0.00 USD"
    assert str(Money(Decimal("-0.00"), "USD").percent(Decimal("5"))) == "-0.00 USD"
    assert str(Money(Decimal("0.00"), "USD").percent(Decimal("-5"))) == "-0.00 USD"
    assert str(Money(Decimal("0.00"), "USD").percent(Decimal("5"))) == "0.00 USD"


def test_percent_of_a_float_still_fails_after_the_same_decimal_was_remembered() -> None:
    amount = Money(Decimal("100000.00"), "USD")
    assert amount.percent(Decimal("5")) == Money(Decimal("5000.00"), "USD")
    with pytest.raises(TypeError):
        amount.percent(5.0)  # type: ignore[arg-type]


def test_percent_rounds_half_even_like_the_long_way() -> None:
    for text, pct in [("0.50", "1"), ("1.50", "1"), ("333.33", "3.3"), ("-12.34", "12.5")]:
        money = Money(Decimal(text), "USD")
        expected = Money.rounded(money.amount * Decimal(pct) / 100, "USD")
        assert money.percent(Decimal(pct)) == expected
        assert str(money.percent(Decimal(pct))) == str(expected)


def _long_way_fingerprint(parsed: Trade) -> str:
    canonical = {
        "symbol": parsed.symbol,
        "side": parsed.side,
        "volume": str(parsed.volume.normalize()),
        "opened_at": parsed.opened_at.timestamp(),
        "closed_at": parsed.closed_at.timestamp(),
        "profit": str(parsed.profit.amount),
        "commission": str(parsed.commission.amount),
        "swap": str(parsed.swap.amount),
    }
    return hashlib.sha256(json.dumps(canonical, sort_keys=True).encode()).hexdigest()[:32]


def test_a_fingerprint_is_the_hash_of_the_sorted_json() -> None:
    parsed = trade("T-1", "2026-03-02T10:00:00+01:00", "-12.50", commission="-0.70")
    assert (str(parsed.profit.amount), str(parsed.commission.amount)) == ("-12.50", "-0.70")
    assert parsed.fingerprint == _long_way_fingerprint(parsed)


@settings(max_examples=400, deadline=None)
@given(
    sign=st.sampled_from(["", "+", "-"]),
    whole=st.from_regex(r"\A[0-9]{1,15}\Z"),
    fraction=st.none() | st.from_regex(r"\A[0-9]{0,5}\Z"),
    currency=st.sampled_from(["USD", "JPY", "KWD", "CLF"]),
)
def test_money_of_text_at_the_minor_units_places_is_what_the_checked_way_gives(
    sign: str, whole: str, fraction: str | None, currency: str
) -> None:
    text = sign + whole + ("" if fraction is None else "." + fraction)
    checked: Money | str
    try:
        number = parse_decimal(text)
        # A signed zero is zero (Money.of drops the sign; the checked way keeps it).
        checked = Money(number if number else number.copy_abs(), currency)
    except InvalidInput as refused:
        checked = refused.code
    try:
        quick: Money | str = Money.of(text, currency)
    except InvalidInput as refused:
        quick = refused.code
    if isinstance(checked, str):
        assert quick == checked
        return
    assert isinstance(quick, Money)
    assert quick == checked
    assert str(quick) == str(checked)
    assert quick.amount.as_tuple() == checked.amount.as_tuple()


_instants = st.datetimes(
    min_value=datetime(1970, 1, 2), max_value=datetime(2999, 12, 30), timezones=st.just(UTC)
)


@settings(max_examples=300, deadline=None)
@given(
    symbol=st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9._/#:-]{0,31}\Z"),
    side=st.sampled_from(["buy", "sell"]),
    volume=st.decimals(min_value="0.0001", max_value=10**9, places=4).map(str)
    | st.integers(1, 10**9),
    offset_minutes=st.integers(-14 * 60, 14 * 60),
    opened=_instants,
    held=st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=40)),
    amounts=st.tuples(*[st.decimals(-(10**12) + 1, 10**12 - 1, places=2).map(str)] * 3),
    currency=st.sampled_from(["USD", "JPY", "KWD"]),
)
def test_a_composed_fingerprint_is_the_sorted_json_one(
    symbol: str,
    side: str,
    volume: str | int,
    offset_minutes: int,
    opened: datetime,
    held: timedelta,
    amounts: tuple[str, str, str],
    currency: str,
) -> None:
    zone = timezone(timedelta(minutes=offset_minutes))
    closed = min(opened + held, datetime(2999, 12, 31, tzinfo=UTC))
    places = {"USD": 2, "JPY": 0, "KWD": 3}[currency]
    profit, commission, swap = (
        str(Decimal(amount).quantize(Decimal(1).scaleb(-places))) for amount in amounts
    )
    parsed = Trade.parse(
        {
            "trade_id": "T-1",
            "symbol": symbol,
            "side": side,
            "volume": volume,
            "opened_at": opened.astimezone(zone).isoformat(),
            "closed_at": closed.astimezone(zone).isoformat(),
            "profit": profit,
            "commission": commission,
            "swap": swap,
        },
        currency,
    )
    assert parsed.fingerprint == _long_way_fingerprint(parsed)


_profits = st.decimals(min_value=-3000, max_value=3000, places=2).map(str)


@settings(max_examples=40, deadline=None)
@given(
    moves=st.lists(st.tuples(_profits, st.integers(0, 9), st.integers(0, 23)), max_size=25),
    mode=st.sampled_from(["static", "trailing", "trailing_eod"]),
)
def test_a_decided_account_equals_a_replay_of_its_events(
    moves: list[tuple[str, int, int]], mode: str
) -> None:
    account = open_account(max_loss_mode=mode, min_trading_days=2)
    for number, (profit, day, hour) in enumerate(moves):
        close(account, f"T-{number}", f"2026-03-{2 + day:02d}T{hour:02d}:30:00Z", profit)
    replayed = replay(account)
    assert "_decided" not in account.__dict__
    assert replayed.state == account.state
    assert replayed.trades == account.trades
    assert replayed.status == account.status
    assert replayed.board() == account.board()


_amounts = st.decimals(min_value=-(10**22), max_value=10**22, places=2, allow_nan=False)


@settings(max_examples=200, deadline=None)
@given(a=_amounts, b=_amounts)
def test_sums_of_money_equal_money_built_and_checked_from_the_sum(a: Decimal, b: Decimal) -> None:
    left, right = Money(a, "USD"), Money(b, "USD")
    for result, expected in ((left + right, a + b), (left - right, a - b)):
        checked = Money(expected, "USD")
        assert result == checked
        assert repr(result) == repr(checked)  # the same digits, exponent and sign
        assert hash(result) == hash(checked)


def test_after_trade_spells_out_every_field_of_the_state() -> None:
    # rules.after_trade builds AccountState field by field (faster than replace()): a
    # field added to AccountState must be added there too.
    import dataclasses

    from domain.rules import AccountState

    assert len(dataclasses.fields(AccountState)) == 13


@settings(max_examples=300, deadline=None)
@given(
    position=st.integers(min_value=1, max_value=2**62),
    version=st.integers(min_value=1, max_value=2**31),
    topic=st.text(),
    stream=st.text(alphabet="0123456789abcdef", min_size=32, max_size=32),
    state=st.binary(max_size=64),
    chain_hash=st.none() | st.text(),
    recorded_at=st.none() | st.text() | st.integers(),
)
def test_an_export_line_is_what_json_dumps_gives(
    position: int,
    version: int,
    topic: str,
    stream: str,
    state: bytes,
    chain_hash: str | None,
    recorded_at: str | int | None,
) -> None:
    encoded = base64.b64encode(state).decode("ascii")
    record = {
        "position": position,
        "stream_id": stream,
        "version": version,
        "topic": topic,
        "state": encoded,
        "hash": chain_hash,
        "recorded_at": recorded_at,
    }
    expected = json.dumps(record, separators=(",", ":")) + "\n"
    line = export_line(position, stream, version, topic, encoded, chain_hash, recorded_at)
    assert line == expected


@settings(max_examples=500, deadline=None)
@given(minor=st.integers(min_value=-(10**24), max_value=10**24), exponent=st.integers(0, 3))
def test_minor_units_text_is_the_decimal_text(minor: int, exponent: int) -> None:
    assert minor_text(minor, exponent) == str(Decimal(minor).scaleb(-exponent))


def test_trade_ids_from_a_snapshot_stay_text_until_needed_and_then_are_the_same() -> None:
    account = open_account()
    for number in range(5):
        close(account, f"T-{number}", f"2026-03-02T10:0{number}:00Z", "12.50")
    state = account.snapshot_state()
    assert state["trade_log"].count("\n") == 4
    loaded = TradingAccount.from_snapshot_state(account.id, account.version, state)
    assert loaded.__dict__["_trades"] is None  # not parsed by loading
    copied = copy.deepcopy(loaded)  # what every command works on
    assert copied.__dict__["_trades"] is None  # a copy (a read) does not parse either
    assert loaded.snapshot_state() == state  # the text is kept as it came
    assert copied.trades == account.trades
    copied.trades["T-9"] = (99, "f" * 32)
    assert "T-9" not in loaded.trades  # copies never share a parsed map they change
    assert loaded.trades == account.trades
    assert close(loaded, "T-3", "2026-03-02T10:03:00Z", "12.50").duplicate  # found by id
    assert loaded.snapshot_state()["trade_log"] == state["trade_log"]  # parsed, same text


def test_a_snapshot_stored_before_trade_log_still_loads() -> None:
    account = open_account()
    close(account, "T-1", "2026-03-02T10:00:00Z", "12.50")
    close(account, "T-2", "2026-03-02T11:00:00Z", "-2.50")
    state = account.snapshot_state()
    older = {key: value for key, value in state.items() if key != "trade_log"}
    older["trades"] = {trade_id: list(entry) for trade_id, entry in account.trades.items()}
    loaded = TradingAccount.from_snapshot_state(account.id, account.version, older)
    assert loaded.trades == account.trades
    assert loaded.snapshot_state() == state


def test_events_replayed_after_a_snapshot_add_trade_ids_without_parsing_the_text() -> None:
    account = open_account()
    for number in range(4):
        close(account, f"T-{number}", f"2026-03-02T10:0{number}:00Z", "3.00")
    account.collect_events()  # saved: what follows are the events after the snapshot
    state = account.snapshot_state()
    version = account.version
    close(account, "T-4", "2026-03-02T11:00:00Z", "-1.00")
    close(account, "T-5", "2026-03-02T11:30:00Z", "2.00")
    after = account.collect_events()
    loaded: Any = TradingAccount.from_snapshot_state(account.id, version, state)
    for event in after:
        loaded = event.mutate(loaded)
    assert loaded.__dict__["_trades"] is None  # a read after a replay parses nothing
    assert loaded.snapshot_state() == account.snapshot_state()
    assert loaded.trades == account.trades
    assert list(loaded.trades) == [f"T-{n}" for n in range(6)]  # recording order kept
