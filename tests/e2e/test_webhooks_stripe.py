"""Stripe webhooks end to end: signed deliveries through the real app (migrations, ledger,
in-process projection worker) on an SQLite file and on PostgreSQL, and the money they book
as seen through the trial balance, the journal entries and the traders' accounts.

Every test uses its own traders, payments and events (uuid ids) on a database shared by the
module, so money movements are asserted as changes of the trial balance, and after every
test the whole trial balance must still balance per currency.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from domain.ids import first_account_id
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
    trade_body,
    uid,
)

ADMIN = auth("admin")
FINANCE = auth("finance")
AUDITOR = auth("auditor")
PLATFORM = auth("platform")

Balances = dict[tuple[str, str], Decimal]


@pytest.fixture(scope="module", params=BACKENDS)
def client(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TestClient]:
    url = backend_url(request, tmp_path_factory)
    app = create_app(
        Settings(
            propledger_database_url=url,
            propledger_jwt_secret=SECRET,
            stripe_webhook_secret=sp.WEBHOOK_SECRET,
        )
    )
    with TestClient(app) as started:
        yield started


@pytest.fixture(scope="module")
def program_id(client: TestClient) -> str:
    body = program_body()
    response = client.post("/v1/programs", json=body, headers=ADMIN)
    assert response.status_code == 201, response.text
    return str(body["program_id"])


@pytest.fixture(autouse=True)
def books_balance_after_each_test(client: TestClient) -> Iterator[None]:
    yield
    assert_trial_balance_balances(trial_balance(client))


# Helpers --------------------------------------------------------------------------------


def deliver(
    client: TestClient,
    payload: dict[str, Any],
    *,
    secret: str = sp.WEBHOOK_SECRET,
    timestamp: int | None = None,
) -> Any:
    """Posts `payload` exactly as signed, the way Stripe delivers it."""
    body = sp.body_of(payload)
    header = sp.signature(body, secret, timestamp=timestamp)
    return client.post(
        "/v1/webhooks/stripe",
        content=body,
        headers={"Stripe-Signature": header, "Content-Type": "application/json"},
    )


def delivered(client: TestClient, payload: dict[str, Any]) -> dict[str, Any]:
    response = deliver(client, payload)
    assert response.status_code == 200, response.text
    reply: dict[str, Any] = response.json()
    assert reply["received"] is True
    assert reply["event_id"] == payload["id"]
    return reply


def trial_balance(client: TestClient, as_of: str | None = None) -> dict[str, Any]:
    params = {"as_of": as_of} if as_of else None
    response = client.get("/v1/ledger/trial-balance", params=params, headers=FINANCE)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def assert_trial_balance_balances(body: dict[str, Any]) -> None:
    """Debits equal credits per currency, rows add up to the totals, balance = debit - credit."""
    sums: dict[str, list[Decimal]] = {}
    for row in body["rows"]:
        debit, credit = Decimal(row["debit"]), Decimal(row["credit"])
        assert Decimal(row["balance"]) == debit - credit, row
        total = sums.setdefault(row["currency"], [Decimal(0), Decimal(0)])
        total[0] += debit
        total[1] += credit
    totals = {item["currency"]: item for item in body["totals"]}
    assert set(totals) == set(sums)
    for currency, (debit, credit) in sums.items():
        assert debit == credit, f"{currency}: debits {debit} != credits {credit}"
        assert Decimal(totals[currency]["debit"]) == debit
        assert Decimal(totals[currency]["credit"]) == credit


def balances(client: TestClient, as_of: str | None = None) -> Balances:
    body = trial_balance(client, as_of)
    assert_trial_balance_balances(body)
    return {(row["account"], row["currency"]): Decimal(row["balance"]) for row in body["rows"]}


def change(before: Balances, after: Balances) -> dict[str, Decimal]:
    """Balance changes (debit positive) per 'account currency', zero changes left out."""
    moved: dict[str, Decimal] = {}
    for key in set(before) | set(after):
        delta = after.get(key, Decimal(0)) - before.get(key, Decimal(0))
        if delta:
            moved[f"{key[0]} {key[1]}"] = delta
    return moved


def trader(client: TestClient, trader_id: str) -> dict[str, Any]:
    response = client.get(f"/v1/traders/{trader_id}", headers=AUDITOR)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def trader_accounts(client: TestClient, trader_id: str) -> list[dict[str, Any]]:
    response = client.get(f"/v1/traders/{trader_id}/accounts", headers=AUDITOR)
    assert response.status_code == 200, response.text
    accounts: list[dict[str, Any]] = response.json()["accounts"]
    return accounts


def wallet(client: TestClient, trader_id: str, currency: str = "USD") -> Decimal:
    for item in trader(client, trader_id)["wallet"]:
        if item["currency"] == currency:
            return Decimal(item["balance"])
    return Decimal(0)


def account_events(client: TestClient, account_id: str) -> list[dict[str, Any]]:
    response = client.get(f"/v1/accounts/{account_id}/events", headers=AUDITOR)
    assert response.status_code == 200, response.text
    events: list[dict[str, Any]] = response.json()["events"]
    return events


def challenge(trader_id: str, program_id: str, amount: int = 54000) -> sp.StripePayment:
    return sp.StripePayment(amount, "usd", {"trader_id": trader_id, "program_id": program_id})


def deposit(trader_id: str, amount: int, currency: str = "usd") -> sp.StripePayment:
    return sp.StripePayment(amount, currency, {"trader_id": trader_id, "purpose": "wallet_deposit"})


def unallocated_ids(client: TestClient) -> set[str]:
    response = client.get("/v1/payments/unallocated", headers=FINANCE)
    assert response.status_code == 200, response.text
    return {item["payment_id"] for item in response.json()["payments"]}


PROCESSOR = "assets:processor USD"
FEES = "revenue:challenge_fees USD"


# Challenge purchases ----------------------------------------------------------------------


def test_a_completed_checkout_for_a_trader_and_program_opens_phase_1_and_books_the_fee(
    client: TestClient, program_id: str
) -> None:
    trader_id = uid("trader-")
    payment = challenge(trader_id, program_id)
    before = balances(client)

    reply = delivered(client, payment.checkout_completed())

    assert reply["duplicate"] is False
    assert reply["outcome"] == "challenge"
    accounts = trader_accounts(client, trader_id)
    assert len(accounts) == 1
    account = accounts[0]
    assert account["account_id"] == str(first_account_id(f"stripe:{payment.intent}"))
    assert (account["program_id"], account["stage"], account["status"]) == (
        program_id,
        "phase-1",
        "active",
    )
    assert account["initial_balance"] == "100000.00"
    assert change(before, balances(client)) == {
        PROCESSOR: Decimal("540.00"),
        FEES: -Decimal("540.00"),
    }
    assert trader(client, trader_id)["status"] == "active"


def test_a_manual_purchase_cannot_take_the_id_of_a_stripe_payments_account(
    client: TestClient, program_id: str
) -> None:
    """A Stripe challenge's account is keyed by `stripe:` and its PaymentIntent id; a
    purchase recorded by hand under that id would take the account, and the payment could
    never be booked (a 500 on every delivery). Such an id is refused."""
    trader_id = uid("trader-")
    payment = challenge(trader_id, program_id)
    body = {
        "purchase_id": f"stripe:{payment.intent}",
        "trader_id": trader_id,
        "program_id": program_id,
        "method": "manual",
        "amount": "540.00",
        "currency": "USD",
    }
    refused = client.post("/v1/purchases", json=body, headers=FINANCE)
    assert refused.status_code == 422, refused.text
    assert refused.json()["error"]["details"] == {"field": "purchase_id"}
    assert delivered(client, payment.checkout_completed())["outcome"] == "challenge"
    (account,) = trader_accounts(client, trader_id)
    assert account["account_id"] == str(first_account_id(f"stripe:{payment.intent}"))


def test_the_same_event_delivered_again_changes_nothing(
    client: TestClient, program_id: str
) -> None:
    trader_id = uid("trader-")
    payload = challenge(trader_id, program_id).checkout_completed()
    delivered(client, payload)
    (account,) = trader_accounts(client, trader_id)
    events_before = account_events(client, account["account_id"])
    before = balances(client)

    again = delivered(client, payload)

    assert again["duplicate"] is True
    assert balances(client) == before
    assert account_events(client, account["account_id"]) == events_before
    assert trader_accounts(client, trader_id) == [account]


def test_a_second_event_for_the_same_payment_books_it_once(
    client: TestClient, program_id: str
) -> None:
    trader_id = uid("trader-")
    payment = challenge(trader_id, program_id)
    delivered(client, payment.checkout_completed())
    before = balances(client)

    reply = delivered(client, payment.checkout_completed())  # a new event id, same payment

    assert reply["duplicate"] is False
    assert balances(client) == before
    assert len(trader_accounts(client, trader_id)) == 1


@pytest.mark.parametrize(
    "problem", ["missing", "wrong_secret", "stale", "tampered_body", "not_v1_scheme"]
)
def test_a_delivery_without_a_valid_signature_gets_400_and_stores_nothing(
    client: TestClient, program_id: str, problem: str
) -> None:
    trader_id = uid("trader-")
    payload = challenge(trader_id, program_id).checkout_completed()
    body = sp.body_of(payload)
    now = int(time.time())
    headers = {"Content-Type": "application/json"}
    if problem == "wrong_secret":
        headers["Stripe-Signature"] = sp.signature(body, "whsec_test_someone_else")
    elif problem == "stale":
        headers["Stripe-Signature"] = sp.signature(body, timestamp=now - 301)
    elif problem == "tampered_body":
        headers["Stripe-Signature"] = sp.signature(body)
        body = body.replace('"amount_total":54000', '"amount_total":5400000')
        assert "5400000" in body
    elif problem == "not_v1_scheme":
        headers["Stripe-Signature"] = sp.signature(body).replace(",v1=", ",v0=")
    before = balances(client)

    response = client.post("/v1/webhooks/stripe", content=body, headers=headers)

    assert_error(response, 400)
    assert balances(client) == before
    assert_error(client.get(f"/v1/traders/{trader_id}", headers=AUDITOR), 404, "unknown_trader")
    # The refused event id was not remembered either: a valid delivery of it is applied.
    assert delivered(client, payload)["duplicate"] is False
    assert len(trader_accounts(client, trader_id)) == 1


def test_a_signed_body_that_is_not_json_gets_400_and_stores_nothing(client: TestClient) -> None:
    body = "this is not json"
    before = balances(client)
    response = client.post(
        "/v1/webhooks/stripe", content=body, headers={"Stripe-Signature": sp.signature(body)}
    )
    assert_error(response, 400, "malformed_json")
    assert balances(client) == before


def test_a_signature_just_inside_the_tolerance_is_accepted(
    client: TestClient, program_id: str
) -> None:
    trader_id = uid("trader-")
    payload = challenge(trader_id, program_id).checkout_completed()
    response = deliver(client, payload, timestamp=int(time.time()) - 240)
    assert response.status_code == 200, response.text
    assert len(trader_accounts(client, trader_id)) == 1


@pytest.mark.parametrize(
    "event_type", ["customer.created", "invoice.payment_succeeded", "charge.succeeded"]
)
def test_an_unknown_event_type_is_acknowledged_and_books_nothing(
    client: TestClient, event_type: str
) -> None:
    before = balances(client)
    payload = sp.event(event_type, {"id": sp.new_id("obj_"), "object": "thing"})
    reply = delivered(client, payload)
    assert (reply["outcome"], reply["duplicate"]) == ("recorded", False)
    assert balances(client) == before
    assert delivered(client, payload)["duplicate"] is True


def test_a_fully_discounted_checkout_opens_the_account_and_books_nothing(
    client: TestClient, program_id: str
) -> None:
    trader_id = uid("trader-")
    payment = challenge(trader_id, program_id, amount=0)
    before = balances(client)
    payload = payment.checkout_completed(payment_status="no_payment_required", payment_intent=None)

    reply = delivered(client, payload)

    assert reply["outcome"] == "challenge"
    assert balances(client) == before
    assert [account["stage"] for account in trader_accounts(client, trader_id)] == ["phase-1"]


def test_a_checkout_paid_asynchronously_is_booked_when_its_payment_succeeds(
    client: TestClient, program_id: str
) -> None:
    trader_id = uid("trader-")
    payment = challenge(trader_id, program_id)
    before = balances(client)
    delivered(client, payment.checkout_completed(payment_status="unpaid"))
    assert balances(client) == before  # not paid yet: nothing to book

    succeeded = sp.checkout_session(
        amount=payment.amount, metadata=payment.metadata, payment_intent=payment.intent
    )
    delivered(client, sp.event("checkout.session.async_payment_succeeded", succeeded))
    delivered(client, payment.intent_succeeded())

    assert change(before, balances(client)) == {
        PROCESSOR: Decimal("540.00"),
        FEES: -Decimal("540.00"),
    }
    assert len(trader_accounts(client, trader_id)) == 1


# Wallet -----------------------------------------------------------------------------------


def test_a_wallet_deposit_then_a_wallet_purchase_books_the_wallet_against_fees(
    client: TestClient, program_id: str
) -> None:
    trader_id = uid("trader-")
    wallet_account = f"liabilities:trader_wallet:{trader_id} USD"
    before = balances(client)

    reply = delivered(client, deposit(trader_id, 60000).checkout_completed())

    assert reply["outcome"] == "deposit"
    assert wallet(client, trader_id) == Decimal("600.00")
    after_deposit = balances(client)
    assert change(before, after_deposit) == {
        PROCESSOR: Decimal("600.00"),
        wallet_account: -Decimal("600.00"),
    }

    body = purchase_body(program_id, trader_id=trader_id, method="wallet", amount="540.00")
    response = client.post("/v1/purchases", json=body, headers=FINANCE)

    assert response.status_code == 201, response.text
    assert response.json()["account"]["stage"] == "phase-1"
    assert wallet(client, trader_id) == Decimal("60.00")
    assert change(after_deposit, balances(client)) == {
        wallet_account: Decimal("540.00"),
        FEES: -Decimal("540.00"),
    }
    assert len(trader_accounts(client, trader_id)) == 1


def test_a_wallet_purchase_larger_than_the_wallet_is_refused_and_books_nothing(
    client: TestClient, program_id: str
) -> None:
    trader_id = uid("trader-")
    delivered(client, deposit(trader_id, 50000).checkout_completed())
    before = balances(client)
    body = purchase_body(program_id, trader_id=trader_id, method="wallet", amount="540.00")

    response = client.post("/v1/purchases", json=body, headers=FINANCE)

    error = assert_error(response, 422, "insufficient_funds")
    assert error["details"] == {"wallet_balance": "500.00", "required": "540.00"}
    assert balances(client) == before
    assert wallet(client, trader_id) == Decimal("500.00")
    assert trader_accounts(client, trader_id) == []
    missing = client.get(f"/v1/accounts/{first_account_id(body['purchase_id'])}", headers=AUDITOR)
    assert_error(missing, 404)


def test_a_suspended_traders_wallet_cannot_be_spent_until_the_dispute_is_won(
    client: TestClient, program_id: str
) -> None:
    """A dispute on a deposit suspends its trader; the disputed money may be the very
    money a wallet purchase would spend."""
    trader_id = uid("trader-")
    payment = deposit(trader_id, 60000)
    delivered(client, payment.checkout_completed())
    dispute_id = sp.new_id("dp_")
    delivered(client, payment.dispute_event("charge.dispute.created", dispute_id))
    before = balances(client)
    body = purchase_body(program_id, trader_id=trader_id, method="wallet", amount="540.00")
    assert_error(client.post("/v1/purchases", json=body, headers=FINANCE), 409, "trader_suspended")
    assert balances(client) == before
    assert wallet(client, trader_id) == Decimal("600.00")

    delivered(client, payment.dispute_event("charge.dispute.closed", dispute_id, status="won"))
    assert client.post("/v1/purchases", json=body, headers=FINANCE).status_code == 201
    assert wallet(client, trader_id) == Decimal("60.00")


def test_a_deposit_reported_by_both_checkout_and_payment_intent_is_credited_once(
    client: TestClient,
) -> None:
    trader_id = uid("trader-")
    payment = deposit(trader_id, 25000)
    before = balances(client)

    assert delivered(client, payment.intent_succeeded())["outcome"] == "deposit"
    delivered(client, payment.checkout_completed())

    assert wallet(client, trader_id) == Decimal("250.00")
    assert change(before, balances(client)) == {
        PROCESSOR: Decimal("250.00"),
        f"liabilities:trader_wallet:{trader_id} USD": -Decimal("250.00"),
    }


@pytest.mark.parametrize(
    ("currency", "minor_units", "amount"),
    [
        ("jpy", 5000, "5000"),
        ("kwd", 12345, "12.345"),
        # Stripe's units, not ISO 4217's: MGA has no decimals at Stripe (two in ISO), and
        # ISK is sent in hundredths (none in ISO).
        ("mga", 10000, "10000.00"),
        ("isk", 10000, "100"),
    ],
)
def test_a_deposit_in_a_currency_without_two_decimals_is_booked_in_its_own_minor_unit(
    client: TestClient, currency: str, minor_units: int, amount: str
) -> None:
    trader_id = uid("trader-")
    code = currency.upper()
    before = balances(client)
    delivered(client, deposit(trader_id, minor_units, currency).checkout_completed())
    assert wallet(client, trader_id, code) == Decimal(amount)
    assert change(before, balances(client)) == {
        f"assets:processor {code}": Decimal(amount),
        f"liabilities:trader_wallet:{trader_id} {code}": -Decimal(amount),
    }
    wallet_row = [
        row
        for row in trial_balance(client)["rows"]
        if row["account"] == f"liabilities:trader_wallet:{trader_id}"
    ]
    assert wallet_row == [
        {
            "account": f"liabilities:trader_wallet:{trader_id}",
            "currency": code,
            "debit": str(Decimal(0).quantize(Decimal(amount))),
            "credit": amount,
            "balance": f"-{amount}",
        }
    ]


def test_a_partial_then_full_refund_of_a_deposit_leaves_the_wallet_once_each(
    client: TestClient,
) -> None:
    trader_id = uid("trader-")
    payment = deposit(trader_id, 20000)
    delivered(client, payment.checkout_completed())
    before = balances(client)
    partial = payment.refunded(5000)
    full = payment.refunded(20000, [15000, 5000])

    delivered(client, full)  # the later report first
    delivered(client, partial)
    delivered(client, partial)

    assert wallet(client, trader_id) == Decimal("0.00")
    assert change(before, balances(client)) == {
        PROCESSOR: -Decimal("200.00"),
        f"liabilities:trader_wallet:{trader_id} USD": Decimal("200.00"),
    }


def test_a_refund_of_a_challenge_fee_books_refunds_against_the_processor(
    client: TestClient, program_id: str
) -> None:
    payment = challenge(uid("trader-"), program_id)
    delivered(client, payment.checkout_completed())
    before = balances(client)
    delivered(client, payment.refunded(10000))
    delivered(client, payment.refunded(54000, [44000, 10000]))
    assert change(before, balances(client)) == {
        PROCESSOR: -Decimal("540.00"),
        "revenue:refunds USD": Decimal("540.00"),
    }


# Unallocated payments ------------------------------------------------------------------


def test_an_unmatched_payment_is_listed_and_finance_allocates_it_to_a_trader_and_program(
    client: TestClient, program_id: str
) -> None:
    payment = sp.StripePayment(54000, "usd", {})
    before = balances(client)

    reply = delivered(client, payment.checkout_completed())

    assert reply["outcome"] == "unallocated"
    after_receipt = balances(client)
    assert change(before, after_receipt) == {
        PROCESSOR: Decimal("540.00"),
        "liabilities:unallocated USD": -Decimal("540.00"),
    }
    listed = client.get("/v1/payments/unallocated", headers=FINANCE).json()["payments"]
    (item,) = [item for item in listed if item["payment_id"] == payment.intent]
    assert (item["purpose"], item["amount"], item["currency"]) == ("unallocated", "540.00", "USD")

    trader_id = uid("trader-")
    allocation = {"trader_id": trader_id, "program_id": program_id}
    refused = client.post(
        f"/v1/payments/{payment.intent}/allocate", json=allocation, headers=PLATFORM
    )
    assert_error(refused, 403)

    response = client.post(
        f"/v1/payments/{payment.intent}/allocate", json=allocation, headers=FINANCE
    )

    assert response.status_code == 201, response.text
    allocated = response.json()
    assert (allocated["trader_id"], allocated["program_id"]) == (trader_id, program_id)
    assert change(after_receipt, balances(client)) == {
        "liabilities:unallocated USD": Decimal("540.00"),
        FEES: -Decimal("540.00"),
    }
    (account,) = trader_accounts(client, trader_id)
    assert (account["account_id"], account["stage"], account["status"]) == (
        allocated["account_id"],
        "phase-1",
        "active",
    )
    assert payment.intent not in unallocated_ids(client)

    again = client.post(f"/v1/payments/{payment.intent}/allocate", json=allocation, headers=FINANCE)
    assert_error(again, 409, "not_unallocated")


def test_a_disputed_payment_allocated_to_another_trader_takes_its_dispute_along(
    client: TestClient, program_id: str
) -> None:
    """The payment named trader A (with a program the firm does not have: unallocated) and
    was disputed, which suspended A; finance found it was B's. The dispute is B's now: A is
    reinstated, B suspended until the dispute is won (until 2026-12-07 A stayed suspended
    for good, even after B won the dispute: no event could lift it)."""
    named, owner = uid("trader-"), uid("trader-")
    bought = client.post(
        "/v1/purchases", json=purchase_body(program_id, trader_id=named), headers=FINANCE
    )
    assert bought.status_code == 201, bought.text
    payment = challenge(named, uid("no-such-program-"))
    assert delivered(client, payment.checkout_completed())["outcome"] == "unallocated"
    dispute_id = sp.new_id("dp_")
    delivered(client, payment.dispute_event("charge.dispute.created", dispute_id))
    assert (trader(client, named)["status"], statuses(client, named)) == (
        "suspended",
        ["suspended"],
    )

    allocation = {"trader_id": owner, "program_id": program_id}
    allocated = client.post(
        f"/v1/payments/{payment.intent}/allocate", json=allocation, headers=FINANCE
    )
    assert allocated.status_code == 201, allocated.text

    assert (trader(client, named)["status"], statuses(client, named)) == ("active", ["active"])
    assert (trader(client, owner)["status"], statuses(client, owner)) == (
        "suspended",
        ["suspended"],
    )
    delivered(client, payment.dispute_event("charge.dispute.closed", dispute_id, status="won"))
    assert (trader(client, owner)["status"], statuses(client, owner)) == ("active", ["active"])
    assert trader(client, named)["status"] == "active"


def test_a_deposit_books_the_same_whichever_of_its_session_and_intent_comes_first(
    client: TestClient,
) -> None:
    """The session names the trader, the intent only the purpose: the deposit reaches the
    wallet in either order (an intent naming no trader books the money unallocated, and
    the session then moves it to the wallet). Alone, such an intent is booked unallocated
    and listed for finance: never dropped."""
    for intent_first in (True, False):
        trader_id = uid("trader-")
        payment = sp.StripePayment(
            25000, "usd", {"purpose": "wallet_deposit", "trader_id": trader_id}
        )
        intent = payment.intent_succeeded({"purpose": "wallet_deposit"})
        before = balances(client)
        events = [intent, payment.checkout_completed()]
        for event in events if intent_first else events[::-1]:
            delivered(client, event)
        assert change(before, balances(client)) == {
            PROCESSOR: Decimal("250.00"),
            f"liabilities:trader_wallet:{trader_id} USD": -Decimal("250.00"),
        }
        assert payment.intent not in unallocated_ids(client)

    alone = sp.StripePayment(25000, "usd", {})
    lone_intent = alone.intent_succeeded({"purpose": "wallet_deposit"})
    before = balances(client)
    assert delivered(client, lone_intent)["outcome"] == "unallocated"
    assert alone.intent in unallocated_ids(client)
    assert change(before, balances(client)) == {
        PROCESSOR: Decimal("250.00"),
        "liabilities:unallocated USD": -Decimal("250.00"),
    }


def test_a_completed_checkout_without_payment_status_is_taken_as_paid(
    client: TestClient, program_id: str
) -> None:
    """Hand-written payloads often leave the field out; `completed` means paid unless
    the session says `unpaid` (an asynchronous method, booked when its money arrives)."""
    trader_id = uid("trader-")
    payment = challenge(trader_id, program_id)
    payload = payment.checkout_completed()
    del payload["data"]["object"]["payment_status"]
    before = balances(client)
    delivered(client, payload)
    assert change(before, balances(client)) == {
        PROCESSOR: Decimal("540.00"),
        FEES: -Decimal("540.00"),
    }
    assert len(trader_accounts(client, trader_id)) == 1


def test_a_checkout_naming_an_unknown_program_is_booked_as_unallocated(
    client: TestClient,
) -> None:
    """Booked for finance to resolve, keeping what it named: the trader is registered
    (DESIGN: "a purchase or payment naming an unknown trader_id registers that trader")
    and the listing shows the trader and program the payer gave."""
    trader_id = uid("trader-")
    program = uid("no-such-program-")
    payment = challenge(trader_id, program)
    reply = delivered(client, payment.checkout_completed())
    assert reply["outcome"] == "unallocated"
    assert payment.intent in unallocated_ids(client)
    listed = client.get("/v1/payments/unallocated", headers=FINANCE).json()["payments"]
    item = next(item for item in listed if item["payment_id"] == payment.intent)
    assert (item["trader_id"], item["program_id"]) == (trader_id, program)
    assert client.get(f"/v1/traders/{trader_id}", headers=FINANCE).status_code == 200
    assert trader_accounts(client, trader_id) == []


def test_a_trader_id_with_a_colon_is_its_own_account_code_and_control_characters_are_not(
    client: TestClient,
) -> None:
    """`liabilities:trader_wallet:{trader_id}` with trader ids "T1" and "T1:x": filtered by
    T1's code, only T1's lines (a trader's code is a leaf); with a trailing ':' the code
    and those under it. An id with a control character names no trader (refused, or unallocated)."""
    base = uid("mt5-")
    for trader_id in (base, f"{base}:7"):
        delivered(client, deposit(trader_id, 10000).checkout_completed())
    code = f"liabilities:trader_wallet:{base}"

    def accounts_of(query: str) -> set[str]:
        reply = client.get("/v1/ledger/entries", params={"account": query}, headers=AUDITOR)
        assert reply.status_code == 200, reply.text
        return {line["account"] for line in reply.json()["entries"]}

    assert accounts_of(code) == {code}
    assert accounts_of(code + ":") == {code, code + ":7"}
    assert {code, code + ":7"} <= accounts_of("liabilities:trader_wallet")
    # Codes are case-sensitive on both stores (SQLite's LIKE ignored ASCII case).
    assert accounts_of("LIABILITIES:TRADER_WALLET") == set()
    assert accounts_of(code.upper() + ":") == set()

    # A control character; a trailing ':' (no leaf code); a '/', '.' or '..' (no URL
    # /v1/traders/{trader_id} could reach the trader: an audit found one registered so).
    for bad in ("T1\u0007", "T1:", "mt5/1001", ".", ".."):
        refused = client.post(
            "/v1/purchases", json=purchase_body(uid("p-"), trader_id=bad), headers=FINANCE
        )
        assert_error(refused, 422, "invalid_input")
    for bad in ("T2\u0007", "mt5/1002"):
        payment = challenge(bad, uid("p-"))
        assert delivered(client, payment.checkout_completed())["outcome"] == "unallocated"
        assert payment.intent in unallocated_ids(client)


def test_allocating_an_unknown_payment_is_404(client: TestClient, program_id: str) -> None:
    response = client.post(
        f"/v1/payments/{sp.new_id('pi_')}/allocate",
        json={"trader_id": uid("trader-"), "program_id": program_id},
        headers=FINANCE,
    )
    assert_error(response, 404, "unknown_payment")


# Disputes ---------------------------------------------------------------------------------


def open_two_accounts(client: TestClient, program_id: str) -> tuple[str, sp.StripePayment]:
    """A trader with a Stripe-paid account and a manually paid one."""
    trader_id = uid("trader-")
    payment = challenge(trader_id, program_id)
    delivered(client, payment.checkout_completed())
    response = client.post(
        "/v1/purchases", json=purchase_body(program_id, trader_id=trader_id), headers=FINANCE
    )
    assert response.status_code == 201, response.text
    assert len(trader_accounts(client, trader_id)) == 2
    return trader_id, payment


def statuses(client: TestClient, trader_id: str) -> list[str]:
    return [account["status"] for account in trader_accounts(client, trader_id)]


def test_a_dispute_suspends_the_trader_moves_the_money_and_a_won_dispute_reinstates(
    client: TestClient, program_id: str
) -> None:
    trader_id, payment = open_two_accounts(client, program_id)
    dispute_id = sp.new_id("dp_")

    delivered(client, payment.dispute_event("charge.dispute.created", dispute_id))

    assert trader(client, trader_id)["status"] == "suspended"
    assert statuses(client, trader_id) == ["suspended", "suspended"]
    account_id = trader_accounts(client, trader_id)[0]["account_id"]
    direct = client.get(f"/v1/accounts/{account_id}", headers=AUDITOR).json()
    assert direct["status"] == "suspended"
    # Payouts are blocked; the refusal names the suspended account and trader both.
    refused = client.post(f"/v1/accounts/{account_id}/payouts", headers=FINANCE)
    assert refused.status_code == 422, refused.text
    reasons = refused.json()["error"]["details"]["reasons"]
    assert {"not_active", "trader_suspended"} <= set(reasons), reasons

    # Trades keep arriving from the platform: they happened, so they are recorded.
    trade = client.post(
        f"/v1/accounts/{account_id}/trades",
        json=trade_body(profit="250.00"),
        headers=PLATFORM,
    )
    assert trade.status_code == 201, trade.text
    assert trade.json()["balance"] == "100250.00"
    assert trade.json()["status"] == "suspended"

    before = balances(client)
    delivered(client, payment.dispute_event("charge.dispute.funds_withdrawn", dispute_id))
    after_withdrawal = balances(client)
    assert change(before, after_withdrawal) == {
        "expenses:chargebacks USD": Decimal("540.00"),
        "expenses:processor_fees USD": Decimal("15.00"),
        PROCESSOR: -Decimal("555.00"),
    }

    delivered(client, payment.dispute_event("charge.dispute.funds_reinstated", dispute_id))
    assert change(after_withdrawal, balances(client)) == {
        PROCESSOR: Decimal("540.00"),
        "expenses:chargebacks USD": -Decimal("540.00"),
    }
    assert trader(client, trader_id)["status"] == "suspended"

    closed = payment.dispute_event("charge.dispute.closed", dispute_id, status="won")
    delivered(client, closed)

    assert trader(client, trader_id)["status"] == "active"
    assert statuses(client, trader_id) == ["active", "active"]
    balance = client.get(f"/v1/accounts/{account_id}", headers=AUDITOR).json()["balance"]
    assert balance == "100250.00"


def test_a_lost_dispute_keeps_the_trader_suspended_until_an_admin_reinstates(
    client: TestClient, program_id: str
) -> None:
    trader_id, payment = open_two_accounts(client, program_id)
    dispute_id = sp.new_id("dp_")
    delivered(client, payment.dispute_event("charge.dispute.created", dispute_id))
    delivered(client, payment.dispute_event("charge.dispute.funds_withdrawn", dispute_id))
    before = balances(client)

    delivered(client, payment.dispute_event("charge.dispute.closed", dispute_id, status="lost"))

    assert balances(client) == before  # the money moved when it was withdrawn
    assert trader(client, trader_id)["status"] == "suspended"
    assert statuses(client, trader_id) == ["suspended", "suspended"]

    assert_error(client.post(f"/v1/traders/{trader_id}/reinstate", headers=FINANCE), 403)
    assert trader(client, trader_id)["status"] == "suspended"

    response = client.post(f"/v1/traders/{trader_id}/reinstate", headers=ADMIN)

    assert response.status_code == 200, response.text
    assert response.json()["status"] == "active"
    assert trader(client, trader_id)["status"] == "active"
    assert statuses(client, trader_id) == ["active", "active"]


@pytest.mark.parametrize("status", [None, "", "LOST", "bogus", 5, "needs_response", "under_review"])
def test_a_closed_dispute_whose_status_cannot_be_read_is_refused_and_keeps_the_suspension(
    client: TestClient, program_id: str, status: Any
) -> None:
    """Anything but "lost" read as won: a dispute closed with a status Stripe never sends
    for a closed dispute (or none) lifted the trader's fraud suspension."""
    trader_id, payment = open_two_accounts(client, program_id)
    dispute_id = sp.new_id("dp_")
    delivered(client, payment.dispute_event("charge.dispute.created", dispute_id))
    closed = payment.dispute_event("charge.dispute.closed", dispute_id, status="won")
    if status is None:
        del closed["data"]["object"]["status"]
    else:
        closed["data"]["object"]["status"] = status

    response = deliver(client, closed)

    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] == "invalid_event"
    assert response.json()["error"]["details"] == {"field": "data.object.status"}
    assert trader(client, trader_id)["status"] == "suspended"
    assert statuses(client, trader_id) == ["suspended", "suspended"]


@pytest.mark.parametrize("order", [("won", "lost"), ("lost", "won")])
def test_two_closings_of_one_dispute_that_disagree_end_lost_in_either_order(
    client: TestClient, program_id: str, order: tuple[str, str]
) -> None:
    """The last one decided before: won then lost suspended the trader, lost then won
    reinstated them (DESIGN: every order ends in the same state)."""
    trader_id, payment = open_two_accounts(client, program_id)
    dispute_id = sp.new_id("dp_")
    delivered(client, payment.dispute_event("charge.dispute.created", dispute_id))
    outcomes = [
        delivered(client, payment.dispute_event("charge.dispute.closed", dispute_id, status=s))
        for s in order
    ]
    # Each reply says where the dispute stands after it: a "won" after "lost" changes nothing.
    assert [reply["outcome"] for reply in outcomes] == [f"dispute_{order[0]}", "dispute_lost"]
    assert trader(client, trader_id)["status"] == "suspended"
    assert trader(client, trader_id)["disputes"] == {dispute_id: "lost"}
    assert statuses(client, trader_id) == ["suspended", "suspended"]


def test_a_dispute_closed_before_its_creation_arrives_leaves_the_trader_active(
    client: TestClient, program_id: str
) -> None:
    trader_id, payment = open_two_accounts(client, program_id)
    dispute_id = sp.new_id("dp_")
    delivered(client, payment.dispute_event("charge.dispute.closed", dispute_id, status="won"))
    delivered(client, payment.dispute_event("charge.dispute.created", dispute_id))
    assert trader(client, trader_id)["status"] == "active"
    assert statuses(client, trader_id) == ["active", "active"]


def test_a_dispute_delivered_before_its_checkout_still_opens_the_account_suspended(
    client: TestClient, program_id: str
) -> None:
    trader_id = uid("trader-")
    payment = challenge(trader_id, program_id)
    delivered(client, payment.dispute_event("charge.dispute.created", sp.new_id("dp_")))
    before = balances(client)

    reply = delivered(client, payment.checkout_completed())

    assert reply["outcome"] == "challenge"
    assert change(before, balances(client)) == {
        PROCESSOR: Decimal("540.00"),
        FEES: -Decimal("540.00"),
    }
    assert trader(client, trader_id)["status"] == "suspended"
    assert statuses(client, trader_id) == ["suspended"]


def test_the_unallocated_list_shows_what_a_chargeback_took_before_finance_allocates(
    client: TestClient, program_id: str
) -> None:
    """A chargeback is an expense (DESIGN's table), as for any challenge charged back; the
    list shows `charged_back` so finance sees it, and an allocation moves the liability to
    revenue, where the two net out (nothing is left stranded on liabilities:unallocated)."""
    payment = sp.StripePayment(54000, "usd", {})
    delivered(client, payment.checkout_completed())
    lost = sp.new_id("dp_")
    for event_type in ("charge.dispute.created", "charge.dispute.funds_withdrawn"):
        delivered(client, payment.dispute_event(event_type, lost, amount=20000))
    listed = client.get("/v1/payments/unallocated", headers=FINANCE).json()["payments"]
    (item,) = [item for item in listed if item["payment_id"] == payment.intent]
    assert (item["amount"], item["charged_back"]) == ("540.00", "200.00")
    before = balances(client)
    allocated = client.post(
        f"/v1/payments/{payment.intent}/allocate",
        json={"trader_id": uid("trader-"), "program_id": program_id},
        headers=FINANCE,
    )
    assert allocated.status_code == 201, allocated.text
    assert change(before, balances(client)) == {
        "liabilities:unallocated USD": Decimal("540.00"),
        FEES: -Decimal("540.00"),
    }
    assert payment.intent not in unallocated_ids(client)


def test_allocating_a_disputed_payment_suspends_the_trader_and_every_account(
    client: TestClient, program_id: str
) -> None:
    payment = sp.StripePayment(54000, "usd", {})
    delivered(client, payment.checkout_completed())
    delivered(client, payment.dispute_event("charge.dispute.created", sp.new_id("dp_")))
    trader_id = uid("trader-")
    earlier = client.post(
        "/v1/purchases", json=purchase_body(program_id, trader_id=trader_id), headers=FINANCE
    )
    assert earlier.status_code == 201, earlier.text

    response = client.post(
        f"/v1/payments/{payment.intent}/allocate",
        json={"trader_id": trader_id, "program_id": program_id},
        headers=FINANCE,
    )

    assert response.status_code == 201, response.text
    assert response.json()["account"]["status"] == "suspended"
    assert trader(client, trader_id)["status"] == "suspended"
    assert statuses(client, trader_id) == ["suspended", "suspended"]


# Reading the journal ----------------------------------------------------------------------


def test_journal_entries_filter_by_account_code_and_by_prefix(client: TestClient) -> None:
    trader_id = uid("trader-")
    first, second = deposit(trader_id, 10000), deposit(trader_id, 2500)
    delivered(client, first.checkout_completed())
    delivered(client, second.checkout_completed())
    code = f"liabilities:trader_wallet:{trader_id}"

    response = client.get("/v1/ledger/entries", params={"account": code}, headers=AUDITOR)

    assert response.status_code == 200, response.text
    lines = response.json()["entries"]
    assert [(line["account"], line["credit"], line["debit"]) for line in lines] == [
        (code, "100.00", "0.00"),
        (code, "25.00", "0.00"),
    ]
    assert lines[0]["position"] < lines[1]["position"]
    assert all(line["event_type"] == "Payment.Received" for line in lines)

    prefix = client.get(
        "/v1/ledger/entries",
        params={"account": "liabilities:trader_wallet:", "limit": 1000},
        headers=AUDITOR,
    ).json()["entries"]
    assert {line["account"] for line in prefix} >= {code}
    assert all(line["account"].startswith("liabilities:trader_wallet:") for line in prefix)

    # Without the trailing colon too: a code gives itself and every code under it.
    parent = client.get(
        "/v1/ledger/entries",
        params={"account": "liabilities:trader_wallet", "limit": 1000},
        headers=AUDITOR,
    ).json()["entries"]
    assert [line["cursor"] for line in parent] == [line["cursor"] for line in prefix]
    # `account_code` is another name for the filter.
    named = client.get("/v1/ledger/entries", params={"account_code": code}, headers=AUDITOR).json()[
        "entries"
    ]
    assert named == lines
    both = {"account": code, "account_code": "assets:bank"}
    assert_error(client.get("/v1/ledger/entries", params=both, headers=AUDITOR), 422)

    other = client.get(
        "/v1/ledger/entries", params={"account": code + "x"}, headers=AUDITOR
    ).json()["entries"]
    assert other == []
    # A cursor past any position the store can hold is an empty page, not a 500.
    beyond = client.get("/v1/ledger/entries", params={"after": "1" + "0" * 19}, headers=AUDITOR)
    assert beyond.status_code == 200, beyond.text
    assert beyond.json()["entries"] == []
    # A code is not a prefix of a longer code that does not continue it with ':'.
    shorter = client.get(
        "/v1/ledger/entries", params={"account": code[:-1]}, headers=AUDITOR
    ).json()["entries"]
    assert shorter == []


def test_the_trial_balance_as_of_an_instant_leaves_out_later_entries(client: TestClient) -> None:
    trader_id = uid("trader-")
    code = f"liabilities:trader_wallet:{trader_id}"
    delivered(client, deposit(trader_id, 10000).checkout_completed())
    (first_line,) = client.get(
        "/v1/ledger/entries", params={"account": code}, headers=AUDITOR
    ).json()["entries"]
    as_of = first_line["booked_at"]
    time.sleep(0.01)
    delivered(client, deposit(trader_id, 2500).checkout_completed())

    then = trial_balance(client, as_of)
    asked = datetime.now(UTC)
    now = trial_balance(client)

    assert then["as_of"] == as_of
    # Without `as_of`: the moment the request came in, as an RFC 3339 instant.
    current = datetime.fromisoformat(now["as_of"])
    assert current.utcoffset() is not None
    assert asked <= current <= datetime.now(UTC)
    assert_trial_balance_balances(then)
    (row_then,) = [row for row in then["rows"] if row["account"] == code]
    (row_now,) = [row for row in now["rows"] if row["account"] == code]
    assert row_then["credit"] == "100.00"
    assert row_now["credit"] == "125.00"

    before_anything = trial_balance(client, "2000-01-01T00:00:00Z")
    assert before_anything["rows"] == []
    assert before_anything["totals"] == []


def test_the_trial_balance_now_leaves_out_what_was_recorded_after_the_request_arrived(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Labelled with its arrival, the balance holds exactly what was recorded by then:
    an entry committed while the request waited for the projections is not in it."""
    trader_id = uid("trader-")
    code = f"liabilities:trader_wallet:{trader_id}"
    first = delivered(client, deposit(trader_id, 10000).checkout_completed())
    delivered(client, deposit(trader_id, 2500).checkout_completed())
    ledger = client.app.state.ledger  # type: ignore[attr-defined]
    # As if the second deposit committed just after this request read the log position.
    monkeypatch.setattr(ledger, "position", lambda: first["position"])
    body = trial_balance(client)
    assert_trial_balance_balances(body)
    (row,) = [row for row in body["rows"] if row["account"] == code]
    assert row["credit"] == "100.00"


def test_the_ledger_is_read_by_finance_and_auditors_only(client: TestClient) -> None:
    for path in ("/v1/ledger/trial-balance", "/v1/ledger/entries", "/v1/payments/unallocated"):
        assert_error(client.get(path, headers=PLATFORM), 403)
        assert_error(client.get(path), 401)


@pytest.mark.parametrize("amount", [2**63, 10**30, 10**11 + 1])
def test_an_amount_the_journal_could_not_sum_is_refused_before_anything_is_recorded(
    client: TestClient, amount: int
) -> None:
    """One stored amount of 2^63 stopped the journal projection for good (bigint out of
    range on PostgreSQL, integer overflow on SQLite); 10^30 was a 500. Stripe's own
    limit is eight digits; anything past 10^11 minor units is refused (422) unrecorded."""
    position = client.get("/health").json()["position"]
    payload = deposit(uid("trader-"), 100).checkout_completed()
    payload["data"]["object"]["amount_total"] = amount
    response = deliver(client, payload)
    assert_error(response, 422, "invalid_event")
    assert client.get("/health").json()["position"] == position
    assert_trial_balance_balances(trial_balance(client))


def quick_payout_program(client: TestClient) -> str:
    """One phase passed by a 1 % gain, paying out at once, refunding the fee with the
    first payout."""
    body = program_body(
        phases=[
            {"name": "challenge", "profit_target_pct": "1", "max_daily_loss_pct": "5",
             "max_loss_pct": "10", "min_trading_days": 0}
        ],
        funded={"max_daily_loss_pct": "5", "max_loss_pct": "10", "profit_split_pct": "80",
                "first_payout_after_days": 0, "payout_interval_days": 0,
                "min_payout": "50.00", "refund_fee_with_first_payout": True},
    )  # fmt: skip
    assert client.post("/v1/programs", json=body, headers=ADMIN).status_code == 201
    return str(body["program_id"])


def funded_with_profit(client: TestClient, trader_id: str) -> str:
    """The trader's one phase passed with a 1,000.00 gain, and 1,000.00 of profit on the
    funded account it opened: that account's id."""
    (phase,) = trader_accounts(client, trader_id)
    return passed_with_profit(client, phase["account_id"])


def passed_with_profit(client: TestClient, phase_id: str) -> str:
    """`phase_id` passed with a 1,000.00 gain, and 1,000.00 of profit on the funded
    account it opened: that account's id."""
    platform = auth("platform", sub="bridge")
    passed = client.post(
        f"/v1/accounts/{phase_id}/trades", json=trade_body(profit="1000.00"), headers=platform
    ).json()
    funded_id = str(passed["next_account_id"])
    client.post(
        f"/v1/accounts/{funded_id}/trades", json=trade_body(profit="1000.00"), headers=platform
    )
    return funded_id


def bought_from_wallet(client: TestClient, program_id: str, trader_id: str) -> str:
    """A challenge of `program_id` paid from the trader's wallet: its account's id."""
    bought = client.post(
        "/v1/purchases",
        json=purchase_body(program_id, trader_id=trader_id, method="wallet"),
        headers=FINANCE,
    )
    assert bought.status_code == 201, bought.text
    return str(bought.json()["account_id"])


def test_a_challenge_fee_refunded_at_stripe_is_not_refunded_again_with_the_first_payout(
    client: TestClient,
) -> None:
    """The fee came back to the trader through Stripe already: the first payout adds no
    fee refund (it would be the fee paid back twice); a partial refund leaves the rest."""
    program_id = quick_payout_program(client)
    fees = {}
    for refunded_cents in (54000, 14000):
        trader_id = uid("trader-")
        payment = challenge(trader_id, program_id)
        delivered(client, payment.checkout_completed())
        delivered(client, payment.refunded(refunded_cents))
        funded_id = funded_with_profit(client, trader_id)
        asked = client.post(
            f"/v1/accounts/{funded_id}/payouts", headers=auth("finance", sub="fin-fee")
        )
        assert asked.status_code == 201, asked.text
        fees[refunded_cents] = asked.json()["fee_refund"]
    assert fees == {54000: "0.00", 14000: "400.00"}


@pytest.mark.parametrize(("refunded_cents", "fee_back"), [(54000, "0.00"), (14000, "400.00")])
def test_a_challenge_paid_from_a_deposit_refunded_since_gives_back_only_what_was_kept(
    client: TestClient, refunded_cents: int, fee_back: str
) -> None:
    """540.00 deposited, spent on the challenge from the wallet, then the deposit refunded
    at Stripe: the wallet owes what was refunded (below zero: the trader has the money
    back), so that much of the challenge's fee was paid back already and the first payout
    does not give it back again (until 2026-12-07 it gave the whole 540.00: black-box
    audit)."""
    program_id = quick_payout_program(client)
    trader_id = uid("trader-")
    money_in = deposit(trader_id, 54000)
    delivered(client, money_in.checkout_completed())
    phase_id = bought_from_wallet(client, program_id, trader_id)
    delivered(client, money_in.refunded(refunded_cents))
    wallet = client.get(f"/v1/traders/{trader_id}", headers=FINANCE).json()["wallet"]
    owed = f"{-refunded_cents / 100:.2f}"
    assert {"currency": "USD", "balance": owed} in wallet, wallet
    funded_id = passed_with_profit(client, phase_id)
    asked = client.post(f"/v1/accounts/{funded_id}/payouts", headers=auth("finance", sub="fin-w"))
    assert asked.status_code == 201, asked.text
    assert asked.json()["fee_refund"] == fee_back


def test_what_a_wallet_owes_is_charged_to_its_purchases_oldest_first_once(
    client: TestClient,
) -> None:
    """Two deposits of 540.00, two challenges bought from the wallet, one deposit refunded:
    the wallet owes 540.00, charged once, to the older purchase. Its first payout gives no
    fee back, the other's the whole fee (an audit found both given nothing)."""
    program_id = quick_payout_program(client)
    trader_id = uid("trader-")
    deposits = [deposit(trader_id, 54000) for _ in range(2)]
    for money_in in deposits:
        delivered(client, money_in.checkout_completed())
    accounts = [bought_from_wallet(client, program_id, trader_id) for _ in range(2)]
    delivered(client, deposits[1].refunded(54000))
    fees = []
    for phase_id in accounts:
        funded_id = passed_with_profit(client, phase_id)
        asked = client.post(f"/v1/accounts/{funded_id}/payouts", headers=auth("finance", sub="f"))
        assert asked.status_code == 201, asked.text
        fees.append(asked.json()["fee_refund"])
    assert fees == ["0.00", "540.00"]


def test_what_a_wallet_owes_is_not_charged_to_a_fee_already_given_back(
    client: TestClient,
) -> None:
    """The older challenge's first payout gave its fee back before the deposit was refunded:
    the debt falls on the newer one, whose fee is still to come (an audit found it charged
    to the older one, recovering nothing: 1,080.00 of fees back on 540.00 kept)."""
    program_id = quick_payout_program(client)
    trader_id = uid("trader-")
    money_in = deposit(trader_id, 108000)
    delivered(client, money_in.checkout_completed())
    funded = [
        passed_with_profit(client, bought_from_wallet(client, program_id, trader_id))
        for _ in range(2)
    ]
    older = client.post(f"/v1/accounts/{funded[0]}/payouts", headers=auth("finance", sub="f"))
    assert older.json()["fee_refund"] == "540.00"
    approved = client.post(
        f"/v1/payouts/{older.json()['payout_id']}/approve", headers=auth("approver", sub="a")
    )
    assert approved.status_code == 200, approved.text
    delivered(client, money_in.refunded(54000))
    newer = client.post(f"/v1/accounts/{funded[1]}/payouts", headers=auth("finance", sub="f"))
    assert newer.status_code == 201, newer.text
    assert newer.json()["fee_refund"] == "0.00"


@pytest.mark.parametrize("refunded_cents", [54000, 30000])
def test_a_fee_refunded_at_stripe_after_the_payout_was_requested_stops_its_approval(
    client: TestClient, refunded_cents: int
) -> None:
    """The payout fixed a 540.00 fee refund; Stripe then refunded the challenge (in full,
    or 300.00 of it). Approving would pay the fee back twice (found by a ledger audit:
    revenue:refunds ended at 1,080.00 against 540.00 received). The approval is refused,
    409 fee_refund_changed, and changes nothing; rejected and asked again, the new payout
    gives back what the firm kept."""
    program_id = quick_payout_program(client)
    trader_id = uid("trader-")
    payment = challenge(trader_id, program_id)
    delivered(client, payment.checkout_completed())
    funded_id = funded_with_profit(client, trader_id)
    asked = client.post(f"/v1/accounts/{funded_id}/payouts", headers=auth("finance", sub="fin-a"))
    assert asked.status_code == 201, asked.text
    assert asked.json()["fee_refund"] == "540.00"
    payout_id = asked.json()["payout_id"]
    delivered(client, payment.refunded(refunded_cents))
    before = balances(client)

    approver = auth("approver", sub="appr-b")
    refused = client.post(f"/v1/payouts/{payout_id}/approve", headers=approver)

    assert refused.status_code == 409, refused.text
    kept = f"{(54000 - refunded_cents) / 100:.2f}"
    assert refused.json()["error"]["code"] == "fee_refund_changed"
    assert refused.json()["error"]["details"] == {"fee_refund": "540.00", "now": kept}
    assert balances(client) == before
    status = client.get(f"/v1/payouts/{payout_id}", headers=approver).json()["status"]
    assert status == "requested"

    rejected = client.post(
        f"/v1/payouts/{payout_id}/reject", json={"reason": "fee refunded"}, headers=approver
    )
    assert rejected.status_code == 200, rejected.text
    again = client.post(f"/v1/accounts/{funded_id}/payouts", headers=auth("finance", sub="fin-a"))
    assert again.status_code == 201, again.text
    assert again.json()["fee_refund"] == kept
    approved = client.post(f"/v1/payouts/{again.json()['payout_id']}/approve", headers=approver)
    assert approved.status_code == 200, approved.text


def test_a_deposit_whose_metadata_is_on_its_intent_only_reaches_the_wallet_in_either_order(
    client: TestClient,
) -> None:
    """Checkout with `payment_intent_data.metadata`: the session carries no metadata, the
    intent names the trader. Session first booked it unallocated and the intent changed
    nothing (the trader never got the money); now the intent moves what the payment still
    holds to the wallet, so both orders end with the same balances. Refunds booked while it
    was unallocated stay there; later ones leave the wallet."""
    moved = {}
    for intent_first in (True, False):
        trader_id = uid("trader-")
        payment = sp.StripePayment(30000, "usd", {})
        intent = payment.intent_succeeded({"purpose": "wallet_deposit", "trader_id": trader_id})
        before = balances(client)
        events = [intent, payment.checkout_completed()]
        for event in events if intent_first else events[::-1]:
            delivered(client, event)
        assert wallet(client, trader_id) == Decimal("300.00")
        assert payment.intent not in unallocated_ids(client)
        moved[intent_first] = {
            key.replace(trader_id, "T"): value
            for key, value in change(before, balances(client)).items()
        }
    assert (
        moved[True]
        == moved[False]
        == {
            PROCESSOR: Decimal("300.00"),
            "liabilities:trader_wallet:T USD": -Decimal("300.00"),
        }
    )

    # A refund while it was unallocated stays there; a later one leaves the wallet.
    trader_id = uid("trader-")
    payment = sp.StripePayment(30000, "usd", {})
    delivered(client, payment.checkout_completed())
    delivered(client, payment.refunded(10000))
    delivered(
        client,
        payment.intent_succeeded({"purpose": "wallet_deposit", "trader_id": trader_id}),
    )
    assert wallet(client, trader_id) == Decimal("200.00")
    delivered(client, payment.refunded(15000))
    assert wallet(client, trader_id) == Decimal("150.00")


def test_a_deposit_refunded_whole_leaves_the_same_wallet_in_every_order(
    client: TestClient,
) -> None:
    """Refunded before the intent named the trader, the wallet showed nothing; after, a
    0.00 line: a trader's view now lists the currencies whose balance is not zero."""
    shown = []
    for order in ((0, 1, 2), (0, 2, 1), (2, 0, 1), (1, 2, 0)):
        trader_id = uid("trader-")
        payment = sp.StripePayment(54000, "usd", {})
        events = [
            payment.checkout_completed(),
            payment.refunded(54000),
            payment.intent_succeeded({"purpose": "wallet_deposit", "trader_id": trader_id}),
        ]
        for index in order:
            delivered(client, events[index])
        shown.append(trader(client, trader_id)["wallet"])
    assert shown == [[]] * 4


@pytest.mark.parametrize("chargeback_first", [False, True])
def test_a_deposit_identified_after_its_chargeback_reaches_the_wallet_whole(
    client: TestClient, chargeback_first: bool
) -> None:
    """Session (no metadata), chargeback and the intent naming the trader: the chargeback is
    an expense and leaves a deposit's wallet as it is, so identifying the deposit before
    or after it moves the same amount (nothing stranded on liabilities:unallocated)."""
    trader_id = uid("trader-")
    payment = sp.StripePayment(10000, "usd", {})
    intent = payment.intent_succeeded({"purpose": "wallet_deposit", "trader_id": trader_id})
    dispute_id = sp.new_id("dp_")
    chargeback = [
        payment.dispute_event("charge.dispute.created", dispute_id, amount=5000),
        payment.dispute_event("charge.dispute.funds_withdrawn", dispute_id, amount=5000),
    ]
    before = balances(client)
    delivered(client, payment.checkout_completed())
    for event in [*chargeback, intent] if chargeback_first else [intent, *chargeback]:
        delivered(client, event)
    assert wallet(client, trader_id) == Decimal("100.00")
    assert "liabilities:unallocated USD" not in change(before, balances(client))


def test_a_deposit_refunded_in_full_before_its_trader_is_named_still_names_the_trader(
    client: TestClient,
) -> None:
    trader_id = uid("trader-")
    payment = sp.StripePayment(10000, "usd", {})
    delivered(client, payment.checkout_completed())
    delivered(client, payment.refunded(10000))
    delivered(
        client,
        payment.intent_succeeded({"purpose": "wallet_deposit", "trader_id": trader_id}),
    )  # fmt: skip
    assert trader(client, trader_id)["trader_id"] == trader_id
    assert wallet(client, trader_id) == Decimal("0")


def test_a_dispute_fee_in_the_settlement_currency_is_booked_in_that_currency(
    client: TestClient,
) -> None:
    """A euro deposit disputed on a dollar Stripe account: the 500.00 EUR leave in euros,
    Stripe's 15.00 dispute fee in dollars. Each balances in its own currency (until
    2026-12-07 the dollar fee was booked nowhere)."""
    trader_id = uid("trader-")
    payment = deposit(trader_id, 50000, "eur")
    delivered(client, payment.checkout_completed())
    dispute_id = sp.new_id("dp_")
    withdrawn = payment.dispute_event("charge.dispute.funds_withdrawn", dispute_id)
    withdrawn["data"]["object"]["balance_transactions"] = [
        sp.balance_transaction(amount=-54000, fee=1500, currency="usd")
    ]
    before = balances(client)

    delivered(client, withdrawn)

    assert change(before, balances(client)) == {
        "expenses:chargebacks EUR": Decimal("500.00"),
        "assets:processor EUR": -Decimal("500.00"),
        "expenses:processor_fees USD": Decimal("15.00"),
        "assets:processor USD": -Decimal("15.00"),
    }
    assert delivered(client, withdrawn)["duplicate"] is True


@pytest.mark.parametrize(
    "event_type",
    ["charge.dispute.created", "charge.dispute.closed", "charge.dispute.funds_withdrawn"],
)
@pytest.mark.parametrize("bad_id", [None, 42, "", "dp_\x00"])
def test_a_dispute_event_without_a_usable_dispute_id_is_refused_and_changes_nothing(
    client: TestClient, program_id: str, event_type: str, bad_id: Any
) -> None:
    payment = challenge(uid("trader-"), program_id)
    delivered(client, payment.checkout_completed())
    status = "won" if event_type == "charge.dispute.closed" else "needs_response"
    payload = payment.dispute_event(event_type, sp.new_id("dp_"), status=status)
    if bad_id is None:
        del payload["data"]["object"]["id"]
    else:
        payload["data"]["object"]["id"] = bad_id
    before = balances(client)

    response = deliver(client, payload)

    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] == "invalid_event"
    assert "dispute's id" in response.json()["error"]["message"]
    assert balances(client) == before
    # Not recorded as delivered: once fixed (the same event id), it is applied.
    payload["data"]["object"]["id"] = sp.new_id("dp_")
    assert delivered(client, payload)["duplicate"] is False


def test_a_setup_mode_checkout_is_acknowledged_and_books_nothing(client: TestClient) -> None:
    """A session that saved a card: no amount, no currency, nothing paid. Refusing it would
    have Stripe retry it for days."""
    session = sp.checkout_session(amount=0, metadata={"trader_id": uid("trader-")})
    session.update(
        mode="setup",
        amount_total=None,
        amount_subtotal=None,
        currency=None,
        payment_intent=None,
        payment_status="no_payment_required",
        setup_intent=sp.new_id("seti_"),
    )
    payload = sp.event("checkout.session.completed", session)
    before = balances(client)

    reply = delivered(client, payload)

    assert (reply["outcome"], reply["duplicate"]) == ("recorded", False)
    assert balances(client) == before
    assert session["id"] not in unallocated_ids(client)


def test_a_refund_in_another_currency_sent_before_its_payment_does_not_block_the_payment(
    client: TestClient, program_id: str
) -> None:
    """A euro refund report arriving first for what turns out to be a dollar payment:
    the payment was refused (422 currency_mismatch) on every delivery and never booked.
    Now the stray report books nothing and the payment books; a euro refund of the known
    dollar payment is refused and changes nothing; a dollar refund books as usual."""
    trader_id = uid("trader-")
    payment = challenge(trader_id, program_id)
    stray = payment.refunded(10000)
    stray["data"]["object"]["currency"] = "eur"
    before = balances(client)
    delivered(client, stray)
    assert balances(client) == before

    delivered(client, payment.checkout_completed())
    assert change(before, balances(client)) == {
        PROCESSOR: Decimal("540.00"),
        "revenue:challenge_fees USD": -Decimal("540.00"),
    }
    assert [account["stage"] for account in trader_accounts(client, trader_id)] == ["phase-1"]

    late = payment.refunded(20000)
    late["data"]["object"]["currency"] = "eur"
    held = balances(client)
    refused = deliver(client, late)
    assert refused.status_code == 422, refused.text
    assert refused.json()["error"]["code"] == "currency_mismatch"
    assert balances(client) == held

    delivered(client, payment.refunded(5000))
    assert change(held, balances(client)) == {
        PROCESSOR: -Decimal("50.00"),
        "revenue:refunds USD": Decimal("50.00"),
    }
