"""The auditor's HTTP surface, on an SQLite file and on PostgreSQL: `as_of` reads of an
account and of the trial balance, the audit period report, an account's event stream
with its chain links, and `POST /v1/audit/verify` (DESIGN.md, "Audit" and "HTTP API")."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from ledger.config import Settings
from tests import stripe_payloads as sp
from tests.support import (
    BACKENDS,
    SECRET,
    assert_error,
    auth,
    backend_url,
    program_body,
    purchase_body,
    sqlite_file_url,
    trade_body,
    uid,
)

ADMIN = auth("admin", sub="admin-ann")
FINANCE = auth("finance", sub="finance-fay")
AUDITOR = auth("auditor", sub="auditor-ada")
PLATFORM = auth("platform", sub="bridge-7")
APPROVER = auth("approver", sub="approver-bob")

HEX64 = re.compile(r"^[0-9a-f]{64}$")


def make_app(url: str) -> Any:
    return create_app(
        Settings(
            propledger_database_url=url,
            propledger_jwt_secret=SECRET,
            stripe_webhook_secret=sp.WEBHOOK_SECRET,
        )
    )


@pytest.fixture(scope="module", params=BACKENDS)
def client(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TestClient]:
    with TestClient(make_app(backend_url(request, tmp_path_factory))) as started:
        yield started


def payout_program() -> dict[str, Any]:
    """One phase with a 1 % target and no minimum of days; payouts at once, no minimum."""
    body = program_body()
    body["day_timezone"] = "UTC"
    body["phases"] = [{**body["phases"][0], "profit_target_pct": "1", "min_trading_days": 0}]
    body["funded"] = {
        **body["funded"],
        "first_payout_after_days": 0,
        "payout_interval_days": 0,
        "min_payout": "0",
    }
    return body


# Helpers --------------------------------------------------------------------------------


def now() -> str:
    return datetime.now(UTC).isoformat()


def ok(response: Any, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    return response.json()


def define(client: TestClient, body: dict[str, Any]) -> str:
    ok(client.post("/v1/programs", json=body, headers=ADMIN), 201)
    return str(body["program_id"])


def purchase(client: TestClient, program_id: str, trader_id: str | None = None) -> str:
    body = purchase_body(program_id, trader_id=trader_id)
    return str(ok(client.post("/v1/purchases", json=body, headers=ADMIN), 201)["account_id"])


def trade(client: TestClient, account_id: str, profit: str, **fields: Any) -> dict[str, Any]:
    body = trade_body(profit=profit, **fields)
    reply: dict[str, Any] = ok(
        client.post(f"/v1/accounts/{account_id}/trades", json=body, headers=PLATFORM), 201
    )
    return reply


def account(client: TestClient, account_id: str, as_of: str | None = None) -> dict[str, Any]:
    params = {"as_of": as_of} if as_of else None
    reply: dict[str, Any] = ok(
        client.get(f"/v1/accounts/{account_id}", params=params, headers=AUDITOR)
    )
    return reply


def trial_balance(client: TestClient, as_of: str | None = None) -> dict[str, Any]:
    params = {"as_of": as_of} if as_of else None
    reply: dict[str, Any] = ok(
        client.get("/v1/ledger/trial-balance", params=params, headers=FINANCE)
    )
    return reply


def balances(body: dict[str, Any]) -> dict[str, Decimal]:
    return {f"{row['account']} {row['currency']}": Decimal(row["balance"]) for row in body["rows"]}


def deliver(client: TestClient, payload: dict[str, Any]) -> dict[str, Any]:
    body = sp.body_of(payload)
    header = sp.signature(body)
    reply: dict[str, Any] = ok(
        client.post(
            "/v1/webhooks/stripe",
            content=body,
            headers={"Stripe-Signature": header, "Content-Type": "application/json"},
        )
    )
    return reply


def funded_with_profit(client: TestClient, program_id: str, trader_id: str) -> str:
    passed = trade(client, purchase(client, program_id, trader_id), "1000.00")
    assert passed["status"] == "passed"
    funded = str(passed["next_account_id"])
    assert trade(client, funded, "2000.00")["balance"] == "102000.00"
    return funded


def without_as_of(state: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in state.items() if key != "as_of"}


# as_of ----------------------------------------------------------------------------------


def test_an_account_as_of_before_a_breach_is_active_and_after_it_breached(
    client: TestClient,
) -> None:
    program_id = define(client, program_body())
    before_account = now()
    account_id = purchase(client, program_id)
    opened = now()
    trade(client, account_id, "100.00")
    traded = now()
    assert trade(client, account_id, "-6000.00", closed="12:00:00")["status"] == "breached"
    breached = now()

    error = assert_error(
        client.get(f"/v1/accounts/{account_id}", params={"as_of": before_account}, headers=AUDITOR),
        404,
        "unknown_account",
    )
    assert account_id in error["message"]

    state = account(client, account_id, opened)
    assert state["as_of"] == opened
    assert (state["status"], state["balance"], state["version"]) == ("active", "100000.00", 1)
    assert state["breach"] is None

    state = account(client, account_id, traded.replace("+00:00", "Z"))
    assert (state["status"], state["balance"], state["version"]) == ("active", "100100.00", 2)
    assert state["breach"] is None

    state = account(client, account_id, breached)
    assert state["status"] == "breached"
    assert state["balance"] == "94100.00"
    assert state["breach"]["rule"] == "max_daily_loss"
    assert without_as_of(state) == account(client, account_id)


def test_an_account_as_of_before_a_payout_approval_still_holds_the_profit(
    client: TestClient,
) -> None:
    program_id = define(client, payout_program())
    trader_id = uid("trader-")
    funded = funded_with_profit(client, program_id, trader_id)
    before_request = now()
    trader = auth("trader", sub="trader-tess", trader_id=trader_id)
    payout = ok(client.post(f"/v1/accounts/{funded}/payouts", headers=trader), 201)
    assert payout["requested_by"] == "trader-tess"
    assert payout["profit"] == "2000.00"
    requested = now()
    approved = ok(client.post(f"/v1/payouts/{payout['payout_id']}/approve", headers=APPROVER))
    assert approved["status"] == "approved"
    assert approved["approved_by"] == "approver-bob"
    after_approval = now()

    for instant in (before_request, requested):
        state = account(client, funded, instant)
        assert (state["balance"], state["profit"]) == ("102000.00", "2000.00"), instant
    state = account(client, funded, after_approval)
    assert (state["balance"], state["profit"]) == ("100000.00", "0.00")
    assert without_as_of(state) == account(client, funded)


def test_the_trial_balance_as_of_before_a_refund_does_not_show_it(client: TestClient) -> None:
    program_id = define(client, program_body())
    payment = sp.StripePayment(
        54000, "usd", {"trader_id": uid("trader-"), "program_id": program_id}
    )
    assert deliver(client, payment.checkout_completed())["outcome"] == "challenge"
    live_before = trial_balance(client)
    before_refund = now()
    assert deliver(client, payment.refunded(54000))["outcome"] == "refund"
    after_refund = now()
    live_after = trial_balance(client)

    then = trial_balance(client, before_refund)
    assert then["as_of"] == before_refund
    assert then["rows"] == live_before["rows"]
    assert then["totals"] == live_before["totals"]

    later = trial_balance(client, after_refund)
    assert later["rows"] == live_after["rows"]
    moved = {
        key: balances(later).get(key, Decimal(0)) - balances(then).get(key, Decimal(0))
        for key in balances(later).keys() | balances(then).keys()
    }
    assert {key: value for key, value in moved.items() if value} == {
        "revenue:refunds USD": Decimal("540.00"),
        "assets:processor USD": Decimal("-540.00"),
    }


def test_an_as_of_without_an_offset_is_refused(client: TestClient) -> None:
    account_id = purchase(client, define(client, program_body()))
    for path, headers in (
        (f"/v1/accounts/{account_id}", AUDITOR),
        ("/v1/ledger/trial-balance", FINANCE),
    ):
        for bad in ("2026-03-02T10:00:00", "1772445600", "yesterday"):
            refused = client.get(path, params={"as_of": bad}, headers=headers)
            assert_error(refused, 422, "invalid_timestamp")


def test_an_as_of_date_reads_as_that_utc_day_closed(client: TestClient) -> None:
    program_id = define(client, program_body())
    account_id = purchase(client, program_id)
    trade(client, account_id, "125.00")
    deliver(
        client,
        sp.StripePayment(
            54000, "usd", {"trader_id": uid("trader-"), "program_id": program_id}
        ).checkout_completed(),
    )
    today = datetime.now(UTC).date()
    yesterday = (today - timedelta(days=1)).isoformat()

    whole_day = trial_balance(client, today.isoformat())
    assert whole_day["as_of"] == today.isoformat()
    live = trial_balance(client)
    assert (whole_day["rows"], whole_day["totals"]) == (live["rows"], live["totals"])
    assert any(Decimal(row["balance"]) for row in live["rows"])
    # Nothing was booked before today (the store was made today).
    assert not any(Decimal(row["balance"]) for row in trial_balance(client, yesterday)["rows"])

    assert without_as_of(account(client, account_id, today.isoformat())) == account(
        client, account_id
    )
    before = client.get(f"/v1/accounts/{account_id}", params={"as_of": yesterday}, headers=AUDITOR)
    assert_error(before, 404, "unknown_account")
    for bad in ("2026-02-30", "2026-13-01", "2026-W10-1", "20260302T1"):
        refused = client.get("/v1/ledger/trial-balance", params={"as_of": bad}, headers=FINANCE)
        assert_error(refused, 422, "invalid_timestamp")
        assert refused.json()["error"]["details"]["field"] == "as_of"
    # An empty `as_of=` is no instant on any endpoint (the trial balance and the reports
    # answered as of now, or echoed "", until 2026-12-07).
    for path in (
        "/v1/ledger/trial-balance",
        "/v1/reports/payouts",
        "/v1/reports/profit-splits",
        f"/v1/accounts/{account_id}",
    ):
        refused = client.get(path, params={"as_of": ""}, headers=FINANCE)
        assert_error(refused, 422)


def test_an_as_of_whose_plus_sign_was_not_url_encoded_reads_as_that_offset(
    client: TestClient,
) -> None:
    account_id = purchase(client, define(client, program_body()))
    before_trade = datetime.now(timezone(timedelta(hours=1))).isoformat()
    assert "+01:00" in before_trade
    trade(client, account_id, "300.00")

    # Written into the URL as is: the query string's '+' arrives as a space.
    raw = client.get(f"/v1/accounts/{account_id}?as_of={before_trade}", headers=AUDITOR)
    encoded = account(client, account_id, before_trade)
    assert raw.status_code == 200, raw.text
    assert raw.json() == encoded
    assert encoded["as_of"] == before_trade
    assert encoded["balance"] == "100000.00"  # before the trade
    tb = client.get(f"/v1/ledger/trial-balance?as_of={before_trade}", headers=FINANCE)
    assert tb.status_code == 200, tb.text
    assert tb.json()["as_of"] == before_trade
    report = client.get(f"/v1/reports/payouts?to={before_trade}", headers=FINANCE)
    assert report.status_code == 200, report.text
    assert report.json()["to"] == before_trade
    # Only an offset after a time of day is read so; other spaces stay refused.
    refused = client.get(f"/v1/accounts/{account_id}?as_of=2026-03-02 01:00", headers=AUDITOR)
    assert_error(refused, 422, "invalid_timestamp")


def _just_before(recorded_at: str) -> str:
    moment = datetime.fromisoformat(recorded_at.replace("Z", "+00:00"))
    return (moment - timedelta(microseconds=1)).isoformat()


def test_an_account_as_of_the_instant_of_its_breaching_trade_shows_the_breach_or_neither(
    client: TestClient,
) -> None:
    """The trade and the breach it causes are saved together: at no instant did the
    ledger hold the trade without the breach."""
    account_id = purchase(client, define(client, program_body()))
    assert trade(client, account_id, "-6000.00")["status"] == "breached"
    events = ok(client.get(f"/v1/accounts/{account_id}/events", headers=AUDITOR))["events"]
    closed, breached = events[1], events[2]
    assert (closed["type"], breached["type"]) == ("TradeClosed", "RuleBreached")
    assert closed["recorded_at"] == breached["recorded_at"]  # one save, one instant

    at_save = account(client, account_id, closed["recorded_at"])
    assert (at_save["version"], at_save["status"]) == (3, "breached")
    before = account(client, account_id, _just_before(closed["recorded_at"]))
    assert (before["version"], before["status"]) == (1, "active")


def test_an_account_as_of_an_instant_inside_an_atomic_batch_shows_all_of_it_or_none(
    client: TestClient,
) -> None:
    account_id = purchase(client, define(client, program_body()))
    trades = [
        {**trade_body(profit="10.00", closed=f"10:{minute:02d}:00"), "account_id": account_id}
        for minute in range(20)
    ]
    results = ok(client.post("/v1/trades:batch", json={"trades": trades}, headers=PLATFORM))
    assert {item["result"] for item in results["results"]} == {"created"}
    events = ok(client.get(f"/v1/accounts/{account_id}/events", headers=AUDITOR))["events"]
    assert len(events) == 21
    (saved_at,) = {event["recorded_at"] for event in events[1:]}  # the batch: one instant

    assert account(client, account_id, saved_at)["version"] == 21
    assert account(client, account_id, _just_before(saved_at))["version"] == 1


# The event stream with its links, and verify ----------------------------------------------


def test_an_accounts_events_carry_their_position_hash_and_actor(client: TestClient) -> None:
    program_id = define(client, program_body())
    account_id = purchase(client, program_id)
    for profit in ("100.00", "-50.00", "25.00"):
        trade(client, account_id, profit)

    events = ok(client.get(f"/v1/accounts/{account_id}/events", headers=AUDITOR))["events"]
    assert [event["version"] for event in events] == [1, 2, 3, 4]
    # Asked in another spelling, the reply names the account as every other reply does.
    shouted = ok(client.get(f"/v1/accounts/{account_id.upper()}/events", headers=AUDITOR))
    assert shouted["account_id"] == account_id
    assert shouted["events"] == events
    links = {
        int(row["version"]): (int(row["position"]), row["hash"])
        for row in client.app.state.database.query(  # type: ignore[attr-defined]
            "SELECT position, version, hash FROM event_chain WHERE stream_id = ?",
            (UUID(account_id).hex,),
        )
    }
    for event in events:
        assert HEX64.match(event["hash"]), event
        assert (event["position"], event["hash"]) == links[event["version"]]
    assert [event["position"] for event in events] == sorted(event["position"] for event in events)
    assert events[0]["type"] == "Opened"
    assert events[0]["actor"] == "admin-ann"
    assert [event["type"] for event in events[1:]] == ["TradeClosed"] * 3
    assert {event["actor"] for event in events[1:]} == {"bridge-7"}

    first = ok(
        client.get(f"/v1/accounts/{account_id}/events", params={"limit": 2}, headers=FINANCE)
    )
    assert first["next_after_version"] == 2
    second = ok(
        client.get(
            f"/v1/accounts/{account_id}/events",
            params={"after_version": 2, "limit": 2},
            headers=ADMIN,
        )
    )
    assert first["events"] + second["events"] == events

    for roles in (["platform"], ["approver"]):
        refused = client.get(f"/v1/accounts/{account_id}/events", headers=auth(*roles))
        assert_error(refused, 403, "forbidden")


def test_only_an_auditor_may_verify_and_a_sound_ledger_verifies_ok(client: TestClient) -> None:
    program_id = define(client, program_body())
    trade(client, purchase(client, program_id), "75.00")

    result = ok(client.post("/v1/audit/verify", headers=AUDITOR))
    assert result["ok"] is True
    assert result["chain"]["ok"] is True
    assert result["snapshots"]["ok"] is True
    assert result["chain"]["findings"] == []
    assert HEX64.match(result["chain"]["head"]["hash"])
    for name, outcome in result["projections"].items():
        assert outcome["differences"] == [], name

    for roles in (["finance"], ["admin"], ["platform"], ["approver"]):
        assert_error(client.post("/v1/audit/verify", headers=auth(*roles)), 403, "forbidden")
    assert_error(client.post("/v1/audit/verify"), 401)
    # It takes no body: one sent anyway is read, not ignored.
    broken = {**AUDITOR, "Content-Type": "application/json"}
    assert_error(client.post("/v1/audit/verify", content=b"{", headers=broken), 400)
    assert_error(client.post("/v1/audit/verify", json={"x": 1}, headers=AUDITOR), 422)
    assert ok(client.post("/v1/audit/verify", json={}, headers=AUDITOR))["ok"] is True


# The audit period report, on a store of its own ---------------------------------------------


@pytest.fixture(params=BACKENDS)
def own_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield sqlite_file_url(tmp_path / "report.db")
        return
    factory: Callable[[str], AbstractContextManager[str]] = request.getfixturevalue(
        "postgres_database_factory"
    )
    with factory("audit_report") as url:
        yield url


def test_verify_names_an_edited_event_by_the_account_id_the_api_uses(own_store: str) -> None:
    with TestClient(make_app(own_store)) as client:
        program_id = define(client, program_body())
        account_id = purchase(client, program_id)
        trade(client, account_id, "75.00")
        database = client.app.state.database  # type: ignore[attr-defined]
        if database.dialect == "sqlite":
            edit = (
                "UPDATE stored_events SET state = CAST(replace(CAST(state AS TEXT), "
                "'\"75.00\"', '\"95.00\"') AS BLOB) WHERE topic LIKE ?"
            )
        else:
            edit = (
                "UPDATE propledger_events SET state = convert_to(replace(convert_from(state, "
                "'UTF8'), '\"75.00\"', '\"95.00\"'), 'UTF8') WHERE topic LIKE ?"
            )
        database.execute_one(edit, ("%TradeClosed",))
        result = ok(client.post("/v1/audit/verify", headers=AUDITOR))

    assert result["ok"] is False
    (finding,) = result["chain"]["findings"]
    assert finding["kind"] == "content_mismatch"
    assert (finding["stream_id"], finding["version"]) == (account_id, 2)
    assert account_id in finding["message"]


def raw_counts(client: TestClient) -> dict[str, int]:
    database = client.app.state.database  # type: ignore[attr-defined]
    table = "stored_events" if database.dialect == "sqlite" else "propledger_events"
    rows = database.query(f"SELECT topic, COUNT(*) AS n FROM {table} GROUP BY topic")
    return {row["topic"].partition(":")[2]: int(row["n"]) for row in rows}


def report(client: TestClient, **params: str) -> dict[str, Any]:
    query = {("from" if key == "start" else key): value for key, value in params.items()}
    body: dict[str, Any] = ok(client.get("/v1/reports/audit", params=query, headers=FINANCE))
    return body


NAMED = (
    "breaches",
    "passes",
    "payouts_requested",
    "payouts_approved",
    "payouts_paid",
    "refunds",
    "chargebacks",
    "disputes",
)


def test_the_audit_report_counts_every_event_by_type_and_names_the_chain_head(
    own_store: str,
) -> None:
    with TestClient(make_app(own_store)) as client:
        classic = define(client, program_body())
        payouts = define(client, payout_program())
        trade(client, purchase(client, classic), "-6000.00")  # a breach
        trader_id = uid("trader-")
        funded = funded_with_profit(client, payouts, trader_id)  # a pass
        trader = auth("trader", sub="trader-tess", trader_id=trader_id)
        payout = ok(client.post(f"/v1/accounts/{funded}/payouts", headers=trader), 201)
        ok(client.post(f"/v1/payouts/{payout['payout_id']}/approve", headers=APPROVER))
        middle = now()
        refunded = sp.StripePayment(54000, "usd", {"trader_id": uid("t-"), "program_id": classic})
        deliver(client, refunded.checkout_completed())
        deliver(client, refunded.refunded(54000))
        disputed = sp.StripePayment(54000, "usd", {"trader_id": uid("t-"), "program_id": classic})
        deliver(client, disputed.checkout_completed())
        deliver(client, disputed.dispute_event("charge.dispute.created", "dp_audit"))
        deliver(client, disputed.dispute_event("charge.dispute.funds_withdrawn", "dp_audit"))

        whole = report(client)
        counts = raw_counts(client)
        head = client.app.state.database.query(  # type: ignore[attr-defined]
            "SELECT position, hash FROM event_chain_head WHERE id = 1"
        )[0]
        assert ok(client.get("/v1/reports/audit", headers=AUDITOR)) == whole
        for roles in (["admin"], ["platform"], ["approver"]):
            assert_error(client.get("/v1/reports/audit", headers=auth(*roles)), 403, "forbidden")

        early = report(client, to=middle)
        late = report(client, start=middle)
        nothing = report(client, start="2000-01-01", to="2000-01-01")
        future = report(client, start="2999-01-01T00:00:00Z")

    assert whole["events_by_type"] == counts
    assert whole["events"] == sum(counts.values())
    assert {name: whole[name] for name in NAMED} == {
        "breaches": 1,
        "passes": 1,
        "payouts_requested": 1,
        "payouts_approved": 1,
        "payouts_paid": 0,
        "refunds": 1,
        "chargebacks": 1,
        "disputes": counts.get("Payment.DisputeChanged", 0),
    }
    assert whole["disputes"] >= 1
    assert whole["chain_head"] == {"position": int(head["position"]), "hash": head["hash"]}

    # [from, to) splits the log: every event falls on exactly one side of `middle`.
    assert early["events"] + late["events"] == whole["events"]
    for name in NAMED:
        assert early[name] + late[name] == whole[name], name
    assert (early["breaches"], early["passes"], early["payouts_approved"]) == (1, 1, 1)
    assert (early["refunds"], early["chargebacks"]) == (0, 0)
    assert (late["breaches"], late["passes"], late["payouts_approved"]) == (0, 0, 0)
    assert (late["refunds"], late["chargebacks"]) == (1, 1)

    for empty in (nothing, future):
        assert empty["events"] == 0
        assert empty["events_by_type"] == {}
        assert {name: empty[name] for name in NAMED} == dict.fromkeys(NAMED, 0)
        assert empty["chain_head"] == whole["chain_head"]
