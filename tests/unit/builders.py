"""Builders for the unit tests of trading accounts: a 100k USD program with 5 % daily and
10 % maximum loss (daily floor = day start balance - 5000.00, static floor 90000.00), an
account opened on it, and trades parsed the way the API parses them."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

from domain.account import TradeOutcome, TradingAccount
from domain.money import Money
from domain.program import ProgramDefinition
from domain.trade import Trade

ACCOUNT_ID = UUID("00000000-0000-4000-8000-000000000001")


def program_dict(
    *,
    max_loss_mode: str = "static",
    daily_loss_base: str = "balance",
    min_trading_days: int = 4,
    consistency_max_day_pct: str | None = None,
    day_timezone: str = "Europe/Prague",
    day_start: str = "00:00",
    phases: int = 2,
) -> dict[str, Any]:
    phase = {
        "profit_target_pct": "10",
        "max_daily_loss_pct": "5",
        "daily_loss_base": daily_loss_base,
        "max_loss_pct": "10",
        "max_loss_mode": max_loss_mode,
        "min_trading_days": min_trading_days,
        "consistency_max_day_pct": consistency_max_day_pct,
    }
    names = ["challenge", "verification", "third"][:phases]
    return {
        "program_id": "test-100k",
        "name": "Test 100k",
        "currency": "USD",
        "initial_balance": "100000.00",
        "fee": {"amount": "540.00", "currency": "USD"},
        "day_timezone": day_timezone,
        "day_start": day_start,
        "phases": [{"name": name, **phase} for name in names],
        "funded": {
            "max_daily_loss_pct": "5",
            "max_loss_pct": "10",
            "max_loss_mode": max_loss_mode,
            "daily_loss_base": daily_loss_base,
            "profit_split_pct": "80",
        },
    }


def open_account(stage: str = "phase-1", **program_options: Any) -> TradingAccount:
    program = ProgramDefinition.parse(program_dict(**program_options))
    return TradingAccount.open(
        account_id=ACCOUNT_ID,
        trader_id="trader-1",
        program=program,
        program_version=1,
        stage=stage,
    )


def trade_data(
    trade_id: str,
    closed_at: str,
    profit: str,
    *,
    commission: str = "0.00",
    swap: str = "0.00",
    opened_at: str | None = None,
    volume: Any = "1",
) -> dict[str, Any]:
    return {
        "trade_id": trade_id,
        "symbol": "EURUSD",
        "side": "buy",
        "volume": volume,
        "opened_at": opened_at or closed_at,
        "closed_at": closed_at,
        "profit": profit,
        "commission": commission,
        "swap": swap,
    }


def trade(trade_id: str, closed_at: str, profit: str, **fields: Any) -> Trade:
    return Trade.parse(trade_data(trade_id, closed_at, profit, **fields), "USD")


def close(
    account: TradingAccount, trade_id: str, closed_at: str, profit: str, **fields: Any
) -> TradeOutcome:
    return account.close_trade(trade(trade_id, closed_at, profit, **fields))


def mark(account: TradingAccount, equity: str, at: str) -> bool:
    return account.mark_equity(Money.of(equity, "USD"), parse_instant(at))


def parse_instant(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def usd(text: str) -> Decimal:
    """A board amount as written by hand: `usd("95000.00")`."""
    return Decimal(text)


def replay(account: TradingAccount) -> TradingAccount:
    """The account rebuilt from its pending events alone."""
    rebuilt: Any = None
    for event in account.collect_events():
        rebuilt = event.mutate(rebuilt)
    assert isinstance(rebuilt, TradingAccount)
    return rebuilt
