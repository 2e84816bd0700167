"""`propledger report payouts`, run in its own process as finance would run it, prints the
same report as `GET /v1/reports/payouts` (SQLite file and PostgreSQL)."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.auth import mint_token
from ledger.config import Settings

SECRET = "payout-cli-secret-" + "c" * 40
PROPLEDGER = Path(sys.executable).parent / "propledger"
PERIOD = ("--from", "2026-01-01", "--to", "2030-01-01")


def bearer(sub: str, *roles: str, trader_id: str | None = None) -> dict[str, str]:
    token = mint_token(SECRET, sub=sub, roles=list(roles), trader_id=trader_id)
    return {"Authorization": f"Bearer {token}"}


ADMIN = bearer("admin-1", "admin")
FINANCE = bearer("finance-1", "finance")
PLATFORM = bearer("bridge-1", "platform")
APPROVER = bearer("approver-bob", "approver")


def uid(prefix: str) -> str:
    return f"{prefix}{uuid4().hex[:10]}"


def program(fee_currency: str) -> dict[str, Any]:
    """One phase passed by +1 % (1,000.00) on the first trade; payouts at once, 80 %."""
    return {
        "program_id": uid("cli-prog-"),
        "name": "One phase 100k",
        "currency": "USD",
        "initial_balance": "100000.00",
        "fee": {"amount": "540.00", "currency": fee_currency},
        "day_timezone": "UTC",
        "phases": [
            {
                "name": "challenge",
                "profit_target_pct": "1",
                "max_daily_loss_pct": "5",
                "max_loss_pct": "10",
                "min_trading_days": 0,
            }
        ],
        "funded": {
            "max_daily_loss_pct": "5",
            "max_loss_pct": "10",
            "profit_split_pct": "80",
            "first_payout_after_days": 0,
            "payout_interval_days": 0,
            "min_payout": "50.00",
            "refund_fee_with_first_payout": True,
        },
    }


def post(client: TestClient, path: str, headers: dict[str, str], body: Any = None) -> Any:
    response = client.post(path, json=body, headers=headers)
    assert response.status_code in (200, 201), response.text
    return response.json()


def trade(client: TestClient, account_id: str, profit: str) -> dict[str, Any]:
    body = {
        "trade_id": uid("T-"),
        "symbol": "EURUSD",
        "side": "buy",
        "volume": "1",
        "opened_at": "2026-03-02T09:00:00Z",
        "closed_at": "2026-03-02T10:00:00Z",
        "profit": profit,
    }
    reply: dict[str, Any] = post(client, f"/v1/accounts/{account_id}/trades", PLATFORM, body)
    return reply


def payout(client: TestClient, program_id: str, profit: str) -> str:
    """A new trader's funded account with `profit`, and its payout requested by the trader."""
    trader_id = uid("trader-")
    purchase = {
        "purchase_id": uid("pur-"),
        "trader_id": trader_id,
        "program_id": program_id,
        "method": "manual",
        "amount": "540.00",
        "currency": "USD",
    }
    phase_id = post(client, "/v1/purchases", FINANCE, purchase)["account_id"]
    funded_id = trade(client, phase_id, "1000.00")["next_account_id"]
    trade(client, funded_id, profit)
    trader = bearer(f"sub-{trader_id}", "trader", trader_id=trader_id)
    return str(post(client, f"/v1/accounts/{funded_id}/payouts", trader)["payout_id"])


def run_cli(url: str, cwd: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("PROPLEDGER_")}
    env.update(PROPLEDGER_DATABASE_URL=url, PROPLEDGER_JWT_SECRET=SECRET)
    return subprocess.run(
        [str(PROPLEDGER), *args], cwd=cwd, env=env, capture_output=True, timeout=120, check=False
    )


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "postgres":
        url: str = request.getfixturevalue("postgres_url")
        return url
    return f"sqlite:///{tmp_path / 'propledger.db'}"


def test_the_cli_payout_report_prints_the_same_csv_and_json_as_the_http_report(
    database_url: str, tmp_path: Path
) -> None:
    settings = Settings(propledger_database_url=database_url, propledger_jwt_secret=SECRET)
    with TestClient(create_app(settings)) as client:
        usd_fee = program("USD")
        eur_fee = program("EUR")
        post(client, "/v1/programs", ADMIN, usd_fee)
        post(client, "/v1/programs", ADMIN, eur_fee)
        approved = [
            payout(client, usd_fee["program_id"], "1000.00"),
            payout(client, usd_fee["program_id"], "100.05"),
            payout(client, eur_fee["program_id"], "2000.00"),
        ]
        for payout_id in approved:
            post(client, f"/v1/payouts/{payout_id}/approve", APPROVER)
        post(client, f"/v1/payouts/{approved[0]}/paid", FINANCE, {"reference": "SEPA-77"})
        rejected = payout(client, usd_fee["program_id"], "700.00")
        post(client, f"/v1/payouts/{rejected}/reject", APPROVER, {"reason": "review"})
        pending = payout(client, usd_fee["program_id"], "800.00")

        period = {"from": "2026-01-01", "to": "2030-01-01"}
        http_csv = client.get(
            "/v1/reports/payouts", params={**period, "format": "csv"}, headers=FINANCE
        )
        assert http_csv.status_code == 200, http_csv.text
        http_json = client.get("/v1/reports/payouts", params=period, headers=FINANCE)
        assert http_json.status_code == 200, http_json.text

    done = run_cli(database_url, tmp_path, "report", "payouts", *PERIOD, "--format", "csv")
    assert done.returncode == 0, done.stderr.decode()
    assert done.stdout == http_csv.content  # byte for byte, CRLF line ends included

    rows = list(csv.reader(io.StringIO(done.stdout.decode())))
    assert rows[0][:3] == ["payout_id", "account_id", "trader_id"]
    assert [row[0] for row in rows[1:4]] == approved
    assert [row[0] for row in rows[4:]] == ["total", "total"]
    assert [(row[5], row[12]) for row in rows[4:]] == [
        ("EUR", "540.00"),
        # 1,340.00 + (80.04 + 540.00) + 1,600.00, where 100.05 x 80 % = 80.04
        ("USD", "3560.04"),
    ]
    assert rejected not in done.stdout.decode()
    assert pending not in done.stdout.decode()

    as_json = run_cli(database_url, tmp_path, "report", "payouts", *PERIOD, "--format", "json")
    assert as_json.returncode == 0, as_json.stderr.decode()
    report = json.loads(as_json.stdout)
    expected = http_json.json()
    assert report["rows"] == expected["rows"]
    assert report["totals"] == expected["totals"]

    out = tmp_path / "payouts.csv"
    to_file = run_cli(database_url, tmp_path, "report", "payouts", *PERIOD, "--output", str(out))
    assert to_file.returncode == 0, to_file.stderr.decode()
    assert out.read_bytes() == http_csv.content
    assert b"wrote 3 payouts" in to_file.stderr


def test_a_bad_period_is_a_plain_error(database_url: str, tmp_path: Path) -> None:
    done = run_cli(database_url, tmp_path, "report", "payouts", "--from", "last tuesday")
    assert done.returncode == 2  # a bad option, refused by the parser
    assert b"propledger report payouts" in done.stderr
    assert b"Traceback" not in done.stderr


def test_a_to_date_the_day_before_the_from_date_is_refused(
    database_url: str, tmp_path: Path
) -> None:
    assert run_cli(database_url, tmp_path, "migrate").returncode == 0
    done = run_cli(
        database_url, tmp_path, "report", "payouts", "--from", "2026-12-08", "--to", "2026-12-07"
    )
    assert done.returncode == 1
    assert b"before" in done.stderr
    assert b"Traceback" not in done.stderr
