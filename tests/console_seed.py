"""Small firms for the console's tests, built through the HTTP API (an httpx client or a
TestClient): a one-phase program whose funded accounts may be paid at once, an account
funded with a history of trades, payouts requested by a named user.

Every id is fresh (uuid4), so tests share one database without seeing each other.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Protocol

from tests.support import auth, purchase_body, uid

# A funded account's trades: a walk with ups and downs over several days that ends in
# profit and never comes near a floor (5 % daily, 10 % overall of 100,000.00).
WALK = ("180.00", "-120.00", "95.50", "-60.25", "150.00", "-210.00", "240.00", "35.75")


class Client(Protocol):
    def post(self, url: str, **kwargs: Any) -> Any: ...
    def get(self, url: str, **kwargs: Any) -> Any: ...


def program_body(program_id: str | None = None) -> dict[str, Any]:
    """One phase (target 1 %, no minimum of days); payouts at once, 80 %, minimum 50."""
    return {
        "program_id": program_id or uid("console-prog-"),
        "name": "Console one phase 100k",
        "currency": "USD",
        "initial_balance": "100000.00",
        "fee": {"amount": "540.00", "currency": "USD"},
        "day_timezone": "UTC",
        "day_start": "00:00",
        "phases": [
            {
                "name": "challenge",
                "profit_target_pct": "1",
                "max_daily_loss_pct": "5",
                "max_loss_pct": "10",
                "max_loss_mode": "static",
                "min_trading_days": 0,
                "consistency_max_day_pct": None,
            }
        ],
        "funded": {
            "max_daily_loss_pct": "5",
            "max_loss_pct": "10",
            "max_loss_mode": "static",
            "profit_split_pct": "80",
            "split_scaling": [],
            "first_payout_after_days": 0,
            "payout_interval_days": 0,
            "min_payout": "50.00",
            "refund_fee_with_first_payout": True,
            "consistency_max_day_pct": None,
        },
    }


def _ok(response: Any, *statuses: int) -> dict[str, Any]:
    assert response.status_code in (statuses or (200, 201)), response.text
    body: dict[str, Any] = response.json()
    return body


def define_program(client: Client) -> str:
    body = program_body()
    _ok(client.post("/v1/programs", json=body, headers=auth("admin", sub="admin-1")), 201)
    return str(body["program_id"])


def trade(
    client: Client, account_id: str, profit: str, closed_at: str, trade_id: str | None = None
) -> dict[str, Any]:
    body = {
        "trade_id": trade_id or uid("T-"),
        "symbol": "EURUSD",
        "side": "buy",
        "volume": "1.0",
        "opened_at": closed_at,
        "closed_at": closed_at,
        "profit": profit,
        "commission": "0.00",
        "swap": "0.00",
    }
    return _ok(
        client.post(
            f"/v1/accounts/{account_id}/trades", json=body, headers=auth("platform", sub="bridge")
        ),
        201,
    )


def open_account(client: Client, program_id: str, trader_id: str | None = None) -> str:
    bought = client.post(
        "/v1/purchases",
        json=purchase_body(program_id, trader_id=trader_id or uid("trader-")),
        headers=auth("finance", sub="finance-seed"),
    )
    return str(_ok(bought, 201)["account_id"])


def funded_account(
    client: Client, program_id: str, *, trades: int = 24, trader_id: str | None = None
) -> dict[str, Any]:
    """An account that passed its phase, and its funded account with `trades` trades of
    WALK over consecutive minutes, spread over days from 2026-03-03."""
    phase_id = open_account(client, program_id, trader_id)
    passed = trade(client, phase_id, "1000.00", "2026-03-02T10:00:00Z")
    funded_id = str(passed["next_account_id"])
    state: dict[str, Any] = {}
    for index in range(trades):
        day = 3 + index // 8
        minute = index % 8
        state = trade(
            client, funded_id, WALK[index % len(WALK)], f"2026-03-{day:02d}T10:{minute:02d}:00Z"
        )
    return {"program_id": program_id, "phase_id": phase_id, "account_id": funded_id, **state}


def expected_profit(trades: int) -> Decimal:
    return sum((Decimal(WALK[i % len(WALK)]) for i in range(trades)), Decimal(0))


def request_payout(client: Client, account_id: str, sub: str) -> dict[str, Any]:
    response = client.post(
        f"/v1/accounts/{account_id}/payouts", headers=auth("finance", "approver", sub=sub)
    )
    return _ok(response, 201)


def payout(client: Client, payout_id: str) -> dict[str, Any]:
    return _ok(client.get(f"/v1/payouts/{payout_id}", headers=auth("auditor", sub="aud")), 200)


def now_text() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
