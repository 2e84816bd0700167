"""The money read models on SQLite and PostgreSQL: a history of purchases, deposits, refunds,
an allocation and disputes books exactly the DESIGN.md entries, and rebuilding the journal
and payment projections (every projection, in fact) from zero gives identical rows.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from ledger.app import PropLedger
from ledger.migrate import migrate
from projections.board import all_rows
from projections.journal import entry_lines, trial_balance
from projections.payments import unallocated
from projections.registry import default_projections
from projections.runner import ProjectionRunner
from projections.store import Database
from tests import stripe_payloads as sp
from tests.support import BACKENDS, backend_url, program_body, purchase_body, uid


@dataclass
class History:
    ledger: PropLedger
    database: Database
    runner: ProjectionRunner
    traders: dict[str, str]  # role in the story -> trader id
    unallocated_intent: str


@pytest.fixture(scope="module", params=BACKENDS)
def history(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[History]:
    url = backend_url(request, tmp_path_factory)
    migrate(url)
    ledger = PropLedger(url)
    database = Database(url)
    runner = ProjectionRunner(ledger, database, default_projections(), batch_size=7)
    try:
        yield _record_history(ledger, database, runner)
    finally:
        database.close()
        ledger.close()


def _record_history(ledger: PropLedger, database: Database, runner: ProjectionRunner) -> History:
    program = program_body()
    program_id = str(program["program_id"])
    ledger.define_program(program)
    traders = {role: uid(f"trader-{role}-") for role in ("a", "b", "c", "d", "e")}

    def apply(payload: dict[str, Any]) -> None:
        ledger.apply_stripe_event(payload)

    def challenge(role: str) -> sp.StripePayment:
        return sp.StripePayment(
            54000, "usd", {"trader_id": traders[role], "program_id": program_id}
        )

    # a: a challenge at Stripe, 100.00 of it refunded; a deposit of 1000.00 (announced by the
    # PaymentIntent), 540.00 of it spent on a wallet purchase, 200.00 refunded; 5000 JPY.
    paid = challenge("a")
    apply(paid.checkout_completed())
    apply(paid.refunded(10000))
    topped_up = sp.StripePayment(
        100000, "usd", {"trader_id": traders["a"], "purpose": "wallet_deposit"}
    )
    apply(topped_up.intent_succeeded())
    ledger.purchase(
        purchase_body(program_id, trader_id=traders["a"], method="wallet", amount="540.00")
    )
    apply(topped_up.refunded(20000))
    yen = sp.StripePayment(5000, "jpy", {"trader_id": traders["a"], "purpose": "wallet_deposit"})
    apply(yen.checkout_completed())
    # b: a payment that matched nobody, allocated by finance.
    unmatched = sp.StripePayment(54000, "usd", {})
    apply(unmatched.checkout_completed())
    ledger.allocate_payment(
        unmatched.intent, {"trader_id": traders["b"], "program_id": program_id}, "finance-1"
    )
    # c: a dispute withdrawn with a 15.00 fee, reinstated, won.
    won = challenge("c")
    apply(won.checkout_completed())
    for event_type in (
        "charge.dispute.created",
        "charge.dispute.funds_withdrawn",
        "charge.dispute.funds_reinstated",
    ):
        apply(won.dispute_event(event_type, "dp_won_" + traders["c"]))
    apply(won.dispute_event("charge.dispute.closed", "dp_won_" + traders["c"], status="won"))
    # d: a dispute withdrawn and lost; an admin reinstates the trader.
    lost = challenge("d")
    apply(lost.checkout_completed())
    apply(lost.dispute_event("charge.dispute.created", "dp_lost_" + traders["d"]))
    apply(lost.dispute_event("charge.dispute.funds_withdrawn", "dp_lost_" + traders["d"]))
    apply(lost.dispute_event("charge.dispute.closed", "dp_lost_" + traders["d"], status="lost"))
    ledger.reinstate_trader(traders["d"], "admin-1")
    # e: a bank transfer recorded by finance; an unknown event type in passing.
    ledger.purchase(purchase_body(program_id, trader_id=traders["e"], method="manual"))
    apply(sp.event("customer.created", {"id": sp.new_id("cus_"), "object": "customer"}))
    # One more unmatched payment, left for finance.
    pending = sp.StripePayment(31415, "usd", {})
    apply(pending.checkout_completed())

    runner.catch_up()
    return History(ledger, database, runner, traders, pending.intent)


def snapshot(database: Database) -> dict[str, Any]:
    return {
        "trial_balance": trial_balance(database),
        "entries": database.query("SELECT * FROM journal_entries ORDER BY entry_id"),
        "lines": database.query("SELECT * FROM journal_lines ORDER BY entry_id, line_no"),
        "payments": database.query("SELECT * FROM payment_board ORDER BY payment_id"),
        "accounts": all_rows(database),
    }


def test_the_history_books_exactly_the_design_entries(history: History) -> None:
    a = history.traders["a"]
    wallet = f"liabilities:trader_wallet:{a}"
    rows = {
        (row["account"], row["currency"]): row for row in trial_balance(history.database)["rows"]
    }
    assert {key: (row["debit"], row["credit"]) for key, row in rows.items()} == {
        ("assets:bank", "USD"): ("540.00", "0.00"),
        ("assets:processor", "JPY"): ("5000", "0"),
        # In: 540 + 1000 + 540 + 540 + 540 + 314.15 + 540 reinstated;
        # out: refunds 100 + 200, two chargebacks of 540 + 15 fee.
        ("assets:processor", "USD"): ("4014.15", "1410.00"),
        ("expenses:chargebacks", "USD"): ("1080.00", "540.00"),
        ("expenses:processor_fees", "USD"): ("30.00", "0.00"),
        (wallet, "JPY"): ("0", "5000"),
        (wallet, "USD"): ("740.00", "1000.00"),
        ("liabilities:unallocated", "USD"): ("540.00", "854.15"),
        ("revenue:challenge_fees", "USD"): ("0.00", "3240.00"),
        ("revenue:refunds", "USD"): ("100.00", "0.00"),
    }
    assert trial_balance(history.database)["totals"] == [
        {"currency": "JPY", "debit": "5000", "credit": "5000"},
        {"currency": "USD", "debit": "7044.15", "credit": "7044.15"},
    ]
    assert [item["payment_id"] for item in unallocated(history.database)] == [
        history.unallocated_intent
    ]
    traders = {role: history.ledger.trader(tid) for role, tid in history.traders.items()}
    assert {role: trader.status for role, trader in traders.items()} == dict.fromkeys(
        history.traders, "active"
    )
    assert str(traders["a"].wallet_balance("USD").amount) == "260.00"
    assert str(traders["a"].wallet_balance("JPY").amount) == "5000"


def test_rebuilding_every_projection_from_zero_gives_identical_rows(history: History) -> None:
    before = snapshot(history.database)
    assert before["lines"]
    assert before["payments"]

    for projection in history.runner.projections:
        history.runner.rebuild(projection)

    assert snapshot(history.database) == before
    assert history.runner.catch_up() == 0


def test_a_second_runner_rebuilding_into_the_same_tables_agrees(history: History) -> None:
    before = snapshot(history.database)
    fresh = ProjectionRunner(history.ledger, history.database, default_projections())
    for projection in fresh.projections:
        if projection.name in ("journal", "payment_board"):
            fresh.rebuild(projection)
    assert snapshot(history.database) == before


def test_the_entries_listing_pages_through_every_line_once_in_log_order(history: History) -> None:
    everything = entry_lines(history.database, account=None, after=None, limit=10_000)
    paged: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        page = entry_lines(history.database, account=None, after=cursor, limit=3)
        paged.extend(page)
        if len(page) < 3:
            break
        cursor = page[-1]["cursor"]
    assert paged == everything
    positions = [(line["position"], line["line"]) for line in everything]
    assert positions == sorted(positions)
    assert len(set(positions)) == len(positions)
