"""The rules engine: pure functions from (state, rules, input) to the next state.

Nothing here reads a clock or stores anything. `TradingAccount` calls these functions
both when it decides (a command) and when it replays (applying a recorded event), so a
replay reproduces every number exactly (with the rules of the code that replays: when they
change, a migration drops the account snapshots, which cache their result).

Definitions are DESIGN.md's. The choices DESIGN.md leaves open, made here:
- A late trade (closed before the current day began) moves the balance at arrival and is
  judged then against the current floors; it also moves the day start balance ("the
  balance after every trade that closed before the current day began"), so it is not the
  current day's loss. Its P&L belongs to its own trading day for the trading-day count and
  for consistency.
- `balance_or_equity`: a late mark taken before the day began, after the one the day
  started from, becomes the day's equity base. It is not a trade or mark of its own, so
  the balance is not judged again against the moved floor until the next input.
- Loss allowances (percent of B0) are rounded down and target gains up to the minor unit:
  the shown floors and targets then give exactly the verdicts of exact arithmetic.
- Every equity mark is judged against the current floors, even one older than the newest
  mark; only the newest mark (by `at`) can become the account's equity.
- `trailing_eod` raises its high-water mark with the balance at each day end, at the moment
  the next day's first trade or mark arrives.
- Consistency holds while there is no net profit (other conditions refuse then); with a
  profit, the best day must be at most `consistency_max_day_pct` % of the total, compared
  exactly (no rounding).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import date, datetime, time
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from typing import Any
from zoneinfo import ZoneInfo

from domain.days import trading_day
from domain.money import Money, exact_difference, exact_percent, exact_product
from domain.program import StageRules

ACTIVE = "active"
PASSED = "passed"
BREACHED = "breached"
SUSPENDED = "suspended"
CLOSED = "closed"

MAX_DAILY_LOSS = "max_daily_loss"
MAX_LOSS = "max_loss"


@dataclass(frozen=True, slots=True)
class Calendar:
    """Where days begin for an account: its program's zone and local day start."""

    zone: ZoneInfo
    day_start: time

    def day_of(self, at: datetime) -> date:
        return trading_day(at, self.zone, self.day_start)


@dataclass(frozen=True, slots=True)
class Breach:
    rule: str
    at: datetime
    value: Money
    floor: Money

    def to_dict(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "at": self.at,
            "value": self.value.amount,
            "floor": self.floor.amount,
        }


@dataclass(frozen=True, slots=True)
class AccountState:
    """Everything the rules need to judge an account's next trade or mark."""

    initial_balance: Money
    balance: Money
    withdrawn: Money
    high_water_mark: Money
    max_loss_floor: Money
    day_start_balance: Money
    day_start_equity: Money | None
    current_day: date | None
    last_trade_at: datetime | None
    last_mark_value: Money | None
    last_mark_at: datetime | None
    # Net P&L per trading day (the day each trade closed on).
    daily_pnl: dict[date, Decimal] = field(default_factory=dict)
    # When the mark behind `day_start_equity` was taken (None: no mark, or a snapshot taken
    # before this was kept); a late mark taken after it, still before the day, replaces it.
    day_start_equity_at: datetime | None = None

    @property
    def currency(self) -> str:
        return self.initial_balance.currency

    @property
    def equity(self) -> Money:
        """The newest equity mark when it is newer than the newest trade, else the balance."""
        if self.last_mark_value is None or self.last_mark_at is None:
            return self.balance
        if self.last_trade_at is None or self.last_mark_at > self.last_trade_at:
            return self.last_mark_value
        return self.balance

    @property
    def profit(self) -> Money:
        return self.balance - self.initial_balance

    @property
    def trading_days(self) -> int:
        return len(self.daily_pnl)

    @property
    def net_pnl_total(self) -> Decimal:
        return sum(self.daily_pnl.values(), Decimal(0))

    def to_dict(self) -> dict[str, Any]:
        """Primitives only (Decimal, datetime, str): what a snapshot stores."""

        def amount(money: Money | None) -> Decimal | None:
            return None if money is None else money.amount

        return {
            "initial_balance": self.initial_balance.amount,
            "balance": self.balance.amount,
            "withdrawn": self.withdrawn.amount,
            "high_water_mark": self.high_water_mark.amount,
            "max_loss_floor": self.max_loss_floor.amount,
            "day_start_balance": self.day_start_balance.amount,
            "day_start_equity": amount(self.day_start_equity),
            "current_day": None if self.current_day is None else self.current_day.isoformat(),
            "last_trade_at": self.last_trade_at,
            "last_mark_value": amount(self.last_mark_value),
            "last_mark_at": self.last_mark_at,
            "daily_pnl": [[day.isoformat(), pnl] for day, pnl in sorted(self.daily_pnl.items())],
            "day_start_equity_at": self.day_start_equity_at,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], currency: str) -> AccountState:
        def money(value: Any) -> Money | None:
            return None if value is None else Money(Decimal(value), currency)

        def required(value: Any) -> Money:
            return Money(Decimal(value), currency)

        current_day = data["current_day"]
        return cls(
            initial_balance=required(data["initial_balance"]),
            balance=required(data["balance"]),
            withdrawn=required(data["withdrawn"]),
            high_water_mark=required(data["high_water_mark"]),
            max_loss_floor=required(data["max_loss_floor"]),
            day_start_balance=required(data["day_start_balance"]),
            day_start_equity=money(data["day_start_equity"]),
            current_day=None if current_day is None else date.fromisoformat(current_day),
            last_trade_at=data["last_trade_at"],
            last_mark_value=money(data["last_mark_value"]),
            last_mark_at=data["last_mark_at"],
            daily_pnl={date.fromisoformat(day): Decimal(pnl) for day, pnl in data["daily_pnl"]},
            day_start_equity_at=data.get("day_start_equity_at"),
        )

    def daily_loss_base(self, rules: StageRules) -> Money:
        base = self.day_start_balance
        if rules.daily_loss_base == "balance_or_equity" and self.day_start_equity is not None:
            base = base.max(self.day_start_equity)
        return base

    def daily_loss_floor(self, rules: StageRules) -> Money:
        return self.daily_loss_base(rules) - loss_allowance(
            self.initial_balance, rules.max_daily_loss_pct
        )


def opening_state(initial_balance: Money, rules: StageRules) -> AccountState:
    zero = Money.zero(initial_balance.currency)
    return AccountState(
        initial_balance=initial_balance,
        balance=initial_balance,
        withdrawn=zero,
        high_water_mark=initial_balance,
        max_loss_floor=_max_loss_floor(initial_balance, initial_balance, None, rules),
        day_start_balance=initial_balance,
        day_start_equity=None,
        current_day=None,
        last_trade_at=None,
        last_mark_value=None,
        last_mark_at=None,
    )


def loss_allowance(initial_balance: Money, pct: Decimal) -> Money:
    """`pct` of B0 a floor sits below its base, rounded down to the minor unit: the floor
    is then the exact one rounded up, and a balance at the minor unit is strictly below
    the shown floor exactly when it is strictly below B0's exact percentage (JPY 1,000,015
    at 5 %: 50,000.75 allowed, 50,000 shown; a loss of 50,001 breaches)."""
    return initial_balance.percent(pct, ROUND_FLOOR)


def _max_loss_floor(
    initial_balance: Money, high_water_mark: Money, previous: Money | None, rules: StageRules
) -> Money:
    allowance = loss_allowance(initial_balance, rules.max_loss_pct)
    if rules.max_loss_mode == "static":
        return initial_balance - allowance
    # Trailing floors never fall, and stop rising once they reach the initial balance.
    floor = high_water_mark - allowance
    if previous is not None:
        floor = floor.max(previous)
    return floor.min(initial_balance)


def _roll_day(state: AccountState, day: date, rules: StageRules) -> AccountState:
    """Start `day` if it is later than the current day; later inputs of older days don't."""
    if state.current_day is not None and day <= state.current_day:
        return state
    high_water_mark = state.high_water_mark
    if rules.max_loss_mode == "trailing_eod":
        # The balance at the end of the day that just ended.
        high_water_mark = high_water_mark.max(state.balance)
    return replace(
        state,
        current_day=day,
        day_start_balance=state.balance,
        # Every mark seen so far is older than this new day: the newest is "the last
        # equity mark before the day began".
        day_start_equity=state.last_mark_value,
        day_start_equity_at=state.last_mark_at,
        high_water_mark=high_water_mark,
        max_loss_floor=_max_loss_floor(
            state.initial_balance, high_water_mark, state.max_loss_floor, rules
        ),
    )


def after_trade(
    state: AccountState, rules: StageRules, calendar: Calendar, closed_at: datetime, net: Money
) -> AccountState:
    day = calendar.day_of(closed_at)
    state = _roll_day(state, day, rules)
    balance = state.balance + net
    day_start_balance = state.day_start_balance
    if state.current_day is not None and day < state.current_day:
        # A late trade closed before the current day began: the day start balance is the
        # balance after every such trade, so it moves with it, and the trade is judged
        # against the current day without counting as the current day's loss.
        day_start_balance = day_start_balance + net
    daily_pnl = dict(state.daily_pnl)
    daily_pnl[day] = daily_pnl.get(day, Decimal(0)) + net.amount
    high_water_mark = state.high_water_mark
    if rules.max_loss_mode != "trailing_eod":
        high_water_mark = high_water_mark.max(balance)
    last_trade_at = (
        closed_at if state.last_trade_at is None else max(state.last_trade_at, closed_at)
    )
    # Spelt out rather than dataclasses.replace(): the same state, built without the
    # field-by-field introspection that was a sixth of deciding a trade.
    return AccountState(
        initial_balance=state.initial_balance,
        balance=balance,
        withdrawn=state.withdrawn,
        high_water_mark=high_water_mark,
        max_loss_floor=_max_loss_floor(
            state.initial_balance, high_water_mark, state.max_loss_floor, rules
        ),
        day_start_balance=day_start_balance,
        day_start_equity=state.day_start_equity,
        current_day=state.current_day,
        last_trade_at=last_trade_at,
        last_mark_value=state.last_mark_value,
        last_mark_at=state.last_mark_at,
        daily_pnl=daily_pnl,
        day_start_equity_at=state.day_start_equity_at,
    )


def after_equity_mark(
    state: AccountState, rules: StageRules, calendar: Calendar, value: Money, at: datetime
) -> AccountState:
    day = calendar.day_of(at)
    state = _roll_day(state, day, rules)
    if state.last_mark_at is None or at >= state.last_mark_at:
        state = replace(state, last_mark_value=value, last_mark_at=at)
    if state.current_day is not None and day < state.current_day:
        # A late mark taken before the current day began, at or after the one the day
        # started from, is now "the last equity mark before the day began": one at the same
        # instant is a correction of it, as it would have been had it come before the day
        # rolled. (An older snapshot does not say when its mark was taken: then the day
        # keeps its mark.)
        known = state.day_start_equity_at
        if (known is None and state.day_start_equity is None) or (
            known is not None and at >= known
        ):
            state = replace(state, day_start_equity=value, day_start_equity_at=at)
    high_water_mark = state.high_water_mark
    if rules.max_loss_mode != "trailing_eod":
        high_water_mark = high_water_mark.max(value)
    return replace(
        state,
        high_water_mark=high_water_mark,
        max_loss_floor=_max_loss_floor(
            state.initial_balance, high_water_mark, state.max_loss_floor, rules
        ),
    )


def after_withdrawal(state: AccountState, amount: Money) -> AccountState:
    """An approved payout takes `amount` out of the balance; the floors stay as they are."""
    return replace(state, balance=state.balance - amount, withdrawn=state.withdrawn + amount)


def find_breach(
    state: AccountState, rules: StageRules, value: Money, at: datetime
) -> Breach | None:
    """The breach when `value` is strictly below a floor: the higher floor's rule wins,
    `max_loss` when the two floors are equal."""
    daily_floor = state.daily_loss_floor(rules)
    max_floor = state.max_loss_floor
    below_daily = value < daily_floor
    below_max = value < max_floor
    if below_max and (
        not below_daily
        or max_floor > daily_floor
        or (max_floor == daily_floor and not _daily_floor_exactly_higher(state, rules))
    ):
        return Breach(MAX_LOSS, at, value, max_floor)
    if below_daily:
        return Breach(MAX_DAILY_LOSS, at, value, daily_floor)
    return None


def _daily_floor_exactly_higher(state: AccountState, rules: StageRules) -> bool:
    """Whether the daily floor is above the max-loss floor before rounding: the shown
    floors are the exact ones rounded up to the minor unit, so two that differ by less
    than one show the same, and the higher exact one is the floor fallen through first."""
    initial = state.initial_balance.amount
    daily = exact_difference(
        state.daily_loss_base(rules).amount, exact_percent(initial, rules.max_daily_loss_pct)
    )
    max_allowance = exact_percent(initial, rules.max_loss_pct)
    if rules.max_loss_mode == "static":
        max_loss = exact_difference(initial, max_allowance)
    else:  # trailing: from the high-water mark, locked at the initial balance
        max_loss = min(initial, exact_difference(state.high_water_mark.amount, max_allowance))
    return daily > max_loss


def consistency_holds(state: AccountState, max_day_pct: Decimal | None) -> bool:
    if max_day_pct is None:
        return True
    total = state.net_pnl_total
    if total <= 0:
        return True
    best_day = max(state.daily_pnl.values())
    return exact_product(best_day, 100) <= exact_product(total, max_day_pct)


def profit_target(state: AccountState, rules: StageRules) -> Money | None:
    if rules.profit_target_pct is None:
        return None
    # The gain rounded up: a balance at the minor unit reaches the shown target exactly
    # when it reaches B0 x (1 + pct).
    gain = state.initial_balance.percent(rules.profit_target_pct, ROUND_CEILING)
    return state.initial_balance + gain


def has_passed(state: AccountState, rules: StageRules) -> bool:
    """An evaluation phase passes when target, trading days and consistency all hold."""
    target = profit_target(state, rules)
    return (
        target is not None
        and state.balance >= target
        and state.trading_days >= rules.min_trading_days
        and consistency_holds(state, rules.consistency_max_day_pct)
    )
