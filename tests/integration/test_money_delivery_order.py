"""Stripe deliveries are at least once and in any order: every order of the same set of
events, each delivered one to three times, must end in the same books and the same traders
as the in-order, once-only delivery (DESIGN.md, "Payment webhooks (Stripe)").

The ledger is driven directly (`PropLedger.apply_stripe_event`, as the webhook does after
verifying the signature) on a fresh SQLite file per run; the projections are then caught up
and compared: trial balance rows, trader statuses, wallets, account statuses, and the list
of unallocated payments.
"""

from __future__ import annotations

import copy
import itertools
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from domain.errors import NotFound
from ledger.app import PropLedger
from ledger.migrate import migrate
from projections.board import trader_accounts
from projections.journal import trial_balance
from projections.payments import unallocated
from projections.registry import default_projections
from projections.runner import ProjectionRunner
from projections.store import Database
from tests import stripe_payloads as sp
from tests.support import program_body

PROGRAM = program_body("order-100k")
PROGRAM_ID = str(PROGRAM["program_id"])
TRADERS = ("trader-a", "trader-b")


@dataclass(frozen=True)
class Outcome:
    rows: list[dict[str, Any]]
    totals: list[dict[str, Any]]
    traders: dict[str, str]
    wallets: dict[str, dict[str, str]]
    accounts: dict[str, str]
    unallocated: list[str]


def run(directory: Path, deliveries: list[dict[str, Any]], traders: tuple[str, ...]) -> Outcome:
    """Delivers `deliveries` in this order to a fresh ledger; returns what it ends with."""
    url = f"sqlite:///{directory.resolve()}/propledger.db"
    migrate(url)
    ledger = PropLedger(url)
    database = Database(url)
    try:
        ledger.define_program(copy.deepcopy(PROGRAM))
        for payload in deliveries:
            ledger.apply_stripe_event(copy.deepcopy(payload))
        ProjectionRunner(ledger, database, default_projections()).catch_up()
        books = trial_balance(database)
        statuses: dict[str, str] = {}
        wallets: dict[str, dict[str, str]] = {}
        accounts: dict[str, str] = {}
        for trader_id in traders:
            try:
                trader = ledger.trader(trader_id)
            except NotFound:
                statuses[trader_id] = "unknown"
                continue
            statuses[trader_id] = trader.status
            wallets[trader_id] = {
                currency: str(trader.wallet_balance(currency).amount)
                for currency in sorted(trader.wallet)
            }
            for state in trader_accounts(database, trader_id):
                accounts[state["account_id"]] = state["status"]
                live = ledger.account(state["account_id"]).board()["status"]
                assert live == state["status"], "the board lags the account"
        return Outcome(
            rows=books["rows"],
            totals=books["totals"],
            traders=statuses,
            wallets=wallets,
            accounts=accounts,
            unallocated=sorted(item["payment_id"] for item in unallocated(database)),
        )
    finally:
        database.close()
        ledger.close()


def assert_books_balance(outcome: Outcome) -> None:
    for total in outcome.totals:
        assert total["debit"] == total["credit"], total


# Scenarios --------------------------------------------------------------------------------


@dataclass(frozen=True)
class PaymentPlan:
    kind: str  # challenge | deposit | unallocated
    trader_id: str
    currency: str
    amount: int
    refunds: tuple[int, ...]  # cumulative amount_refunded reports, increasing
    deposit_via_intent: bool
    dispute: tuple[bool, bool, str | None] | None  # (withdrawn, reinstated, closed)
    fee: int


def payment_events(plan: PaymentPlan) -> list[dict[str, Any]]:
    """The Stripe events of one payment, in the order Stripe would send them."""
    metadata: dict[str, str] = {}
    if plan.kind == "challenge":
        metadata = {"trader_id": plan.trader_id, "program_id": PROGRAM_ID}
    elif plan.kind == "deposit":
        metadata = {"trader_id": plan.trader_id, "purpose": "wallet_deposit"}
    payment = sp.StripePayment(plan.amount, plan.currency, metadata)
    events = [payment.checkout_completed()]
    if plan.deposit_via_intent:
        events.append(payment.intent_succeeded())
    previous = 0
    for cumulative in plan.refunds:
        parts = [cumulative - previous] + ([previous] if previous else [])
        events.append(payment.refunded(cumulative, parts))
        previous = cumulative
    if plan.dispute is not None:
        withdrawn, reinstated, closed = plan.dispute
        dispute_id = sp.new_id("dp_")
        kinds = ["charge.dispute.created"]
        if withdrawn:
            kinds.append("charge.dispute.funds_withdrawn")
            if reinstated:
                kinds.append("charge.dispute.funds_reinstated")
        for event_type in kinds:
            events.append(payment.dispute_event(event_type, dispute_id, fee=plan.fee))
        if closed is not None:
            events.append(payment.dispute_event("charge.dispute.closed", dispute_id, status=closed))
    return events


@st.composite
def payment_plans(draw: st.DrawFn) -> PaymentPlan:
    kind = draw(st.sampled_from(["challenge", "deposit", "unallocated"]))
    currency = draw(st.sampled_from(["usd", "jpy"])) if kind == "deposit" else "usd"
    amount = draw(st.sampled_from([54000, 20000, 999] if currency == "usd" else [5000, 120000]))
    refunds = tuple(
        sorted(draw(st.lists(st.integers(1, amount), min_size=0, max_size=2, unique=True)))
    )
    dispute = draw(
        st.none() | st.tuples(st.booleans(), st.booleans(), st.sampled_from([None, "won", "lost"]))
    )
    return PaymentPlan(
        kind=kind,
        trader_id=draw(st.sampled_from(TRADERS)),
        currency=currency,
        amount=amount,
        refunds=refunds,
        deposit_via_intent=kind == "deposit" and draw(st.booleans()),
        dispute=dispute,
        fee=draw(st.sampled_from([0, 1500])) if currency == "usd" else 2000,
    )


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(the events once and in order, the same events 1-3 times each in a random order)."""
    in_order: list[dict[str, Any]] = []
    for plan in draw(st.lists(payment_plans(), min_size=1, max_size=4)):
        in_order.extend(payment_events(plan))
    copies = [index for index in range(len(in_order)) for _ in range(draw(st.integers(1, 3)))]
    shuffled = draw(st.permutations(copies))
    return in_order, [in_order[index] for index in shuffled]


@settings(
    max_examples=25,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(scenario=scenarios())
def test_any_order_and_any_repetition_of_stripe_events_ends_in_the_same_books_and_traders(
    scenario: tuple[list[dict[str, Any]], list[dict[str, Any]]],
) -> None:
    in_order, shuffled = scenario
    with tempfile.TemporaryDirectory() as first, tempfile.TemporaryDirectory() as second:
        expected = run(Path(first), in_order, TRADERS)
        actual = run(Path(second), shuffled, TRADERS)
    assert_books_balance(expected)
    assert_books_balance(actual)
    assert actual.rows == expected.rows
    assert actual.traders == expected.traders
    assert actual.wallets == expected.wallets
    assert actual.accounts == expected.accounts
    assert actual.unallocated == expected.unallocated


# One disputed challenge, every order -------------------------------------------------------

LIFECYCLE = ("checkout", "created", "withdrawn", "closed_lost")


@pytest.mark.parametrize(
    "order",
    [pytest.param(order, id="-".join(order)) for order in itertools.permutations(LIFECYCLE)],
)
def test_every_order_of_one_disputed_challenge_ends_the_same(
    tmp_path: Path, order: tuple[str, ...]
) -> None:
    payment = sp.StripePayment(54000, "usd", {"trader_id": "trader-a", "program_id": PROGRAM_ID})
    dispute_id = sp.new_id("dp_")
    events = {
        "checkout": payment.checkout_completed(),
        "created": payment.dispute_event("charge.dispute.created", dispute_id),
        "withdrawn": payment.dispute_event("charge.dispute.funds_withdrawn", dispute_id),
        "closed_lost": payment.dispute_event("charge.dispute.closed", dispute_id, status="lost"),
    }
    (tmp_path / "in_order").mkdir()
    (tmp_path / "this_order").mkdir()
    expected = run(tmp_path / "in_order", [events[name] for name in LIFECYCLE], ("trader-a",))
    actual = run(tmp_path / "this_order", [events[name] for name in order], ("trader-a",))

    assert expected.traders == {"trader-a": "suspended"}
    assert list(expected.accounts.values()) == ["suspended"]
    assert {(row["account"], row["balance"]) for row in expected.rows} == {
        ("assets:processor", "-15.00"),
        ("revenue:challenge_fees", "-540.00"),
        ("expenses:chargebacks", "540.00"),
        ("expenses:processor_fees", "15.00"),
    }
    assert actual == expected
