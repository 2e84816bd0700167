"""The TradingAccount aggregate: passing a phase, breach as a terminal state, duplicate and
conflicting trades, replay from events, and the validation of trades from the bridges.

B0 = 100000.00 USD, profit target 10 % (110000.00), 4 minimum trading days, 5 % daily and
10 % maximum loss, days at Prague midnight; numbers are worked out in the comments.
"""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

import pytest

from domain.account import TradingAccount
from domain.errors import Conflict, InvalidInput
from domain.ids import next_account_id
from domain.money import Money
from domain.program import ProgramDefinition
from domain.trade import Trade, parse_equity_mark
from tests.unit.builders import (
    ACCOUNT_ID,
    close,
    mark,
    open_account,
    parse_instant,
    program_dict,
    replay,
    trade,
    trade_data,
    usd,
)

NEXT_ID = next_account_id(ACCOUNT_ID)


def event_names(account: TradingAccount) -> list[str]:
    return [type(event).__name__ for event in account.collect_events()]


# Opening ---------------------------------------------------------------------------------


def test_a_new_account_starts_at_b0_with_both_floors_and_no_day() -> None:
    account = open_account()
    assert account.id == ACCOUNT_ID
    assert account.stage == "phase-1"
    assert account.currency == "USD"
    expected = {
        "status": "active",
        "balance": usd("100000.00"),
        "equity": usd("100000.00"),
        "high_water_mark": usd("100000.00"),
        "day_start_balance": usd("100000.00"),
        "daily_loss_floor": usd("95000.00"),
        "max_loss_floor": usd("90000.00"),
        "trading_days": 0,
        "profit": usd("0.00"),
        "current_day": None,
        "breach": None,
        "passed_at": None,
        "next_account_id": None,
    }
    board = account.board()
    assert {key: board[key] for key in expected} == expected
    assert event_names(account) == ["Opened"]


# Passing ---------------------------------------------------------------------------------


def test_a_target_reached_early_passes_on_the_trade_that_completes_the_fourth_day() -> None:
    account = open_account()
    outcome = close(account, "t1", "2026-01-05T10:00:00Z", "11000.00")  # 111000.00 >= 110000
    assert outcome.opened is None
    assert account.board()["status"] == "active"
    assert account.board()["balance"] == usd("111000.00")
    assert account.board()["trading_days"] == 1

    close(account, "t2", "2026-01-05T15:00:00Z", "100.00")  # same day: still one day
    assert account.board()["trading_days"] == 1
    close(account, "t3", "2026-01-06T10:00:00Z", "100.00")
    outcome = close(account, "t4", "2026-01-07T10:00:00Z", "0.00")  # a flat trade is a day
    assert outcome.opened is None
    board = account.board()
    assert board["status"] == "active"
    assert board["trading_days"] == 3
    assert board["balance"] == usd("111200.00")

    # The fourth day's trade loses money but leaves 110700.00, still above the target.
    outcome = close(account, "t5", "2026-01-08T10:00:00Z", "-500.00")
    board = account.board()
    assert board["status"] == "passed"
    assert board["balance"] == usd("110700.00")
    assert board["trading_days"] == 4
    assert board["passed_at"] == parse_instant("2026-01-08T10:00:00Z")
    assert board["next_account_id"] == str(NEXT_ID)
    assert account.next_account_id == str(NEXT_ID)

    opened = outcome.opened
    assert opened is not None
    assert opened.id == NEXT_ID
    assert opened.stage == "phase-2"
    assert opened.previous_account_id == str(ACCOUNT_ID)
    assert opened.trader_id == "trader-1"
    assert opened.program_version == 1
    assert opened.board()["status"] == "active"
    assert opened.board()["balance"] == usd("100000.00")
    assert opened.board()["trading_days"] == 0
    assert opened.board()["max_loss_floor"] == usd("90000.00")
    assert event_names(opened) == ["Opened"]


def test_passing_records_the_trade_then_the_pass() -> None:
    account = open_account(min_trading_days=0)
    account.collect_events()
    close(account, "t1", "2026-01-05T10:00:00Z", "10000.00")  # exactly 110000.00
    assert event_names(account) == ["TradeClosed", "PhasePassed"]
    assert account.board()["status"] == "passed"


def test_one_cent_short_of_the_target_does_not_pass() -> None:
    account = open_account(min_trading_days=0)
    close(account, "t1", "2026-01-05T10:00:00Z", "9999.99")
    assert account.board()["status"] == "active"


def test_the_last_phase_opens_the_funded_account() -> None:
    account = open_account(phases=1, min_trading_days=0)
    outcome = close(account, "t1", "2026-01-05T10:00:00Z", "10000.00")
    assert outcome.opened is not None
    assert outcome.opened.stage == "funded"
    assert outcome.opened.board()["balance"] == usd("100000.00")


def test_the_second_phase_opens_funded_after_two_phases() -> None:
    account = open_account("phase-2", min_trading_days=0)
    outcome = close(account, "t1", "2026-01-05T10:00:00Z", "10000.00")
    assert outcome.opened is not None
    assert outcome.opened.stage == "funded"


def test_a_funded_account_never_passes() -> None:
    account = open_account("funded", min_trading_days=0)
    for day in range(5, 10):
        outcome = close(account, f"t{day}", f"2026-01-0{day}T10:00:00Z", "4000.00")
        assert outcome.opened is None
    board = account.board()
    assert board["balance"] == usd("120000.00")
    assert board["status"] == "active"


def test_trades_after_a_pass_are_recorded_but_open_nothing_more() -> None:
    account = open_account(min_trading_days=0)
    close(account, "t1", "2026-01-05T10:00:00Z", "10000.00")
    account.collect_events()
    outcome = close(account, "t2", "2026-01-06T10:00:00Z", "-9000.00")
    assert outcome.opened is None
    assert outcome.duplicate is False
    board = account.board()
    assert board["status"] == "passed"
    assert board["balance"] == usd("101000.00")
    assert board["breach"] is None
    assert event_names(account) == ["TradeClosed"]


# Breach is terminal ----------------------------------------------------------------------


def test_a_breach_is_terminal_later_trades_are_recorded_but_change_no_status() -> None:
    account = open_account()
    close(account, "t1", "2026-01-05T10:00:00Z", "-5000.01")  # 94999.99 < 95000.00
    assert account.board()["status"] == "breached"
    assert event_names(account) == ["Opened", "TradeClosed", "RuleBreached"]

    # 94999.99 + 16000.00 + 100.00 + 100.00 = 111199.99 over four days: would have passed.
    outcomes = [
        close(account, "t2", "2026-01-06T10:00:00Z", "16000.00"),
        close(account, "t3", "2026-01-07T10:00:00Z", "100.00"),
        close(account, "t4", "2026-01-08T10:00:00Z", "100.00"),
    ]
    assert all(outcome.opened is None for outcome in outcomes)
    board = account.board()
    assert board["status"] == "breached"
    assert board["balance"] == usd("111199.99")
    assert board["trading_days"] == 4
    assert board["passed_at"] is None
    assert board["next_account_id"] is None
    assert board["breach"]["rule"] == "max_daily_loss"
    assert board["breach"]["value"] == usd("94999.99")
    assert board["breach"]["at"] == parse_instant("2026-01-05T10:00:00Z")
    assert event_names(account) == ["TradeClosed", "TradeClosed", "TradeClosed"]


def test_a_breached_account_records_no_second_breach() -> None:
    account = open_account()
    close(account, "t1", "2026-01-05T10:00:00Z", "-5000.01")
    account.collect_events()
    close(account, "t2", "2026-01-05T11:00:00Z", "-6000.00")  # 88999.99: below both floors
    mark(account, "80000.00", "2026-01-05T12:00:00Z")
    assert event_names(account) == ["TradeClosed", "EquityMarked"]
    board = account.board()
    assert board["breach"]["rule"] == "max_daily_loss"
    assert board["breach"]["value"] == usd("94999.99")
    assert board["balance"] == usd("88999.99")
    assert board["equity"] == usd("80000.00")


# Duplicates and conflicts ----------------------------------------------------------------


def test_a_duplicate_trade_id_with_the_same_content_records_nothing() -> None:
    account = open_account()
    first = close(account, "t1", "2026-01-05T10:00:00Z", "100.00")
    close(account, "t2", "2026-01-05T11:00:00Z", "50.00")
    account.collect_events()
    version = account.version

    again = close(account, "t1", "2026-01-05T10:00:00Z", "100.00")
    assert again.duplicate is True
    assert again.version == first.version == 2
    assert again.opened is None
    assert account.collect_events() == []
    assert account.version == version
    assert account.board()["balance"] == usd("100150.00")


def test_the_same_instant_written_with_another_offset_is_the_same_trade() -> None:
    account = open_account()
    close(account, "t1", "2026-01-05T10:00:00Z", "100.00", volume="1")
    account.collect_events()
    again = close(account, "t1", "2026-01-05T11:00:00+01:00", "100.00", volume="1.00")
    assert again.duplicate is True
    assert account.collect_events() == []


@pytest.mark.parametrize(
    "changes",
    [
        {"profit": "100.01"},
        {"closed_at": "2026-01-05T10:00:01Z"},
        {"commission": "-1.00"},
        {"swap": "0.01"},
        {"volume": "2"},
    ],
)
def test_the_same_trade_id_with_other_content_is_a_conflict(changes: dict[str, str]) -> None:
    account = open_account()
    close(account, "t1", "2026-01-05T10:00:00Z", "100.00")
    account.collect_events()
    fields: dict[str, Any] = {"closed_at": "2026-01-05T10:00:00Z", "profit": "100.00"}
    fields.update(changes)
    closed_at, profit = fields.pop("closed_at"), fields.pop("profit")
    with pytest.raises(Conflict) as caught:
        close(account, "t1", closed_at, profit, opened_at="2026-01-05T09:00:00Z", **fields)
    assert caught.value.code == "trade_id_conflict"
    assert caught.value.details["trade_id"] == "t1"
    assert account.collect_events() == []
    assert account.board()["balance"] == usd("100100.00")


def test_the_same_trade_id_with_another_side_or_symbol_is_a_conflict() -> None:
    account = open_account()
    account.close_trade(trade("t1", "2026-01-05T10:00:00Z", "100.00"))
    data = trade_data("t1", "2026-01-05T10:00:00Z", "100.00")
    data["side"] = "sell"
    with pytest.raises(Conflict):
        account.close_trade(Trade.parse(data, "USD"))
    data = trade_data("t1", "2026-01-05T10:00:00Z", "100.00")
    data["symbol"] = "GBPUSD"
    with pytest.raises(Conflict):
        account.close_trade(Trade.parse(data, "USD"))


def test_a_duplicate_of_a_trade_recorded_after_a_breach_is_still_a_duplicate() -> None:
    account = open_account()
    close(account, "t1", "2026-01-05T10:00:00Z", "-6000.00")
    close(account, "t2", "2026-01-06T10:00:00Z", "10.00")
    account.collect_events()
    assert close(account, "t2", "2026-01-06T10:00:00Z", "10.00").duplicate is True
    assert account.collect_events() == []


def test_a_repeated_equity_mark_records_nothing() -> None:
    account = open_account()
    assert mark(account, "101000.00", "2026-01-05T10:00:00Z") is True
    account.collect_events()
    assert mark(account, "101000.00", "2026-01-05T10:00:00Z") is False
    assert account.collect_events() == []


def test_an_older_mark_sent_again_after_newer_ones_is_a_duplicate_not_a_breach() -> None:
    """A bridge resends an old mark after newer ones (its first reply was lost): the mark
    was judged when it arrived, against that day's floors; judged again against a later
    day's floors it would breach an account that never crossed one."""
    account = open_account()
    assert mark(account, "96000.00", "2026-01-06T10:00:00+01:00") is True  # floor 95,000
    assert mark(account, "101000.00", "2026-01-06T12:00:00+01:00") is True
    close(account, "t1", "2026-01-06T13:00:00+01:00", "2000.00")
    close(account, "t2", "2026-01-07T10:00:00+01:00", "10.00")  # day floor now 97,000
    account.collect_events()
    version = account.version
    # The same mark again, written with another offset: the same instant, the same equity.
    assert mark(account, "96000.00", "2026-01-06T09:00:00Z") is False
    assert mark(account, "96000", "2026-01-06T10:00:00+01:00") is False
    assert account.collect_events() == []
    assert account.version == version
    assert account.status == "active"
    assert account.breach is None
    # Another equity at the same instant is another mark (a correction), judged as such.
    assert mark(account, "96000.01", "2026-01-06T10:00:00+01:00") is True
    assert account.status == "breached"


def test_the_marks_an_account_recorded_survive_a_snapshot_and_a_copy() -> None:
    from copy import deepcopy

    from domain.account import AccountSnapshot

    account = open_account()
    mark(account, "99000.00", "2026-01-05T10:00:00Z")
    mark(account, "99500.00", "2026-01-05T11:00:00Z")
    snapshot = AccountSnapshot.take(account)
    restored = snapshot.mutate(None)
    assert restored.marks == account.marks
    assert mark(restored, "99000.00", "2026-01-05T10:00:00Z") is False
    copy = deepcopy(account)
    assert mark(copy, "98000.00", "2026-01-05T12:00:00Z") is True
    assert mark(account, "98000.00", "2026-01-05T12:00:00Z") is True  # the copy's is its own
    assert replay(account).marks == account.marks


def test_a_trade_taking_the_balance_to_10_to_the_14_is_refused_and_changes_nothing() -> None:
    # Each trade is at most 12 digits; summed, they could pass 10^14 units, which a payout's
    # profit in minor units could not be stored as (the projections' 64 bits). (Losses that
    # far breach long before: a breached account records every trade.)
    account = open_account()
    refused = 100  # 100000.00 + 100 x 999999999999.00 >= 10^14
    largest = Decimal("999999999999.00")
    for number in range(1, refused):
        close(account, f"t{number}", "2026-01-05T10:00:00Z", str(largest))
    balance, version = account.board()["balance"], account.version
    assert balance == Decimal("100000.00") + (refused - 1) * largest
    assert abs(balance) < 10**14 <= abs(balance + largest)
    with pytest.raises(InvalidInput) as caught:
        close(account, f"t{refused}", "2026-01-05T10:00:00Z", str(largest))
    assert caught.value.code == "balance_out_of_range"
    assert caught.value.details == {
        "trade_id": f"t{refused}",
        "balance": str(balance + largest),
    }
    assert (account.board()["balance"], account.version) == (balance, version)
    assert f"t{refused}" not in account.trades
    close(account, f"t{refused}", "2026-01-05T10:00:00Z", "1.00")  # the same id, a sane amount
    assert account.board()["balance"] == balance + Decimal("1.00")


def test_a_breached_account_records_trades_past_10_to_the_14() -> None:
    """DESIGN: after a breach "later trades are still recorded (they happened)"; such an
    account pays nothing out, so the balance bound is not its concern."""
    account = open_account()
    close(account, "t0", "2026-01-05T10:00:00Z", "-20000.00")  # under both floors
    assert account.board()["status"] == "breached"
    for number in range(1, 102):
        close(account, f"t{number}", "2026-01-05T11:00:00Z", "999999999999.00")
    assert account.board()["balance"] > Decimal(10) ** 14
    assert account.board()["status"] == "breached"


def test_a_trade_in_another_currency_is_refused() -> None:
    account = open_account()
    eur_trade = Trade.parse(trade_data("t1", "2026-01-05T10:00:00Z", "100.00"), "EUR")
    with pytest.raises(InvalidInput) as caught:
        account.close_trade(eur_trade)
    assert caught.value.code == "currency_mismatch"
    with pytest.raises(InvalidInput):
        account.mark_equity(Money.of("1.00", "EUR"), parse_instant("2026-01-05T10:00:00Z"))


# Replay ----------------------------------------------------------------------------------


def assert_same_account(rebuilt: TradingAccount, account: TradingAccount) -> None:
    assert rebuilt.id == account.id
    assert rebuilt.version == account.version
    assert rebuilt.board() == account.board()
    assert rebuilt.state == account.state
    assert rebuilt.status == account.status
    assert rebuilt.breach == account.breach
    assert rebuilt.trades == account.trades
    assert rebuilt.stage == account.stage


def test_replaying_the_events_rebuilds_a_breached_account_exactly() -> None:
    account = open_account(daily_loss_base="balance_or_equity", max_loss_mode="trailing")
    close(account, "t1", "2026-01-05T10:00:00Z", "3000.00", commission="-5.00")
    mark(account, "104000.00", "2026-01-05T20:00:00Z")
    close(account, "t2", "2026-01-05T23:30:00Z", "-2000.00", swap="-1.10")
    close(account, "late", "2026-01-02T10:00:00Z", "250.00")
    mark(account, "103000.00", "2026-01-06T11:00:00Z")
    close(account, "t3", "2026-01-06T12:00:00Z", "-4000.00")  # below max(..., 104000) - 5000
    close(account, "t4", "2026-01-07T12:00:00Z", "10.00")
    assert account.board()["status"] == "breached"
    events = account.collect_events()

    rebuilt: Any = None
    for event in events:
        rebuilt = event.mutate(rebuilt)
    assert_same_account(rebuilt, account)


def test_replaying_the_events_rebuilds_a_passed_account_exactly() -> None:
    account = open_account(max_loss_mode="trailing_eod", consistency_max_day_pct="50")
    close(account, "t1", "2026-01-05T10:00:00Z", "5000.00")
    close(account, "t2", "2026-01-06T10:00:00Z", "3000.00")
    mark(account, "108500.00", "2026-01-06T11:00:00Z")
    close(account, "t3", "2026-01-07T10:00:00Z", "1000.00")
    close(account, "t4", "2026-01-08T10:00:00Z", "1000.00")  # 110000.00, 5000 <= 50 % of 10000
    close(account, "t5", "2026-01-09T10:00:00Z", "-500.00")
    assert account.board()["status"] == "passed"
    rebuilt = replay(account)
    assert_same_account(rebuilt, account)
    assert rebuilt.passed_at == parse_instant("2026-01-08T10:00:00Z")
    assert rebuilt.next_account_id == str(NEXT_ID)


def test_every_event_records_the_board_that_replay_shows_after_it() -> None:
    account = open_account()
    close(account, "t1", "2026-01-05T10:00:00Z", "1000.00")
    mark(account, "100500.00", "2026-01-05T12:00:00Z")
    close(account, "t2", "2026-01-06T10:00:00Z", "-6000.01")  # 94999.99 < 96000.00
    close(account, "t3", "2026-01-07T10:00:00Z", "20.00")
    rebuilt: Any = None
    for event in account.collect_events():
        rebuilt = event.mutate(rebuilt)
        assert rebuilt.board() == event.board  # type: ignore[attr-defined]


def test_a_replayed_account_still_recognises_duplicates_and_conflicts() -> None:
    account = open_account()
    close(account, "t1", "2026-01-05T10:00:00Z", "100.00")
    rebuilt = replay(account)
    assert close(rebuilt, "t1", "2026-01-05T10:00:00Z", "100.00").duplicate is True
    with pytest.raises(Conflict):
        close(rebuilt, "t1", "2026-01-05T10:00:00Z", "100.01")


# Trade validation ------------------------------------------------------------------------


def parse_with(**changes: Any) -> Trade:
    data = trade_data("t1", "2026-01-05T10:00:00Z", "100.00", opened_at="2026-01-05T09:00:00Z")
    data.update(changes)
    return Trade.parse(data, "USD")


def refusal_code(**changes: Any) -> str:
    with pytest.raises(InvalidInput) as caught:
        parse_with(**changes)
    return caught.value.code


def test_a_valid_trade_parses_into_exact_values() -> None:
    parsed = parse_with(commission="-3.50", swap="-0.25", volume="0.10")
    assert parsed.trade_id == "t1"
    assert parsed.symbol == "EURUSD"
    assert parsed.side == "buy"
    assert parsed.volume == Decimal("0.10")
    assert parsed.opened_at == datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
    assert parsed.closed_at == datetime(2026, 1, 5, 10, 0, tzinfo=UTC)
    assert parsed.net == Money(Decimal("96.25"), "USD")  # 100.00 - 3.50 - 0.25


def test_commission_and_swap_default_to_zero() -> None:
    data = trade_data("t1", "2026-01-05T10:00:00Z", "100.00")
    del data["commission"], data["swap"]
    assert Trade.parse(data, "USD").net == Money(Decimal("100.00"), "USD")


@pytest.mark.parametrize("field", ["opened_at", "closed_at"])
@pytest.mark.parametrize(
    "value", ["2026-01-05T10:00:00", "2026-01-05 10:00:00", "2026-01-05", "yesterday", ""]
)
def test_a_naive_or_malformed_timestamp_is_refused(field: str, value: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_with(**{field: value})
    assert caught.value.code == "invalid_timestamp"
    assert caught.value.details == {"field": field}


@pytest.mark.parametrize("value", [1767607200, 1767607200.0, None])
def test_a_number_timestamp_is_refused(value: object) -> None:
    assert refusal_code(closed_at=value) == "invalid_timestamp"


def test_an_impossible_date_is_refused() -> None:
    assert refusal_code(closed_at="2026-02-30T10:00:00Z") == "invalid_timestamp"


@pytest.mark.parametrize(
    "closed_at",
    [
        "0001-01-01T00:00:00Z",
        "9999-12-31T23:00:00Z",
        # An offset that pushes the instant off the calendar (OverflowError in UTC).
        "0001-01-01T00:00:00+01:00",
        "9999-12-31T23:59:59-05:00",
    ],
)
def test_a_trade_at_the_edge_of_the_calendar_is_refused_not_crashed_on(closed_at: str) -> None:
    account = open_account()
    account.collect_events()
    with pytest.raises(InvalidInput):
        account.close_trade(Trade.parse(trade_data("t1", closed_at, "1.00"), "USD"))
    assert account.collect_events() == []


def test_an_equity_mark_at_the_edge_of_the_calendar_is_refused_not_crashed_on() -> None:
    account = open_account()
    account.collect_events()
    mark_data = {"equity": "1.00", "at": "0001-01-01T00:00:00Z"}
    with pytest.raises(InvalidInput):
        account.mark_equity(*parse_equity_mark(mark_data, "USD"))
    assert account.collect_events() == []


def test_a_timestamp_with_an_offset_or_nanoseconds_is_accepted() -> None:
    parsed = parse_with(
        opened_at="2026-01-05T10:00:00.123456789+01:00",
        closed_at="2026-01-05T10:00:00.5Z",
    )
    assert parsed.opened_at == datetime(2026, 1, 5, 9, 0, 0, 123456, tzinfo=UTC)
    assert parsed.closed_at == datetime(2026, 1, 5, 10, 0, 0, 500000, tzinfo=UTC)


@pytest.mark.parametrize("offset", ["+00:60", "-01:75", "+05:99"])
def test_offset_minutes_past_59_are_refused(offset: str) -> None:
    """RFC 3339's offset minutes run 00-59 (Python would read +00:60 as +01:00)."""
    assert refusal_code(closed_at=f"2026-01-05T10:00:00{offset}") == "invalid_timestamp"


@pytest.mark.parametrize("volume", ["0", "0.00", "-1", 0, -1.5, "", "lots", True, None])
def test_a_zero_negative_or_missing_volume_is_refused(volume: object) -> None:
    assert refusal_code(volume=volume) == "invalid_volume"


def test_a_volume_may_be_a_json_number_and_stays_exact() -> None:
    assert parse_with(volume=0.1).volume == Decimal("0.1")
    assert parse_with(volume=3).volume == Decimal("3")


@pytest.mark.parametrize("symbol", ["EUR USD", "", "!!", " EURUSD", "-EURUSD", None, 42])
def test_a_symbol_in_an_unknown_format_is_refused(symbol: object) -> None:
    assert refusal_code(symbol=symbol) == "invalid_symbol"


@pytest.mark.parametrize("symbol", ["EURUSD", "XAUUSD.r", "US30.cash", "BTC/USD", "NQ#", "6E-M"])
def test_platform_symbols_are_accepted(symbol: str) -> None:
    assert parse_with(symbol=symbol).symbol == symbol


def test_closed_before_opened_is_refused() -> None:
    code = refusal_code(opened_at="2026-01-05T10:00:00Z", closed_at="2026-01-05T09:59:59Z")
    assert code == "closed_before_opened"


def test_closed_at_the_instant_it_opened_is_accepted() -> None:
    parsed = parse_with(opened_at="2026-01-05T10:00:00Z", closed_at="2026-01-05T11:00:00+01:00")
    assert parsed.opened_at == parsed.closed_at


@pytest.mark.parametrize("field", ["profit", "commission", "swap"])
@pytest.mark.parametrize("value", [100, -3, 100.5, 0.0])
def test_money_as_a_json_number_is_refused(field: str, value: object) -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_with(**{field: value})
    assert caught.value.code == "invalid_decimal"
    assert caught.value.details == {"field": field}


def test_a_missing_profit_is_refused() -> None:
    data = trade_data("t1", "2026-01-05T10:00:00Z", "100.00")
    del data["profit"]
    with pytest.raises(InvalidInput) as caught:
        Trade.parse(data, "USD")
    assert caught.value.code == "invalid_decimal"


def test_a_profit_finer_than_a_cent_is_refused() -> None:
    assert refusal_code(profit="100.005") == "too_many_decimal_places"


def test_an_unknown_field_is_refused() -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_with(comment="scalp", magic=42)
    assert caught.value.code == "unknown_field"
    assert caught.value.details == {"fields": ["comment", "magic"]}


@pytest.mark.parametrize("side", ["sideways", "", None, 1, "b"])
def test_a_side_other_than_buy_or_sell_is_refused(side: object) -> None:
    assert refusal_code(side=side) == "invalid_side"


@pytest.mark.parametrize(
    ("side", "read"), [("BUY", "buy"), (" Sell ", "sell"), ("long", "buy"), ("SHORT", "sell")]
)
def test_a_side_is_read_in_any_case_and_long_or_short_name_buy_or_sell(
    side: str, read: str
) -> None:
    assert parse_with(side=side).side == read


@pytest.mark.parametrize("trade_id", ["", " t1", "t 1", None, -7, True, 1.5, "x" * 129])
def test_a_malformed_trade_id_is_refused(trade_id: object) -> None:
    assert refusal_code(trade_id=trade_id) == "invalid_trade_id"


def test_a_ticket_number_written_as_an_integer_is_the_same_trade_as_its_text() -> None:
    assert parse_with(trade_id=123456).trade_id == "123456"
    assert parse_with(trade_id=123456).fingerprint == parse_with(trade_id="123456").fingerprint


def test_a_trade_that_is_not_an_object_is_refused() -> None:
    with pytest.raises(InvalidInput):
        Trade.parse(["t1"], "USD")


def test_an_equity_mark_refuses_a_json_number_and_a_naive_time() -> None:
    assert parse_equity_mark({"equity": "101000.00", "at": "2026-01-05T10:00:00Z"}, "USD") == (
        Money(Decimal("101000.00"), "USD"),
        datetime(2026, 1, 5, 10, 0, tzinfo=UTC),
    )
    with pytest.raises(InvalidInput):
        parse_equity_mark({"equity": 101000, "at": "2026-01-05T10:00:00Z"}, "USD")
    with pytest.raises(InvalidInput):
        parse_equity_mark({"equity": "101000.00", "at": "2026-01-05T10:00:00"}, "USD")
    with pytest.raises(InvalidInput):
        parse_equity_mark({"equity": "1.00", "at": "2026-01-05T10:00:00Z", "x": 1}, "USD")


def test_next_account_ids_are_derived_from_the_account_id() -> None:
    assert next_account_id(ACCOUNT_ID) == NEXT_ID
    assert isinstance(NEXT_ID, UUID)
    assert next_account_id(NEXT_ID) != NEXT_ID


def test_accounts_pinned_to_one_program_version_share_its_parsed_definition() -> None:
    """Loading a cold account parses the program its Opened event carries; an equal
    definition of the same id and version is parsed once, anything else on its own."""
    from domain.account import _pinned_program

    data = ProgramDefinition.parse(program_dict()).to_dict()
    first = _pinned_program(data, 1)
    assert _pinned_program(copy.deepcopy(data), 1) is first
    assert _pinned_program(data, 2) is not first  # another version
    altered = copy.deepcopy(data)
    altered["name"] = "Edited behind the program's back"
    assert _pinned_program(altered, 1).name == "Edited behind the program's back"
    assert replay(open_account()).program == open_account().program
