"""The rules as a trading account applies them: daily loss on the program's day, floors and
which rule a breach names, trailing and end-of-day trailing floors, the daily-loss base,
equity, consistency and late trades.

Every account here has B0 = 100000.00 USD, a 5 % daily loss (daily floor = day start
balance - 5000.00) and a 10 % maximum loss (static floor 90000.00), days at Prague midnight.
All numbers are computed by hand in the comments.
"""

from __future__ import annotations

import dataclasses
from datetime import date
from decimal import Decimal
from uuid import uuid4

import pytest

from domain.account import TradingAccount
from domain.program import ProgramDefinition
from domain.rules import BREACHED, PASSED, consistency_holds, opening_state
from domain.trade import Trade
from tests.unit.builders import (
    close,
    mark,
    open_account,
    parse_instant,
    program_dict,
    replay,
    trade_data,
    usd,
)

# Daily loss is judged on the Prague day ---------------------------------------------------


def test_daily_loss_resets_at_prague_midnight_not_utc_in_winter() -> None:
    account = open_account()
    close(account, "t1", "2026-01-05T10:00:00Z", "-4000.00")  # 96000.00, floor 95000.00
    # 23:30Z on 01-05 is 00:30 CET on 01-06: a new day starting from 96000.00.
    close(account, "t2", "2026-01-05T23:30:00Z", "-4000.00")  # 92000.00
    board = account.board()
    assert board["status"] == "active"
    assert board["current_day"] == "2026-01-06"
    assert board["balance"] == usd("92000.00")
    assert board["day_start_balance"] == usd("96000.00")
    assert board["daily_loss_floor"] == usd("91000.00")
    assert board["trading_days"] == 2


def test_daily_loss_resets_at_prague_midnight_not_utc_in_summer() -> None:
    account = open_account()
    close(account, "t1", "2026-07-06T10:00:00Z", "-4000.00")
    # 22:30Z on 07-06 is 00:30 CEST on 07-07.
    close(account, "t2", "2026-07-06T22:30:00Z", "-4000.00")
    board = account.board()
    assert board["status"] == "active"
    assert board["current_day"] == "2026-07-07"
    assert board["day_start_balance"] == usd("96000.00")
    assert board["daily_loss_floor"] == usd("91000.00")


# (a morning trade, the last second of that Prague day, the first second of the next, label)
PRAGUE_MIDNIGHTS = [
    pytest.param(
        "2026-01-05T10:00:00Z", "2026-01-05T22:59:59Z", "2026-01-05T23:00:00Z", "2026-01-06",
        id="winter-cet",
    ),
    pytest.param(
        "2026-07-06T10:00:00Z", "2026-07-06T21:59:59Z", "2026-07-06T22:00:00Z", "2026-07-07",
        id="summer-cest",
    ),
    pytest.param(
        "2026-03-28T10:00:00Z", "2026-03-28T22:59:59Z", "2026-03-28T23:00:00Z", "2026-03-29",
        id="eve-of-spring-forward",
    ),
    pytest.param(
        "2026-03-29T10:00:00Z", "2026-03-29T21:59:59Z", "2026-03-29T22:00:00Z", "2026-03-30",
        id="day-of-spring-forward",
    ),
    pytest.param(
        "2026-10-24T10:00:00Z", "2026-10-24T21:59:59Z", "2026-10-24T22:00:00Z", "2026-10-25",
        id="eve-of-fall-back",
    ),
    pytest.param(
        "2026-10-25T10:00:00Z", "2026-10-25T22:59:59Z", "2026-10-25T23:00:00Z", "2026-10-26",
        id="day-of-fall-back",
    ),
]  # fmt: skip


@pytest.mark.parametrize(("morning", "last_second", "midnight", "next_day"), PRAGUE_MIDNIGHTS)
def test_a_loss_in_the_last_second_of_the_prague_day_counts_towards_that_day(
    morning: str, last_second: str, midnight: str, next_day: str
) -> None:
    account = open_account()
    close(account, "t1", morning, "-4000.00")  # 96000.00, floor 95000.00
    close(account, "t2", last_second, "-1000.01")  # 94999.99 on the same day
    board = account.board()
    assert board["status"] == "breached"
    assert board["breach"]["rule"] == "max_daily_loss"
    assert board["breach"]["floor"] == usd("95000.00")


@pytest.mark.parametrize(("morning", "last_second", "midnight", "next_day"), PRAGUE_MIDNIGHTS)
def test_a_loss_at_prague_midnight_starts_a_new_day_from_the_previous_close(
    morning: str, last_second: str, midnight: str, next_day: str
) -> None:
    account = open_account()
    close(account, "t1", morning, "-4000.00")  # 96000.00
    close(account, "t2", midnight, "-1000.01")  # 94999.99, new day floor 91000.00
    board = account.board()
    assert board["status"] == "active"
    assert board["current_day"] == next_day
    assert board["day_start_balance"] == usd("96000.00")
    assert board["daily_loss_floor"] == usd("91000.00")


def test_a_new_york_1700_program_judges_monday_evening_as_tuesday() -> None:
    account = open_account(day_timezone="America/New_York", day_start="17:00")
    # Monday 2026-01-05 12:00 EST = 17:00Z: Monday's session.
    close(account, "t1", "2026-01-05T17:00:00Z", "-4000.00")  # 96000.00
    # Monday 18:00 EST = 23:00Z: Tuesday's session, starting from 96000.00.
    close(account, "t2", "2026-01-05T23:00:00Z", "-4000.00")  # 92000.00
    board = account.board()
    assert board["status"] == "active"
    assert board["current_day"] == "2026-01-06"
    assert board["daily_loss_floor"] == usd("91000.00")


# Exactly on a floor is no breach; one cent past is ---------------------------------------


def test_a_balance_exactly_on_the_daily_floor_is_no_breach_and_one_cent_past_is() -> None:
    account = open_account()
    close(account, "t1", "2026-01-05T10:00:00Z", "-5000.00")
    board = account.board()
    assert board["status"] == "active"
    assert board["balance"] == usd("95000.00")
    assert board["daily_loss_floor"] == usd("95000.00")
    assert board["breach"] is None

    close(account, "t2", "2026-01-05T11:00:00Z", "-0.01")
    board = account.board()
    assert board["status"] == "breached"
    breach = board["breach"]
    assert breach["rule"] == "max_daily_loss"
    assert str(breach["floor"]) == "95000.00"
    assert str(breach["value"]) == "94999.99"
    assert breach["at"] == parse_instant("2026-01-05T11:00:00Z")
    assert account.breach is not None
    assert account.breach.rule == "max_daily_loss"


def test_commission_and_swap_count_towards_the_loss() -> None:
    account = open_account()
    # net = -4990.00 - 7.50 - 2.50 = -5000.00: exactly on the floor.
    close(account, "t1", "2026-01-05T10:00:00Z", "-4990.00", commission="-7.50", swap="-2.50")
    assert account.board()["status"] == "active"
    assert account.board()["balance"] == usd("95000.00")
    # net = +0.50 - 0.51 + 0.00 = -0.01: one cent through.
    close(account, "t2", "2026-01-05T11:00:00Z", "0.50", commission="-0.51")
    assert account.board()["status"] == "breached"
    assert account.board()["breach"]["value"] == usd("94999.99")


def test_an_equity_mark_exactly_on_the_daily_floor_is_no_breach_and_one_cent_below_is() -> None:
    account = open_account()
    assert mark(account, "95000.00", "2026-01-05T10:00:00Z")
    assert account.board()["status"] == "active"
    assert account.board()["equity"] == usd("95000.00")
    assert mark(account, "94999.99", "2026-01-05T10:05:00Z")
    board = account.board()
    assert board["status"] == "breached"
    assert board["breach"]["rule"] == "max_daily_loss"
    assert board["breach"]["value"] == usd("94999.99")
    assert board["breach"]["floor"] == usd("95000.00")
    assert board["balance"] == usd("100000.00")  # a mark moves no balance


def test_a_balance_exactly_on_the_static_max_loss_floor_is_no_breach() -> None:
    account = open_account()
    close(account, "t1", "2026-01-05T10:00:00Z", "-5000.00")  # 95000.00
    close(account, "t2", "2026-01-06T10:00:00Z", "-5000.00")  # 90000.00: both floors 90000
    board = account.board()
    assert board["status"] == "active"
    assert board["max_loss_floor"] == usd("90000.00")
    assert board["daily_loss_floor"] == usd("90000.00")


# Which rule a breach names ---------------------------------------------------------------


def test_crossing_both_floors_names_the_daily_rule_when_its_floor_is_higher() -> None:
    account = open_account()
    close(account, "t1", "2026-01-05T10:00:00Z", "-4000.00")  # 96000.00
    # 01-06: daily floor 96000 - 5000 = 91000.00 > static 90000.00; 96000 - 6500 = 89500.
    close(account, "t2", "2026-01-06T10:00:00Z", "-6500.00")
    breach = account.board()["breach"]
    assert breach["rule"] == "max_daily_loss"
    assert breach["floor"] == usd("91000.00")
    assert breach["value"] == usd("89500.00")


def test_crossing_both_floors_names_max_loss_when_its_floor_is_higher() -> None:
    account = open_account()
    close(account, "t1", "2026-01-05T10:00:00Z", "-4000.00")  # 96000.00
    close(account, "t2", "2026-01-06T10:00:00Z", "-4000.00")  # 92000.00 (floor 91000.00)
    # 01-07: daily floor 92000 - 5000 = 87000.00 < static 90000.00; 92000 - 5500 = 86500.
    close(account, "t3", "2026-01-07T10:00:00Z", "-5500.00")
    breach = account.board()["breach"]
    assert breach["rule"] == "max_loss"
    assert breach["floor"] == usd("90000.00")
    assert breach["value"] == usd("86500.00")


def test_crossing_both_floors_names_max_loss_when_the_floors_are_equal() -> None:
    account = open_account()
    close(account, "t1", "2026-01-05T10:00:00Z", "-5000.00")  # 95000.00, on the daily floor
    # 01-06: daily floor 95000 - 5000 = 90000.00 == static 90000.00.
    close(account, "t2", "2026-01-06T10:00:00Z", "-5000.01")  # 89999.99
    board = account.board()
    assert board["daily_loss_floor"] == usd("90000.00")
    assert board["max_loss_floor"] == usd("90000.00")
    assert board["breach"]["rule"] == "max_loss"
    assert board["breach"]["floor"] == usd("90000.00")
    assert board["breach"]["value"] == usd("89999.99")


def test_an_equity_mark_through_equal_floors_names_max_loss() -> None:
    account = open_account()
    close(account, "t1", "2026-01-05T10:00:00Z", "-5000.00")  # 95000.00
    mark(account, "89999.99", "2026-01-06T09:00:00Z")  # both floors 90000.00 on 01-06
    assert account.board()["breach"]["rule"] == "max_loss"


@pytest.mark.parametrize(
    ("daily_pct", "max_pct", "rule"),
    [("9.999996", "9.999999", "max_daily_loss"), ("9.999999", "9.999996", "max_loss")],
)
def test_floors_shown_equal_are_told_apart_by_their_exact_values(
    daily_pct: str, max_pct: str, rule: str
) -> None:
    """Exact floors 90,000.004 and 90,000.001 both show as 90,000.01; the breach names the
    one fallen through first, the exactly higher (until 2026-12-07 the rounded ones were
    compared, found equal, and max_loss named either way)."""
    data = program_dict()
    data["phases"][0].update(max_daily_loss_pct=daily_pct, max_loss_pct=max_pct)
    account = TradingAccount.open(
        account_id=uuid4(),
        trader_id="trader-1",
        program=ProgramDefinition.parse(data),
        program_version=1,
        stage="phase-1",
    )
    close(account, "t1", "2026-01-05T10:00:00Z", "-10000.00")  # 90000.00
    board = account.board()
    assert board["daily_loss_floor"] == board["max_loss_floor"] == usd("90000.01")
    assert board["breach"]["rule"] == rule
    assert board["breach"]["floor"] == usd("90000.01")


def test_falling_through_the_max_loss_floor_only_names_max_loss() -> None:
    account = open_account()
    close(account, "t1", "2026-01-05T10:00:00Z", "-4000.00")  # 96000.00
    close(account, "t2", "2026-01-06T10:00:00Z", "-4000.00")  # 92000.00
    # 01-07: daily floor 87000.00 not crossed; static 90000.00 crossed by 89500.00.
    close(account, "t3", "2026-01-07T10:00:00Z", "-2500.00")
    breach = account.board()["breach"]
    assert breach["rule"] == "max_loss"
    assert breach["value"] == usd("89500.00")


# Trailing max loss -----------------------------------------------------------------------


def test_a_trailing_floor_rises_with_balance_and_equity_marks_and_never_falls() -> None:
    account = open_account("funded", max_loss_mode="trailing")
    assert account.board()["max_loss_floor"] == usd("90000.00")

    close(account, "t1", "2026-01-05T10:00:00Z", "3000.00")  # balance 103000.00
    assert account.board()["high_water_mark"] == usd("103000.00")
    assert account.board()["max_loss_floor"] == usd("93000.00")

    mark(account, "105500.00", "2026-01-05T12:00:00Z")  # a higher equity mark counts at once
    assert account.board()["high_water_mark"] == usd("105500.00")
    assert account.board()["max_loss_floor"] == usd("95500.00")

    close(account, "t2", "2026-01-05T14:00:00Z", "-1000.00")  # balance 102000.00
    board = account.board()
    assert board["balance"] == usd("102000.00")
    assert board["high_water_mark"] == usd("105500.00")
    assert board["max_loss_floor"] == usd("95500.00")  # never falls

    mark(account, "101000.00", "2026-01-05T15:00:00Z")  # a lower mark moves nothing
    assert account.board()["max_loss_floor"] == usd("95500.00")
    assert account.board()["status"] == "active"


def test_a_trailing_floor_locks_at_the_initial_balance_and_breaches_there() -> None:
    account = open_account("funded", max_loss_mode="trailing")
    close(account, "t1", "2026-01-05T10:00:00Z", "9000.00")  # 109000.00, floor 99000.00
    assert account.board()["max_loss_floor"] == usd("99000.00")
    close(account, "t2", "2026-01-06T10:00:00Z", "2000.00")  # 111000.00: 101000 -> B0
    assert account.board()["max_loss_floor"] == usd("100000.00")
    close(account, "t3", "2026-01-07T10:00:00Z", "5000.00")  # 116000.00
    board = account.board()
    assert board["high_water_mark"] == usd("116000.00")
    assert board["max_loss_floor"] == usd("100000.00")  # never above B0

    # Down 4000.00 a day, within each day's 5000.00: 112000, 108000, 104000, 100000.
    close(account, "t4", "2026-01-08T10:00:00Z", "-4000.00")
    close(account, "t5", "2026-01-09T10:00:00Z", "-4000.00")
    close(account, "t6", "2026-01-12T10:00:00Z", "-4000.00")
    close(account, "t7", "2026-01-13T10:00:00Z", "-4000.00")
    board = account.board()
    assert board["balance"] == usd("100000.00")
    assert board["status"] == "active"  # exactly on the locked floor
    assert board["max_loss_floor"] == usd("100000.00")

    # 01-13 daily floor is 104000 - 5000 = 99000.00, below the locked 100000.00.
    close(account, "t8", "2026-01-13T11:00:00Z", "-0.01")
    breach = account.board()["breach"]
    assert breach["rule"] == "max_loss"
    assert breach["floor"] == usd("100000.00")
    assert breach["value"] == usd("99999.99")


def test_a_static_floor_ignores_new_highs() -> None:
    account = open_account("funded")
    close(account, "t1", "2026-01-05T10:00:00Z", "8000.00")
    mark(account, "109000.00", "2026-01-05T11:00:00Z")
    board = account.board()
    assert board["high_water_mark"] == usd("109000.00")
    assert board["max_loss_floor"] == usd("90000.00")


def test_trailing_eod_ignores_an_intraday_high_until_the_next_day() -> None:
    account = open_account("funded", max_loss_mode="trailing_eod")
    close(account, "t1", "2026-01-05T10:00:00Z", "6000.00")  # 106000.00 intraday
    mark(account, "107000.00", "2026-01-05T11:00:00Z")  # an even higher intraday mark
    close(account, "t2", "2026-01-05T12:00:00Z", "-3000.00")  # day ends at 103000.00
    board = account.board()
    assert board["high_water_mark"] == usd("100000.00")
    assert board["max_loss_floor"] == usd("90000.00")

    # The next day's first input moves the mark to the previous day's end balance.
    close(account, "t3", "2026-01-06T10:00:00Z", "500.00")  # 103500.00
    board = account.board()
    assert board["high_water_mark"] == usd("103000.00")
    assert board["max_loss_floor"] == usd("93000.00")  # 103000 - 10000, not 106000 - 10000

    close(account, "t4", "2026-01-07T10:00:00Z", "-2000.00")  # 101500.00
    board = account.board()
    assert board["high_water_mark"] == usd("103500.00")
    assert board["max_loss_floor"] == usd("93500.00")

    close(account, "t5", "2026-01-08T10:00:00Z", "0.00")  # day 01-07 ended lower
    board = account.board()
    assert board["high_water_mark"] == usd("103500.00")
    assert board["max_loss_floor"] == usd("93500.00")  # never falls


def test_trailing_eod_moves_on_the_next_days_first_equity_mark_too() -> None:
    account = open_account("funded", max_loss_mode="trailing_eod")
    close(account, "t1", "2026-01-05T10:00:00Z", "4000.00")  # day ends at 104000.00
    # 23:30Z is 00:30 CET on 01-06: the next day has begun.
    mark(account, "104200.00", "2026-01-05T23:30:00Z")
    board = account.board()
    assert board["high_water_mark"] == usd("104000.00")
    assert board["max_loss_floor"] == usd("94000.00")


def test_trailing_eod_locks_at_the_initial_balance() -> None:
    account = open_account("funded", max_loss_mode="trailing_eod")
    close(account, "t1", "2026-01-05T10:00:00Z", "4000.00")  # 104000.00
    close(account, "t2", "2026-01-06T10:00:00Z", "4000.00")  # floor 94000; 108000.00
    close(account, "t3", "2026-01-07T10:00:00Z", "4000.00")  # floor 98000; 112000.00
    assert account.board()["max_loss_floor"] == usd("98000.00")
    close(account, "t4", "2026-01-08T10:00:00Z", "0.00")  # 112000 - 10000 = 102000 -> B0
    board = account.board()
    assert board["high_water_mark"] == usd("112000.00")
    assert board["max_loss_floor"] == usd("100000.00")


# Daily loss base -------------------------------------------------------------------------


def test_balance_or_equity_uses_the_last_mark_before_the_day_when_it_is_higher() -> None:
    account = open_account(daily_loss_base="balance_or_equity")
    close(account, "t1", "2026-01-05T10:00:00Z", "1000.00")  # 101000.00
    mark(account, "103000.00", "2026-01-05T15:00:00Z")  # open profit at the day's end
    close(account, "t2", "2026-01-06T10:00:00Z", "-1000.00")  # 100000.00
    board = account.board()
    assert board["day_start_balance"] == usd("101000.00")
    # max(101000.00, 103000.00) - 5000.00
    assert board["daily_loss_floor"] == usd("98000.00")
    assert board["status"] == "active"

    close(account, "t3", "2026-01-06T11:00:00Z", "-2000.01")  # 97999.99
    breach = account.board()["breach"]
    assert breach["rule"] == "max_daily_loss"
    assert breach["floor"] == usd("98000.00")
    assert breach["value"] == usd("97999.99")


def test_the_balance_base_ignores_the_equity_mark_for_the_same_losses() -> None:
    account = open_account(daily_loss_base="balance")
    close(account, "t1", "2026-01-05T10:00:00Z", "1000.00")
    mark(account, "103000.00", "2026-01-05T15:00:00Z")
    close(account, "t2", "2026-01-06T10:00:00Z", "-1000.00")
    close(account, "t3", "2026-01-06T11:00:00Z", "-2000.01")  # 97999.99
    board = account.board()
    assert board["daily_loss_floor"] == usd("96000.00")  # 101000.00 - 5000.00
    assert board["status"] == "active"


def test_balance_or_equity_uses_the_balance_when_the_last_mark_is_lower() -> None:
    account = open_account(daily_loss_base="balance_or_equity")
    close(account, "t1", "2026-01-05T10:00:00Z", "1000.00")  # 101000.00
    mark(account, "100500.00", "2026-01-05T15:00:00Z")
    close(account, "t2", "2026-01-06T10:00:00Z", "0.00")
    assert account.board()["daily_loss_floor"] == usd("96000.00")  # 101000.00 - 5000.00


def test_balance_or_equity_ignores_a_mark_made_during_the_current_day_until_the_next() -> None:
    account = open_account(daily_loss_base="balance_or_equity")
    close(account, "t1", "2026-01-05T10:00:00Z", "0.00")
    mark(account, "104000.00", "2026-01-05T12:00:00Z")  # during 01-05
    assert account.board()["daily_loss_floor"] == usd("95000.00")
    close(account, "t2", "2026-01-06T10:00:00Z", "0.00")  # 01-06: max(100000, 104000)
    assert account.board()["daily_loss_floor"] == usd("99000.00")


@pytest.mark.parametrize("correction_first", [True, False])
def test_a_correction_of_the_mark_the_day_started_from_counts_in_either_order(
    correction_first: bool,
) -> None:
    """The last mark before 03-03 is 104,000.00, corrected to 100,500.00 (the same
    instant, another equity). Sent after the day rolled, the correction was ignored as
    the day's base (floor 99,000.00, and the -1,000.00 trade breached); sent before, it
    was used (95,500.00). The floor is now the same in both orders."""
    account = open_account(daily_loss_base="balance_or_equity")
    mark(account, "104000.00", "2026-03-02T10:00:00Z")
    if correction_first:
        mark(account, "100500.00", "2026-03-02T10:00:00Z")
    close(account, "t1", "2026-03-03T09:00:00Z", "-100.00")  # 03-03 begins: 99900.00
    if not correction_first:
        mark(account, "100500.00", "2026-03-02T10:00:00Z")
    assert account.board()["daily_loss_floor"] == usd("95500.00")  # 100500.00 - 5000.00
    close(account, "t2", "2026-03-03T10:00:00Z", "-1000.00")  # 98900.00
    assert account.board()["status"] == "active"


# Equity ----------------------------------------------------------------------------------


def test_equity_is_the_latest_mark_only_when_it_is_newer_than_the_latest_trade() -> None:
    account = open_account()
    assert account.board()["equity"] == usd("100000.00")  # no mark: the balance
    close(account, "t1", "2026-01-05T10:00:00Z", "1000.00")
    assert account.board()["equity"] == usd("101000.00")
    mark(account, "102500.00", "2026-01-05T11:00:00Z")
    assert account.board()["equity"] == usd("102500.00")
    close(account, "t2", "2026-01-05T12:00:00Z", "0.00")  # a newer trade: back to balance
    assert account.board()["equity"] == usd("101000.00")
    mark(account, "101700.00", "2026-01-05T12:00:00Z")  # same instant: not newer
    assert account.board()["equity"] == usd("101000.00")
    mark(account, "101800.00", "2026-01-05T12:00:01Z")
    assert account.board()["equity"] == usd("101800.00")


def test_an_older_mark_arriving_late_does_not_become_the_equity() -> None:
    account = open_account()
    mark(account, "102500.00", "2026-01-05T11:00:00Z")
    mark(account, "99000.00", "2026-01-05T10:30:00Z")
    board = account.board()
    assert board["equity"] == usd("102500.00")
    assert board["status"] == "active"


def test_an_older_mark_arriving_late_is_still_judged_against_the_floors() -> None:
    account = open_account()
    mark(account, "102500.00", "2026-01-05T11:00:00Z")
    mark(account, "94000.00", "2026-01-05T10:30:00Z")  # below 95000.00
    board = account.board()
    assert board["status"] == "breached"
    assert board["breach"]["rule"] == "max_daily_loss"
    assert board["breach"]["value"] == usd("94000.00")
    assert board["equity"] == usd("102500.00")


def test_a_late_trade_older_than_the_newest_mark_leaves_the_mark_as_equity() -> None:
    account = open_account()
    mark(account, "100800.00", "2026-01-05T13:00:00Z")
    close(account, "t1", "2026-01-05T09:00:00Z", "500.00")
    board = account.board()
    assert board["balance"] == usd("100500.00")
    assert board["equity"] == usd("100800.00")


# Consistency -----------------------------------------------------------------------------


def test_consistency_blocks_a_pass_until_the_best_day_is_at_most_40_percent_of_profit() -> None:
    account = open_account(consistency_max_day_pct="40")
    close(account, "t1", "2026-01-05T10:00:00Z", "6000.00")  # best day: 6000.00
    close(account, "t2", "2026-01-06T10:00:00Z", "2000.00")
    close(account, "t3", "2026-01-07T10:00:00Z", "2000.00")  # 110000.00: target, 3 days
    close(account, "t4", "2026-01-08T10:00:00Z", "1000.00")  # 4 days, total 11000.00
    # 40 % of 11000.00 = 4400.00 < 6000.00
    board = account.board()
    assert board["balance"] == usd("111000.00")
    assert board["trading_days"] == 4
    assert board["status"] == "active"

    close(account, "t5", "2026-01-09T10:00:00Z", "2000.00")  # 40 % of 13000 = 5200 < 6000
    assert account.board()["status"] == "active"

    close(account, "t6", "2026-01-12T10:00:00Z", "1999.99")  # 40 % of 14999.99 = 5999.996
    assert account.board()["status"] == "active"

    # 01-12 now 2000.00: 40 % of 15000.00 = 6000.00, exactly the best day.
    outcome = close(account, "t7", "2026-01-12T11:00:00Z", "0.01")
    assert account.board()["status"] == "passed"
    assert account.board()["balance"] == usd("115000.00")
    assert outcome.opened is not None


def test_consistency_counts_a_day_made_of_several_trades_as_one_day() -> None:
    account = open_account(consistency_max_day_pct="40", min_trading_days=0)
    # 01-05: 3000 + 3000 = 6000.00 in one day; 01-06: 5000.00. Total 11000.00, 40 % = 4400.
    close(account, "t1", "2026-01-05T10:00:00Z", "3000.00")
    close(account, "t2", "2026-01-05T11:00:00Z", "3000.00")
    close(account, "t3", "2026-01-06T10:00:00Z", "5000.00")
    assert account.board()["status"] == "active"
    assert account.board()["trading_days"] == 2


def test_consistency_is_not_required_when_the_program_sets_none() -> None:
    account = open_account(min_trading_days=0)
    close(account, "t1", "2026-01-05T10:00:00Z", "10000.00")  # everything in one day
    assert account.board()["status"] == PASSED


def test_a_late_mark_from_before_the_day_becomes_the_days_equity_base() -> None:
    account = open_account(daily_loss_base="balance_or_equity")
    mark(account, "101000.00", "2026-01-05T09:00:00Z")
    mark(account, "100500.00", "2026-01-06T08:00:00Z")  # 01-06 starts: base 101000.00
    assert account.board()["daily_loss_floor"] == usd("96000.00")
    # Taken on 01-05 after the first mark, reported late: now "the last equity mark
    # before the day began".
    mark(account, "106000.00", "2026-01-05T19:00:00Z")
    assert account.board()["daily_loss_floor"] == usd("101000.00")
    # An even later report of an older mark changes nothing, nor does one from today.
    mark(account, "102000.00", "2026-01-05T12:00:00Z")
    mark(account, "120000.00", "2026-01-06T09:00:00Z")
    assert account.board()["daily_loss_floor"] == usd("101000.00")
    assert account.board()["status"] == "active"
    # The state rebuilt from its events says the same.
    assert replay(account).board()["daily_loss_floor"] == usd("101000.00")


def _odd_account(currency: str, initial: str, fee: str) -> TradingAccount:
    body = program_dict(min_trading_days=0)
    body.update(
        currency=currency, initial_balance=initial, fee={"amount": fee, "currency": currency}
    )
    return TradingAccount.open(
        account_id=uuid4(),
        trader_id="trader-odd",
        program=ProgramDefinition.parse(body),
        program_version=1,
        stage="phase-1",
    )


def _close_in(account: TradingAccount, trade_id: str, closed_at: str, profit: str) -> None:
    data = trade_data(trade_id, closed_at, profit, commission="0", swap="0")
    account.close_trade(Trade.parse(data, account.currency))


def test_floors_are_exact_percentages_of_b0_rounded_up_to_the_minor_unit() -> None:
    """5 % of JPY 1,000,015 is 50,000.75: the exact daily floor is 950,014.25, so 950,014
    is strictly below it. The shown floor is rounded up (950,015), which gives the same
    verdict for every balance at the minor unit."""
    account = _odd_account("JPY", "1000015", "5000")
    board = account.board()
    assert (board["daily_loss_floor"], board["max_loss_floor"]) == (
        Decimal("950015"),  # 1000015 - floor(50000.75)
        Decimal("900014"),  # 1000015 - floor(100001.5)
    )
    _close_in(account, "t1", "2026-01-05T10:00:00Z", "-50000")  # 950015: on the floor
    assert account.board()["status"] == "active"
    _close_in(account, "t2", "2026-01-05T11:00:00Z", "-1")  # 950014 < 950014.25
    breach = account.board()["breach"]
    assert (breach["rule"], breach["value"], breach["floor"]) == (
        "max_daily_loss",
        Decimal("950014"),
        Decimal("950015"),
    )

    kwd = _odd_account("KWD", "12345.671", "50.000")
    _close_in(kwd, "t1", "2026-01-05T10:00:00Z", "-617.284")  # 11728.387 < 11728.38745
    assert kwd.board()["status"] == BREACHED
    assert kwd.board()["breach"]["floor"] == Decimal("11728.388")


def test_the_profit_target_is_b0_times_one_plus_the_percentage_rounded_up() -> None:
    """10 % of JPY 1,000,005 is 100,000.5: the target is 1,100,005.5, so 1,100,005 has not
    reached it and 1,100,006 has."""
    account = _odd_account("JPY", "1000005", "5000")
    _close_in(account, "t1", "2026-01-05T10:00:00Z", "100000")  # 1100005
    assert account.board()["status"] == "active"
    _close_in(account, "t2", "2026-01-05T11:00:00Z", "1")  # 1100006
    assert account.board()["status"] == PASSED


# Late trades -----------------------------------------------------------------------------


def test_a_late_trade_moves_the_day_start_balance_not_the_current_days_loss() -> None:
    account = open_account()
    close(account, "t1", "2026-01-05T10:00:00Z", "1000.00")  # 101000.00
    close(account, "t2", "2026-01-06T10:00:00Z", "-1000.00")  # 100000.00, floor 96000.00
    # Closed on Sunday 01-04, before the current day (01-06) began; applied at arrival.
    # DESIGN.md: the day start balance is the balance after every trade that closed
    # before the current day began: 100000.00 + 1000.00 - 4000.01 = 96999.99.
    close(account, "late", "2026-01-04T10:00:00Z", "-4000.01")  # 95999.99
    board = account.board()
    assert board["current_day"] == "2026-01-06"
    assert board["day_start_balance"] == usd("96999.99")
    assert board["daily_loss_floor"] == usd("91999.99")
    assert board["balance"] == usd("95999.99")
    assert board["status"] == "active"  # today's loss is still t2's 1000.00
    assert board["trading_days"] == 3  # 01-04, 01-05, 01-06
    # Judged against the current day: 4000.00 more lost today is on the floor, a cent
    # more is through it.
    close(account, "t3", "2026-01-06T11:00:00Z", "-4000.00")  # 91999.99: on the floor
    assert account.board()["status"] == "active"
    close(account, "t4", "2026-01-06T12:00:00Z", "-0.01")  # 91999.98
    board = account.board()
    assert board["status"] == BREACHED
    assert board["breach"]["rule"] == "max_daily_loss"
    assert board["breach"]["floor"] == usd("91999.99")


def test_a_late_trade_is_judged_against_the_current_floors() -> None:
    account = open_account()
    close(account, "t1", "2026-01-06T10:00:00Z", "-500.00")  # 99500.00
    # A late loss of 9500.01 from 01-05: the day start moves with it (90500.00, so the
    # daily floor is 85500.00), but the balance 89999.99 is below the static 90000.00.
    close(account, "late", "2026-01-05T10:00:00Z", "-9500.01")
    board = account.board()
    assert board["status"] == BREACHED
    assert board["breach"]["rule"] == "max_loss"
    assert board["breach"]["value"] == usd("89999.99")
    assert board["breach"]["at"] == parse_instant("2026-01-05T10:00:00Z")


def test_a_late_trade_on_its_own_day_counts_as_a_trading_day_without_rolling_back() -> None:
    account = open_account()
    close(account, "t1", "2026-01-07T10:00:00Z", "100.00")
    close(account, "late", "2026-01-05T10:00:00Z", "-3000.00")
    board = account.board()
    assert board["trading_days"] == 2
    assert board["current_day"] == "2026-01-07"
    assert board["balance"] == usd("97100.00")
    assert board["day_start_balance"] == usd("97000.00")  # the late trade closed before 01-07
    assert board["daily_loss_floor"] == usd("92000.00")
    assert board["status"] == "active"


def test_a_late_trade_keeps_its_own_day_for_consistency() -> None:
    account = open_account(consistency_max_day_pct="40", min_trading_days=0)
    close(account, "t1", "2026-01-07T10:00:00Z", "6000.00")
    close(account, "t2", "2026-01-08T10:00:00Z", "4000.00")  # 110000.00: 6000 > 4000
    assert account.board()["status"] == "active"
    # Late: 01-05 and 01-06 get 2500.00 each. Total 15000.00, 40 % = 6000.00 = best day.
    close(account, "late1", "2026-01-05T10:00:00Z", "2500.00")
    assert account.board()["status"] == "active"  # total 12500, 40 % = 5000 < 6000
    close(account, "late2", "2026-01-06T10:00:00Z", "2500.00")
    assert account.board()["status"] == "passed"
    assert account.board()["trading_days"] == 4


def test_the_balance_is_the_initial_balance_plus_every_net_result() -> None:
    account = open_account("funded")
    close(account, "t1", "2026-01-05T10:00:00Z", "1234.56", commission="-7.00", swap="-1.23")
    close(account, "t2", "2026-01-05T11:00:00Z", "-200.00", commission="-3.50", swap="0.45")
    # 100000.00 + (1234.56 - 7.00 - 1.23) + (-200.00 - 3.50 + 0.45) = 101023.28
    board = account.board()
    assert board["balance"] == usd("101023.28")
    assert board["profit"] == usd("1023.28")
    assert account.state.daily_pnl == {
        parse_instant("2026-01-05T10:00:00Z").date(): Decimal("1023.28")
    }


@pytest.mark.parametrize(
    ("max_day_pct", "holds"),
    [("99.00000000010000000000", True), ("99.00000000009999999999", False)],
)
def test_consistency_compares_the_best_day_with_every_digit_of_the_limit(
    max_day_pct: str, holds: bool
) -> None:
    """Best day 99,000,000.01 of a 100,000,000.01 total. At 99.0000000000999...9 % the
    limit is 10^-22 short of it, so the day is over; rounded to the default 28 digits the
    product was exactly the best day, and the check held."""
    program = ProgramDefinition.parse(program_dict())
    state = dataclasses.replace(
        opening_state(program.initial_balance, program.phases[0]),
        daily_pnl={
            date(2026, 3, 2): Decimal("99000000.01"),
            date(2026, 3, 3): Decimal("1000000.00"),
        },
    )
    assert state.net_pnl_total == Decimal("100000000.01")
    assert consistency_holds(state, Decimal(max_day_pct)) is holds
