"""Helpers shared by the integration and end-to-end tests: bodies, tokens, backends.

Every helper makes unique ids (uuid4 hex suffixes) so that tests can share one database per
module and per backend without seeing each other's programs, traders or accounts.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest

from api.app import create_app
from api.auth import mint_token
from ledger.config import Settings

SECRET = "integration-test-secret-" + "k" * 40

# The backends every parametrised test runs on. The PostgreSQL one carries the `postgres`
# mark so that `-m "not postgres"` leaves it out and the conftest summary counts it.
BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]

# DESIGN.md: "Account state fields".
STATE_FIELDS = (
    "account_id", "trader_id", "program_id", "stage", "status", "currency",
    "initial_balance", "balance", "equity", "high_water_mark", "day_start_balance",
    "daily_loss_floor", "max_loss_floor", "trading_days", "profit", "breach", "passed_at",
    "next_account_id", "version",
)  # fmt: skip

CLASSIC_PROGRAM: dict[str, Any] = {
    "program_id": "classic-100k",
    "name": "Classic 100k",
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


def uid(prefix: str = "") -> str:
    return f"{prefix}{uuid4().hex[:12]}"


def program_body(program_id: str | None = None, **changes: Any) -> dict[str, Any]:
    """The DESIGN.md example program under a unique id, with top-level `changes`."""
    body = copy.deepcopy(CLASSIC_PROGRAM)
    body["program_id"] = program_id or uid("prog-")
    body.update(changes)
    return body


def purchase_body(
    program_id: str,
    *,
    purchase_id: str | None = None,
    trader_id: str | None = None,
    method: str = "manual",
    amount: str = "540.00",
    currency: str = "USD",
) -> dict[str, Any]:
    return {
        "purchase_id": purchase_id or uid("pur-"),
        "trader_id": trader_id or uid("trader-"),
        "program_id": program_id,
        "method": method,
        "amount": amount,
        "currency": currency,
    }


def trade_body(
    trade_id: str | None = None,
    *,
    day: str = "2026-03-02",
    profit: str = "100.00",
    commission: str = "0.00",
    swap: str = "0.00",
    closed: str = "10:00:00",
    **changes: Any,
) -> dict[str, Any]:
    """A closed EURUSD trade opened at 09:00Z and closed at `closed` (UTC) on `day`."""
    body: dict[str, Any] = {
        "trade_id": trade_id or uid("T-"),
        "symbol": "EURUSD",
        "side": "buy",
        "volume": "1.5",
        "opened_at": f"{day}T09:00:00Z",
        "closed_at": f"{day}T{closed}Z",
        "profit": profit,
        "commission": commission,
        "swap": swap,
    }
    body.update(changes)
    return body


def token(roles: list[str], *, sub: str = "tester", trader_id: str | None = None) -> str:
    return mint_token(SECRET, sub=sub, roles=roles, trader_id=trader_id)


def auth(*roles: str, sub: str = "tester", trader_id: str | None = None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token(list(roles), sub=sub, trader_id=trader_id)}"}


def sqlite_file_url(path: Path) -> str:
    """`sqlite:///` + an absolute path (so four slashes)."""
    return f"sqlite:///{path.resolve()}"


def backend_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The database URL for a fixture parametrised with BACKENDS."""
    if request.param == "postgres":
        url: str = request.getfixturevalue("postgres_url")
        return url
    return sqlite_file_url(tmp_path_factory.mktemp("db") / "propledger.db")


def make_app(url: str, *, projections: str = "inprocess") -> Any:
    return create_app(
        Settings(
            propledger_database_url=url,
            propledger_jwt_secret=SECRET,
            propledger_projections=projections,  # type: ignore[arg-type]
        )
    )


def assert_error(response: Any, status: int, code: str | None = None) -> dict[str, Any]:
    """The reply is `status` with the error envelope; returns the inner error object."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}, body
    error = body["error"]
    assert set(error) == {"code", "message", "details"}, error
    assert isinstance(error["code"], str)
    assert error["code"]
    assert isinstance(error["message"], str)
    assert error["message"]
    if code is not None:
        assert error["code"] == code, error
    return dict(error)
