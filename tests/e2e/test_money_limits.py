"""The largest amounts the ledger takes, end to end, on an SQLite file and on PostgreSQL.

Each trade is at most 12 digits, but a balance sums them: a balance past 10^14 units made a
payout whose profit in minor units (CLF has four places) no 64-bit column could hold, and
the payout projection then stopped for good (`bigint out of range`; SQLite: `Python int too
large to convert to SQLite INTEGER`), taking the reports and the trial balance with it.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from ledger.config import Settings
from tests.e2e.test_payout_http import (
    ADMIN,
    APPROVER,
    FINANCE,
    PLATFORM,
    SECRET,
    approve,
    backend_url,
    phase_account,
    program_body,
    request_payout,
    trade,
    uid,
)

LARGEST = "999999999999.0000"  # 12 digits, CLF's four places


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def client(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TestClient]:
    url = backend_url(request, tmp_path_factory)
    settings = Settings(propledger_database_url=url, propledger_jwt_secret=SECRET)
    with TestClient(create_app(settings)) as started:
        yield started


def clf_program(client: TestClient) -> str:
    body = program_body()
    body.update(currency="CLF", initial_balance="100000.0000")
    body["fee"] = {"amount": "540.0000", "currency": "CLF"}
    body["funded"].update(min_payout="50.0000", profit_split_pct="100", split_scaling=[])
    created = client.post("/v1/programs", json=body, headers=ADMIN)
    assert created.status_code == 201, created.text
    return str(body["program_id"])


def batch(client: TestClient, account_id: str, count: int, profit: str) -> list[dict[str, Any]]:
    closed = datetime(2026, 3, 3, 9, 0, tzinfo=UTC)
    trades = [
        {
            "account_id": account_id,
            "trade_id": uid("big-"),
            "symbol": "EURUSD",
            "side": "buy",
            "volume": "1",
            "opened_at": (closed - timedelta(minutes=1)).isoformat(),
            "closed_at": closed.isoformat(),
            "profit": profit,
        }
        for _ in range(count)
    ]
    answer = client.post("/v1/trades:batch", json={"trades": trades}, headers=PLATFORM)
    assert answer.status_code == 200, answer.text
    results: list[dict[str, Any]] = answer.json()["results"]
    return results


def test_a_balance_stops_below_10_to_the_14_and_its_largest_payout_is_reported(
    client: TestClient,
) -> None:
    trader_id = uid("trader-")
    phase = phase_account(client, clf_program(client), trader_id, "540.0000", "CLF")
    passed = trade(client, phase, "1000.0000")
    funded = str(passed["next_account_id"])

    results = batch(client, funded, 100, LARGEST)
    assert [r["result"] for r in results] == ["created"] * 99 + ["rejected"]
    assert results[-1]["error"]["code"] == "balance_out_of_range"
    state = client.get(f"/v1/accounts/{funded}", headers=FINANCE).json()
    profit = Decimal(LARGEST) * 99
    assert Decimal(state["balance"]) == Decimal("100000.0000") + profit  # 14 digits

    payout = request_payout(client, funded, FINANCE)
    assert Decimal(payout["profit"]) == profit
    approve(client, payout["payout_id"], APPROVER)

    # The projections kept up: each of these waits for them (503 after 10 s when behind).
    report = client.get("/v1/reports/payouts", headers=FINANCE)
    assert report.status_code == 200, report.text
    (row,) = [r for r in report.json()["rows"] if r["payout_id"] == payout["payout_id"]]
    assert Decimal(row["trader_share"]) == profit
    trial = client.get("/v1/ledger/trial-balance", headers=FINANCE)
    assert trial.status_code == 200, trial.text
    rows = {(r["account"], r["currency"]): r for r in trial.json()["rows"]}
    assert Decimal(rows["expenses:profit_share", "CLF"]["debit"]) == profit
    payable = rows[f"liabilities:trader_payable:{trader_id}", "CLF"]
    assert Decimal(payable["credit"]) == profit + Decimal("540.0000")  # the fee refunded
