"""The data a benchmark run creates: one program, its accounts, and closed trades.

Trades never breach nor pass: profits alternate +5.25 / -5.00 (a slow drift far below the
10% target), every trade of an account closes one second after the one before, all on one
trading day, so the rules are evaluated on every trade but never end an account.
"""

from __future__ import annotations

import copy
import json
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import uuid4

PROGRAM_ID = "bench-100k"
SECRET = "bench-secret-" + "b" * 40  # a JWT key for the benchmark's own server only

PROGRAM: dict[str, Any] = {
    "program_id": PROGRAM_ID,
    "name": "Bench 100k",
    "currency": "USD",
    "initial_balance": "100000.00",
    "fee": {"amount": "540.00", "currency": "USD"},
    "day_timezone": "Europe/Prague",
    "day_start": "00:00",
    "phases": [
        {
            "name": "challenge",
            "profit_target_pct": "10",
            "max_daily_loss_pct": "5",
            "daily_loss_base": "balance",
            "max_loss_pct": "10",
            "max_loss_mode": "static",
            "min_trading_days": 4,
            "consistency_max_day_pct": None,
        },
        {
            "name": "verification",
            "profit_target_pct": "5",
            "max_daily_loss_pct": "5",
            "max_loss_pct": "10",
            "max_loss_mode": "static",
            "min_trading_days": 4,
            "consistency_max_day_pct": None,
        },
    ],
    "funded": {
        "max_daily_loss_pct": "5",
        "max_loss_pct": "10",
        "max_loss_mode": "static",
        "profit_split_pct": "80",
        "split_scaling": [{"after_payouts": 4, "profit_split_pct": "90"}],
        "first_payout_after_days": 14,
        "payout_interval_days": 14,
        "min_payout": "50.00",
        "refund_fee_with_first_payout": True,
        "consistency_max_day_pct": None,
    },
}

# 2026-03-02 00:30 in Prague: every trade of a run (even 10,000 on one account, a second
# apart) closes on that same trading day.
_FIRST_CLOSE = datetime(2026, 3, 1, 23, 30, tzinfo=UTC)


def program_body() -> dict[str, Any]:
    return copy.deepcopy(PROGRAM)


def purchase_body(index: int, run: str) -> dict[str, Any]:
    return {
        "purchase_id": f"bench-{run}-{index}",
        "trader_id": f"bench-trader-{run}-{index}",
        "program_id": PROGRAM_ID,
        "method": "manual",
        "amount": "540.00",
        "currency": "USD",
    }


def _stamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


class Trades:
    """Makes trade bodies with unique ids and a per-account clock."""

    def __init__(self) -> None:
        self.run = uuid4().hex[:8]
        self._count: dict[str, int] = defaultdict(int)
        self._serial = 0

    def trade(self, account_id: str) -> dict[str, Any]:
        n = self._count[account_id]
        self._count[account_id] = n + 1
        self._serial += 1
        closed = _FIRST_CLOSE + timedelta(seconds=n)
        return {
            "trade_id": f"T-{self.run}-{self._serial}",
            "symbol": "EURUSD",
            "side": "buy" if n % 2 == 0 else "sell",
            "volume": "1.5",
            "opened_at": _stamp(closed - timedelta(minutes=5)),
            "closed_at": _stamp(closed),
            "profit": "5.25" if n % 2 == 0 else "-5.00",
            "commission": "-0.10",
            "swap": "0.00",
        }

    def batch_item(self, account_id: str) -> dict[str, Any]:
        return {"account_id": account_id, **self.trade(account_id)}

    def batch_body(self, account_ids: list[str], size: int, offset: int = 0) -> bytes:
        """One `POST /v1/trades:batch` body: `size` trades spread round-robin over accounts."""
        count = len(account_ids)
        items = [self.batch_item(account_ids[(offset + i) % count]) for i in range(size)]
        return json.dumps({"trades": items}).encode()
