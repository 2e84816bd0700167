"""Payouts under concurrency on a real PostgreSQL server: approvers clicking at once, and
requests for one account arriving at once, from threads and from two workers (two
`PropLedger` instances on one database, each with its own connections and aggregate cache).

DESIGN.md: "Four eyes ... Approval withdraws `profit` from the account's balance and books
the journal entries"; "no other payout of that account is pending"; "Concurrent writers to
one aggregate are serialised by optimistic concurrency and retried; no update is lost and
none is applied twice."
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any
from uuid import UUID, uuid4

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.auth import mint_token
from domain.account import TradingAccount
from domain.errors import Conflict
from domain.payout import Payout, PayoutRefused
from ledger.app import PropLedger
from ledger.config import Settings
from ledger.migrate import migrate
from projections.journal import entry_lines
from projections.registry import default_projections
from projections.runner import ProjectionRunner
from projections.store import Database

SECRET = "payout-race-secret-" + "r" * 40
ROUNDS = 6

pytestmark = pytest.mark.postgres


def uid(prefix: str) -> str:
    return f"{prefix}{uuid4().hex[:10]}"


@pytest.fixture(scope="module")
def database_url(postgres_url: str) -> str:
    migrate(postgres_url)
    return postgres_url


@pytest.fixture(scope="module")
def worker_a(database_url: str) -> Iterator[PropLedger]:
    ledger = PropLedger(database_url)
    yield ledger
    ledger.close()


@pytest.fixture(scope="module")
def worker_b(database_url: str) -> Iterator[PropLedger]:
    ledger = PropLedger(database_url)
    yield ledger
    ledger.close()


@pytest.fixture(scope="module")
def program_id(worker_a: PropLedger) -> str:
    body = {
        "program_id": uid("race-prog-"),
        "name": "One phase 100k",
        "currency": "USD",
        "initial_balance": "100000.00",
        "fee": {"amount": "540.00", "currency": "USD"},
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
    worker_a.define_program(body)
    return str(body["program_id"])


@pytest.fixture(scope="module")
def projections(worker_a: PropLedger, database_url: str) -> Iterator[ProjectionRunner]:
    database = Database(database_url)
    yield ProjectionRunner(worker_a, database, default_projections())
    database.close()


def trade_body(profit: str) -> dict[str, Any]:
    return {
        "trade_id": uid("T-"),
        "symbol": "EURUSD",
        "side": "buy",
        "volume": "1",
        "opened_at": "2026-03-02T09:00:00Z",
        "closed_at": "2026-03-02T10:00:00Z",
        "profit": profit,
    }


def funded_account(ledger: PropLedger, program_id: str) -> tuple[str, str]:
    """(trader_id, account_id) of a new funded account with 1,000.00 of profit."""
    trader_id = uid("trader-")
    purchase = {
        "purchase_id": uid("pur-"),
        "trader_id": trader_id,
        "program_id": program_id,
        "method": "manual",
        "amount": "540.00",
        "currency": "USD",
    }
    phase = ledger.purchase(purchase).account
    passed = ledger.record_trade(str(phase.id), trade_body("1000.00")).account
    funded_id = str(passed.next_account_id)
    ledger.record_trade(funded_id, trade_body("1000.00"))
    return trader_id, funded_id


def race(work: list[Callable[[], Any]]) -> list[Any]:
    """Runs every callable in its own thread, released together; returns each one's result
    or the exception it raised."""
    barrier = threading.Barrier(len(work))
    outcomes: list[Any] = [None] * len(work)

    def run(index: int) -> None:
        try:
            barrier.wait(timeout=30)
            outcomes[index] = work[index]()
        except BaseException as error:  # returned to the test
            outcomes[index] = error

    threads = [threading.Thread(target=run, args=(index,)) for index in range(len(work))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads), "a writer hung"
    return outcomes


def account_events(ledger: PropLedger, account_id: str) -> list[Any]:
    events = list(ledger.events.get(UUID(account_id)))
    assert [e.originator_version for e in events] == list(range(1, len(events) + 1))
    return events


def of_type(events: list[Any], kind: type) -> list[Any]:
    return [event for event in events if isinstance(event, kind)]


def approval_entries(projections: ProjectionRunner, payout_id: str) -> set[str]:
    projections.catch_up()
    lines = entry_lines(projections.database, account=None, after=None, limit=100_000)
    return {
        line["entry_id"]
        for line in lines
        if line["entry_id"].startswith(payout_id) and line["event_type"] == "Payout.Approved"
    }


@pytest.mark.parametrize("round_", range(ROUNDS))
def test_two_approvers_on_two_workers_approve_one_payout_once(
    worker_a: PropLedger,
    worker_b: PropLedger,
    program_id: str,
    projections: ProjectionRunner,
    round_: int,
) -> None:
    trader_id, account_id = funded_account(worker_a, program_id)
    payout, _ = worker_a.request_payout(account_id, "alice")
    payout_id = str(payout.id)
    # Both workers have the payout and the account in their caches before the race.
    worker_b.payout(payout_id)
    worker_b.account(account_id)

    outcomes = race(
        [
            lambda: worker_a.approve_payout(payout_id, "bob"),
            lambda: worker_b.approve_payout(payout_id, "carol"),
            lambda: worker_a.approve_payout(payout_id, "dave"),
            lambda: worker_b.approve_payout(payout_id, "erin"),
        ]
    )
    won = [outcome for outcome in outcomes if not isinstance(outcome, BaseException)]
    lost = [outcome for outcome in outcomes if isinstance(outcome, BaseException)]
    assert len(won) == 1, outcomes
    # Every loser is refused as a conflict (409); which code it names depends on the
    # interleaving, see test_an_approver_who_loses_the_race_is_told_the_payout_is_approved.
    assert all(isinstance(error, Conflict) for error in lost), lost
    winner = won[0][0]
    assert winner.approved_by in {"bob", "carol", "dave", "erin"}

    for ledger in (worker_a, worker_b):
        stored = ledger.payout(payout_id)
        assert (stored.status, stored.approved_by) == ("approved", winner.approved_by)
        assert stored.version == 2
        account = ledger.account(account_id)
        assert account.state.balance.amount == Decimal("100000.00")
        assert account.approved_payouts == 1
    payout_events = list(worker_a.events.get(UUID(payout_id)))
    assert [type(event) for event in payout_events] == [Payout.Requested, Payout.Approved]
    withdrawn = of_type(account_events(worker_a, account_id), TradingAccount.PayoutWithdrawn)
    assert [(e.payout_id, e.amount) for e in withdrawn] == [(payout_id, Decimal("1000.00"))]
    assert approval_entries(projections, payout_id) == {f"{payout_id}:2"}
    payable = entry_lines(
        projections.database,
        account=f"liabilities:trader_payable:{trader_id}",
        after=None,
        limit=100,
    )
    assert sorted(line["credit"] for line in payable) == ["540.00", "800.00"]


def test_an_approver_who_loses_the_race_is_told_the_payout_is_approved(
    worker_a: PropLedger,
    worker_b: PropLedger,
    program_id: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _, account_id = funded_account(worker_a, program_id)
    payout, _ = worker_a.request_payout(account_id, "alice")
    payout_id = str(payout.id)
    load_account = worker_b.account
    winner: list[Any] = []

    def account_after_the_other_approval(wanted: str) -> TradingAccount:
        # The interleaving of a real race, made certain: worker B has read the payout
        # (still requested) when worker A's approval commits, then B reads the account.
        if not winner:
            winner.append(worker_a.approve_payout(payout_id, "bob"))
        return load_account(wanted)

    monkeypatch.setattr(worker_b, "account", account_after_the_other_approval)
    with pytest.raises(Conflict) as lost:
        worker_b.approve_payout(payout_id, "carol")
    # Safe either way: one approval, one withdrawal.
    withdrawn = of_type(account_events(worker_a, account_id), TradingAccount.PayoutWithdrawn)
    assert len(withdrawn) == 1
    assert worker_a.payout(payout_id).approved_by == "bob"
    assert lost.value.code == "payout_approved", lost.value.message


@pytest.mark.parametrize("round_", range(ROUNDS))
def test_two_requests_for_one_account_at_once_leave_one_pending_payout(
    worker_a: PropLedger,
    worker_b: PropLedger,
    program_id: str,
    projections: ProjectionRunner,
    round_: int,
) -> None:
    _, account_id = funded_account(worker_a, program_id)
    worker_b.account(account_id)

    outcomes = race(
        [
            lambda: worker_a.request_payout(account_id, "alice"),
            lambda: worker_b.request_payout(account_id, "finance-1"),
            lambda: worker_a.request_payout(account_id, "finance-2"),
            lambda: worker_b.request_payout(account_id, "alice"),
        ]
    )
    made = [outcome[0] for outcome in outcomes if not isinstance(outcome, BaseException)]
    refused = [outcome for outcome in outcomes if isinstance(outcome, BaseException)]
    # Retried into one payout, or refused as pending: never two payouts for one account.
    assert len({str(payout.id) for payout in made}) == 1, outcomes
    assert all(isinstance(error, PayoutRefused) for error in refused), refused
    for error in refused:
        assert error.details["reasons"] == ["payout_pending"]
    payout_id = str(made[0].id)

    events = account_events(worker_a, account_id)
    assert [e.payout_id for e in of_type(events, TradingAccount.PayoutRequested)] == [payout_id]
    assert worker_b.account(account_id).pending_payout_id == payout_id
    projections.catch_up()
    board = projections.database.query(
        "SELECT payout_id, status FROM payout_board WHERE account_id = ?", [account_id]
    )
    assert [(row["payout_id"], row["status"]) for row in board] == [(payout_id, "requested")]

    # The one payout goes on normally.
    approved, _ = worker_b.approve_payout(payout_id, "approver-zed")
    assert approved.status == "approved"
    assert worker_a.account(account_id).state.balance.amount == Decimal("100000.00")


@pytest.mark.parametrize("round_", range(ROUNDS))
def test_an_approval_and_a_rejection_at_once_end_in_exactly_one_of_them(
    worker_a: PropLedger, worker_b: PropLedger, program_id: str, round_: int
) -> None:
    _, account_id = funded_account(worker_a, program_id)
    payout, _ = worker_a.request_payout(account_id, "alice")
    payout_id = str(payout.id)
    worker_b.payout(payout_id)
    worker_b.account(account_id)

    outcomes = race(
        [
            lambda: worker_a.approve_payout(payout_id, "bob"),
            lambda: worker_b.reject_payout(payout_id, "carol", "not this one"),
        ]
    )
    won = [outcome[0] for outcome in outcomes if not isinstance(outcome, BaseException)]
    lost = [outcome for outcome in outcomes if isinstance(outcome, BaseException)]
    assert len(won) == 1, outcomes
    assert len(lost) == 1
    assert isinstance(lost[0], Conflict), lost
    final = worker_b.payout(payout_id)
    assert final.status == won[0].status
    events = account_events(worker_a, account_id)
    withdrawn = of_type(events, TradingAccount.PayoutWithdrawn)
    released = of_type(events, TradingAccount.PayoutReleased)
    balance = worker_a.account(account_id).state.balance.amount
    if final.status == "approved":
        assert (len(withdrawn), len(released), balance) == (1, 0, Decimal("100000.00"))
    else:
        assert final.status == "rejected"
        assert (len(withdrawn), len(released), balance) == (0, 1, Decimal("101000.00"))
    assert worker_a.account(account_id).pending_payout_id is None


def test_concurrent_approvals_through_two_http_apps_approve_once(
    database_url: str, worker_a: PropLedger, program_id: str
) -> None:
    trader_id, account_id = funded_account(worker_a, program_id)
    trader = mint_token(SECRET, sub="alice", roles=["trader"], trader_id=trader_id)
    settings = Settings(propledger_database_url=database_url, propledger_jwt_secret=SECRET)
    with (
        TestClient(create_app(settings)) as first,
        TestClient(create_app(settings)) as second,
    ):
        requested = first.post(
            f"/v1/accounts/{account_id}/payouts", headers={"Authorization": f"Bearer {trader}"}
        )
        assert requested.status_code == 201, requested.text
        payout_id = requested.json()["payout_id"]

        def approve(client: TestClient, sub: str) -> Callable[[], Any]:
            token = mint_token(SECRET, sub=sub, roles=["approver"])
            headers = {"Authorization": f"Bearer {token}"}
            return lambda: client.post(f"/v1/payouts/{payout_id}/approve", headers=headers)

        replies = race(
            [
                approve(first, "bob"),
                approve(second, "carol"),
                approve(first, "dave"),
                approve(second, "erin"),
            ]
        )
        statuses = sorted(reply.status_code for reply in replies)
        assert statuses == [200, 409, 409, 409], [reply.text for reply in replies]
        winner = next(reply.json() for reply in replies if reply.status_code == 200)
        for reply in replies:
            if reply.status_code == 409:
                assert reply.json()["error"]["code"] in {"payout_approved", "conflict"}

        auditor = mint_token(SECRET, sub="auditor-1", roles=["auditor"])
        state = second.get(
            f"/v1/accounts/{account_id}", headers={"Authorization": f"Bearer {auditor}"}
        ).json()
        assert state["balance"] == "100000.00"
        finance = mint_token(SECRET, sub="finance-1", roles=["finance"])
        lines = first.get(
            "/v1/ledger/entries",
            params={"account": f"liabilities:trader_payable:{trader_id}"},
            headers={"Authorization": f"Bearer {finance}"},
        ).json()["entries"]
        assert {line["entry_id"] for line in lines} == {f"{payout_id}:2"}
        assert sorted(line["credit"] for line in lines) == ["540.00", "800.00"]
        fetched = first.get(
            f"/v1/payouts/{payout_id}", headers={"Authorization": f"Bearer {finance}"}
        ).json()
        assert fetched["approved_by"] == winner["approved_by"]
    withdrawn = of_type(account_events(worker_a, account_id), TradingAccount.PayoutWithdrawn)
    assert len(withdrawn) == 1
