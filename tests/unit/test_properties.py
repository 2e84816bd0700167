"""Properties over generated inputs (bounded and derandomised, so every run is the same).

Amounts are generated as integer cents and written as decimal strings by hand (`cents`);
the expected numbers are integer-cent sums, never computed by the code under test.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from hypothesis import given, settings
from hypothesis import strategies as st

from domain.account import TradingAccount
from domain.money import Money
from tests.unit.builders import open_account, trade

SETTINGS = settings(max_examples=100, deadline=None, derandomize=True, database=None)
# Three weeks from here span the Prague spring-forward night (2026-03-29).
START = datetime(2026, 3, 16, 0, 0, tzinfo=UTC)
PRAGUE = ZoneInfo("Europe/Prague")
B0_CENTS = 10_000_000


def cents(value: int) -> str:
    """Integer cents as a decimal string: -12345 -> "-123.45"."""
    sign = "-" if value < 0 else ""
    return f"{sign}{abs(value) // 100}.{abs(value) % 100:02d}"


def in_usd(value: int) -> Decimal:
    return Decimal(value).scaleb(-2)


def instant(minutes: int) -> str:
    return (START + timedelta(minutes=minutes)).isoformat().replace("+00:00", "Z")


def prague_date(minutes: int) -> date:
    return (START + timedelta(minutes=minutes)).astimezone(PRAGUE).date()


# A trade as (profit, commission, swap) in cents and its closing minute after START; spread
# over three weeks so new days, a DST change and (shuffled) late arrivals all occur.
trade_inputs = st.tuples(
    st.integers(-600_000, 600_000),
    st.integers(-5_000, 0),
    st.integers(-2_000, 2_000),
    st.integers(0, 21 * 24 * 60),
)
trade_lists = st.lists(trade_inputs, min_size=1, max_size=25)
stages = st.sampled_from(["phase-1", "phase-2", "funded"])
modes = st.sampled_from(["static", "trailing", "trailing_eod"])
bases = st.sampled_from(["balance", "balance_or_equity"])


def arrange(trades: list[tuple[int, int, int, int]], in_order: bool) -> list[Any]:
    return sorted(trades, key=lambda t: t[3]) if in_order else trades


def feed(account: TradingAccount, trades: list[tuple[int, int, int, int]]) -> None:
    for index, (profit, commission, swap, minute) in enumerate(trades):
        outcome = account.close_trade(
            trade(
                f"t{index}",
                instant(minute),
                cents(profit),
                commission=cents(commission),
                swap=cents(swap),
            )
        )
        assert outcome.duplicate is False


@SETTINGS
@given(trades=trade_lists, in_order=st.booleans(), stage=stages, mode=modes, base=bases)
def test_the_balance_is_b0_plus_the_sum_of_net_pnl_for_any_trades(
    trades: list[tuple[int, int, int, int]], in_order: bool, stage: str, mode: str, base: str
) -> None:
    account = open_account(stage, max_loss_mode=mode, daily_loss_base=base)
    trades = arrange(trades, in_order)
    feed(account, trades)
    net_cents = sum(profit + commission + swap for profit, commission, swap, _ in trades)
    board = account.board()
    assert board["balance"] == in_usd(B0_CENTS + net_cents)
    assert board["profit"] == in_usd(net_cents)
    assert board["trading_days"] == len({prague_date(minute) for *_, minute in trades})
    assert board["max_loss_floor"] <= in_usd(B0_CENTS)


@SETTINGS
@given(trades=trade_lists, in_order=st.booleans())
def test_the_first_breach_is_where_a_hand_model_of_the_floors_says(
    trades: list[tuple[int, int, int, int]], in_order: bool
) -> None:
    """A model in integer cents, from DESIGN.md's definitions: the day start balance is B0
    plus the net of every trade recorded so far that closed before the current day (the day
    of the newest trade) began, late ones included; a breach is the first balance, after
    a trade's arrival, strictly below max(daily, static), naming the higher floor and
    `max_loss` on a tie."""
    trades = arrange(trades, in_order)
    account = open_account("funded")
    feed(account, trades)

    balance, current_day = B0_CENTS, None
    seen: list[tuple[object, int]] = []  # (day, net) of the trades recorded so far
    expected = None
    for profit, commission, swap, minute in trades:
        day = prague_date(minute)
        if current_day is None or day > current_day:
            current_day = day
        net = profit + commission + swap
        seen.append((day, net))
        balance += net
        day_start = B0_CENTS + sum(n for d, n in seen if d < current_day)
        daily_floor, static_floor = day_start - 500_000, 9_000_000
        if expected is None and balance < max(daily_floor, static_floor):
            if balance < static_floor and static_floor >= daily_floor:
                expected = ("max_loss", balance, static_floor, minute)
            else:
                expected = ("max_daily_loss", balance, daily_floor, minute)

    board = account.board()
    assert board["day_start_balance"] == in_usd(day_start)
    assert board["daily_loss_floor"] == in_usd(day_start - 500_000)
    assert board["current_day"] == str(current_day)
    if expected is None:
        assert board["status"] == "active"
        assert board["breach"] is None
    else:
        rule, value, floor, minute = expected
        assert board["status"] == "breached"
        assert board["breach"]["rule"] == rule
        assert board["breach"]["value"] == in_usd(value)
        assert board["breach"]["floor"] == in_usd(floor)
        assert board["breach"]["at"] == START + timedelta(minutes=minute)


@SETTINGS
@given(trades=trade_lists, mode=modes)
def test_the_max_loss_floor_never_falls(trades: list[tuple[int, int, int, int]], mode: str) -> None:
    account = open_account("funded", max_loss_mode=mode)
    floors = [account.board()["max_loss_floor"]]
    for index, (profit, commission, swap, minute) in enumerate(arrange(trades, True)):
        account.close_trade(
            trade(
                f"t{index}",
                instant(minute),
                cents(profit),
                commission=cents(commission),
                swap=cents(swap),
            )
        )
        floors.append(account.board()["max_loss_floor"])
    assert floors == sorted(floors)
    assert all(in_usd(9_000_000) <= floor <= in_usd(B0_CENTS) for floor in floors)


# Money ---------------------------------------------------------------------------------

amounts = st.integers(-(10**14) + 1, 10**14 - 1)  # up to 12 digits of units


@SETTINGS
@given(x=amounts, y=amounts)
def test_money_addition_and_subtraction_are_exact_in_cents(x: int, y: int) -> None:
    a, b = Money.of(cents(x), "USD"), Money.of(cents(y), "USD")
    assert (a + b).amount == in_usd(x + y)
    assert (a - b).amount == in_usd(x - y)
    assert (a + b - b) == a
    assert a + (-a) == Money.of("0", "USD")
    assert a + b == b + a


@SETTINGS
@given(x=amounts, y=amounts, z=amounts)
def test_money_addition_is_associative(x: int, y: int, z: int) -> None:
    a, b, c = (Money.of(cents(v), "USD") for v in (x, y, z))
    assert (a + b) + c == a + (b + c)
    assert ((a + b) + c).amount == in_usd(x + y + z)


@SETTINGS
@given(x=st.integers(-(10**12) + 1, 10**12 - 1), y=st.integers(-(10**12) + 1, 10**12 - 1))
def test_money_in_zero_and_three_decimal_currencies_is_exact_too(x: int, y: int) -> None:
    yen = Money.of(str(x), "JPY") + Money.of(str(y), "JPY")
    assert yen.amount == Decimal(x + y)
    dinar = Money.from_minor_units(x, "KWD") + Money.from_minor_units(y, "KWD")
    assert dinar.amount == Decimal(x + y).scaleb(-3)
    assert dinar.minor_units == x + y


@SETTINGS
@given(x=amounts)
def test_money_round_trips_through_minor_units(x: int) -> None:
    money = Money.of(cents(x), "USD")
    assert money.minor_units == x
    assert Money.from_minor_units(x, "USD") == money
    assert str(money.amount) == cents(x)


# Replay and duplicates -----------------------------------------------------------------

inputs = st.lists(
    st.one_of(
        trade_inputs.map(lambda t: ("trade", *t)),
        st.tuples(
            st.just("mark"), st.integers(8_500_000, 11_500_000), st.integers(0, 21 * 24 * 60)
        ),
    ),
    min_size=1,
    max_size=30,
)


def feed_inputs(account: TradingAccount, items: list[tuple[Any, ...]]) -> None:
    for index, item in enumerate(items):
        if item[0] == "trade":
            _, profit, commission, swap, minute = item
            account.close_trade(
                trade(
                    f"t{index}",
                    instant(minute),
                    cents(profit),
                    commission=cents(commission),
                    swap=cents(swap),
                )
            )
        else:
            _, equity, minute = item
            account.mark_equity(Money.of(cents(equity), "USD"), START + timedelta(minutes=minute))


@SETTINGS
@given(items=inputs, stage=stages, mode=modes, base=bases)
def test_replaying_the_events_rebuilds_the_same_account(
    items: list[tuple[Any, ...]], stage: str, mode: str, base: str
) -> None:
    account = open_account(stage, max_loss_mode=mode, daily_loss_base=base, min_trading_days=2)
    feed_inputs(account, items)
    rebuilt: Any = None
    for event in account.collect_events():
        rebuilt = event.mutate(rebuilt)
    assert isinstance(rebuilt, TradingAccount)
    assert rebuilt.version == account.version
    assert rebuilt.board() == account.board()
    assert rebuilt.state == account.state
    assert rebuilt.trades == account.trades


@SETTINGS
@given(trades=trade_lists, data=st.data())
def test_a_duplicate_copy_of_any_trade_changes_nothing(
    trades: list[tuple[int, int, int, int]], data: st.DataObject
) -> None:
    original = data.draw(st.integers(0, len(trades) - 1), label="original")
    position = data.draw(st.integers(original + 1, len(trades)), label="position")

    clean = open_account(min_trading_days=2)
    feed(clean, trades)

    account = open_account(min_trading_days=2)
    feed(account, trades[:position])
    profit, commission, swap, minute = trades[original]
    copy = trade(
        f"t{original}",
        instant(minute),
        cents(profit),
        commission=cents(commission),
        swap=cents(swap),
    )
    version_before = account.version
    board_before = account.board()
    outcome = account.close_trade(copy)
    assert outcome.duplicate is True
    assert account.version == version_before
    assert account.board() == board_before
    for index, (p, c, s, m) in enumerate(trades[position:], start=position):
        account.close_trade(
            trade(f"t{index}", instant(m), cents(p), commission=cents(c), swap=cents(s))
        )

    assert account.version == clean.version
    assert account.board() == clean.board()
    assert account.state == clean.state
