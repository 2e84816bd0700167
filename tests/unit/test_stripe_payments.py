"""Payments and Stripe events without I/O: domain/payment.py and ledger/stripe_events.py.

A `Payment` books each movement once, when it knows enough to book it, whatever the order
in which the processor's deliveries arrive. `stripe_events.parse` turns Stripe's integer
minor units into Money in the currency's own minor unit.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any
from uuid import uuid4

import pytest

from domain import payment as payments
from domain.errors import Conflict, InvalidInput
from domain.money import Money
from domain.payment import Payment
from ledger import stripe_events
from tests import stripe_payloads as sp


def usd(amount: str) -> Money:
    return Money(Decimal(amount), "USD")


def new_payment(ref: str = "pi_unit") -> Payment:
    return Payment.open(uuid4(), "stripe", ref)


def booked(payment: Payment) -> list[dict[str, Any]]:
    """The journal lines of the events the payment triggered since the last call."""
    lines: list[dict[str, Any]] = []
    for pending in payment.collect_events():
        lines.extend(getattr(pending, "journal", []))
    return lines


def net(lines: list[dict[str, Any]]) -> dict[str, Decimal]:
    """Debit minus credit per account (accounts netting to zero left out)."""
    totals: dict[str, Decimal] = {}
    for line in lines:
        totals[line["account"]] = totals.get(line["account"], Decimal(0)) + (
            Decimal(line["debit"]) - Decimal(line["credit"])
        )
    return {account: value for account, value in totals.items() if value}


def receive_challenge(payment: Payment, amount: str = "540.00") -> bool:
    return payment.receive(
        purpose=payments.CHALLENGE,
        trader_id="trader-1",
        program_id="classic",
        amount=usd(amount),
        source_event="evt_receipt",
    )


# Receipts and refunds -----------------------------------------------------------------


def test_a_challenge_receipt_books_the_processor_against_challenge_fees() -> None:
    payment = new_payment()
    booked(payment)
    assert receive_challenge(payment)
    assert net(booked(payment)) == {
        "assets:processor": Decimal("540.00"),
        "revenue:challenge_fees": Decimal("-540.00"),
    }


def test_a_second_receipt_of_the_same_payment_books_nothing() -> None:
    payment = new_payment()
    receive_challenge(payment)
    booked(payment)
    assert receive_challenge(payment) is False
    assert booked(payment) == []


def test_a_received_amount_of_zero_opens_nothing_to_book() -> None:
    payment = new_payment()
    receive_challenge(payment, "0.00")
    assert payment.is_received
    assert booked(payment) == []


def test_a_negative_received_amount_is_refused() -> None:
    with pytest.raises(InvalidInput):
        receive_challenge(new_payment(), "-1.00")


def test_a_refund_before_its_receipt_books_nothing_until_the_receipt_then_books_the_refund() -> (
    None
):
    payment = new_payment()
    booked(payment)
    assert payment.report_refund(usd("30.00"), "evt_refund") is None
    assert booked(payment) == []
    assert payment.refunded_booked is None

    receive_challenge(payment)
    assert net(booked(payment)) == {
        "assets:processor": Decimal("510.00"),
        "revenue:challenge_fees": Decimal("-540.00"),
        "revenue:refunds": Decimal("30.00"),
    }
    assert payment.refunded_booked == usd("30.00")


def test_cumulative_refund_reports_out_of_order_book_the_highest_total_once() -> None:
    # Stripe reports amount_refunded cumulatively: 10 then 30 means 30 in all. Delivered
    # out of order (30 first, then the stale 10), only 30 is booked.
    payment = new_payment()
    receive_challenge(payment)
    booked(payment)
    assert payment.report_refund(usd("30.00"), "evt_refund_2") == usd("30.00")
    assert payment.report_refund(usd("10.00"), "evt_refund_1") is None
    assert net(booked(payment)) == {
        "revenue:refunds": Decimal("30.00"),
        "assets:processor": Decimal("-30.00"),
    }
    assert payment.refunded_booked == usd("30.00")


def test_cumulative_refund_reports_in_order_book_the_difference_each_time() -> None:
    payment = new_payment()
    receive_challenge(payment)
    booked(payment)
    assert payment.report_refund(usd("10.00"), "evt_refund_1") == usd("10.00")
    assert payment.report_refund(usd("30.00"), "evt_refund_2") == usd("20.00")
    assert payment.report_refund(usd("30.00"), "evt_refund_2_again") is None
    assert net(booked(payment)) == {
        "revenue:refunds": Decimal("30.00"),
        "assets:processor": Decimal("-30.00"),
    }


def test_a_refund_reported_beyond_the_payment_books_the_payment_and_no_more() -> None:
    payment = new_payment()
    receive_challenge(payment)  # 540.00
    booked(payment)
    assert payment.report_refund(usd("999.00"), "evt_refund_too_much") == usd("540.00")
    assert payment.report_refund(usd("1200.00"), "evt_refund_more") is None
    assert net(booked(payment)) == {
        "revenue:refunds": Decimal("540.00"),
        "assets:processor": Decimal("-540.00"),
    }


def test_a_refund_of_a_deposit_leaves_the_traders_wallet() -> None:
    payment = new_payment()
    payment.receive(
        purpose=payments.DEPOSIT,
        trader_id="trader-7",
        program_id=None,
        amount=usd("200.00"),
        source_event="evt_dep",
    )
    booked(payment)
    payment.report_refund(usd("50.00"), "evt_refund")
    assert net(booked(payment)) == {
        "liabilities:trader_wallet:trader-7": Decimal("50.00"),
        "assets:processor": Decimal("-50.00"),
    }


def test_an_unallocated_payment_is_booked_to_unallocated_and_allocation_moves_the_rest() -> None:
    payment = new_payment()
    payment.receive(
        purpose=payments.UNALLOCATED,
        trader_id=None,
        program_id=None,
        amount=usd("540.00"),
        source_event="evt_unmatched",
    )
    payment.report_refund(usd("40.00"), "evt_refund")
    assert net(booked(payment)) == {
        "assets:processor": Decimal("500.00"),
        "liabilities:unallocated": Decimal("-500.00"),
    }
    payment.allocate(trader_id="t-1", program_id="p-1", account_id="a-1", actor="finance-1")
    assert net(booked(payment)) == {
        "liabilities:unallocated": Decimal("500.00"),
        "revenue:challenge_fees": Decimal("-500.00"),
    }
    assert payment.purpose == payments.CHALLENGE
    with pytest.raises(Conflict):
        payment.allocate(trader_id="t-1", program_id="p-1", account_id="a-1", actor="finance-1")


# Disputes -----------------------------------------------------------------------------


def test_a_dispute_closed_before_its_creation_arrives_stays_closed() -> None:
    payment = new_payment()
    assert payment.change_dispute("dp_1", payments.DISPUTE_WON, "evt_closed")
    assert payment.change_dispute("dp_1", payments.DISPUTE_OPEN, "evt_created") is False
    assert payment.disputes == {"dp_1": payments.DISPUTE_WON}

    lost = new_payment()
    lost.change_dispute("dp_2", payments.DISPUTE_LOST, "evt_closed")
    assert lost.change_dispute("dp_2", payments.DISPUTE_OPEN, "evt_created") is False
    assert lost.disputes == {"dp_2": payments.DISPUTE_LOST}


def test_the_same_dispute_status_twice_is_recorded_once() -> None:
    payment = new_payment()
    booked(payment)
    assert payment.change_dispute("dp_1", payments.DISPUTE_OPEN, "evt_1")
    assert payment.change_dispute("dp_1", payments.DISPUTE_OPEN, "evt_2") is False
    assert len(payment.collect_events()) == 1


def test_dispute_funds_withdrawn_twice_book_the_chargeback_and_its_fee_once() -> None:
    payment = new_payment()
    receive_challenge(payment)
    booked(payment)
    assert payment.move_dispute_funds("dp_1", "withdrawn", usd("540.00"), usd("15.00"), "evt_w1")
    assert (
        payment.move_dispute_funds("dp_1", "withdrawn", usd("540.00"), usd("15.00"), "evt_w2")
        is False
    )
    assert net(booked(payment)) == {
        "expenses:chargebacks": Decimal("540.00"),
        "expenses:processor_fees": Decimal("15.00"),
        "assets:processor": Decimal("-555.00"),
    }


def test_dispute_funds_reinstated_book_the_chargeback_back_once() -> None:
    payment = new_payment()
    receive_challenge(payment)
    payment.move_dispute_funds("dp_1", "withdrawn", usd("540.00"), usd("15.00"), "evt_w")
    booked(payment)
    assert payment.move_dispute_funds("dp_1", "reinstated", usd("540.00"), usd("0"), "evt_r1")
    assert (
        payment.move_dispute_funds("dp_1", "reinstated", usd("540.00"), usd("0"), "evt_r2") is False
    )
    assert net(booked(payment)) == {
        "assets:processor": Decimal("540.00"),
        "expenses:chargebacks": Decimal("-540.00"),
    }


# Parsing Stripe events ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("currency", "minor_units", "expected"),
    [
        ("jpy", 5000, "5000"),
        ("kwd", 12345, "12.345"),
        ("usd", 54000, "540.00"),
        ("usd", 1, "0.01"),
        ("bhd", 7, "0.007"),
    ],
)
def test_stripe_minor_units_become_money_in_the_currencys_own_minor_unit(
    currency: str, minor_units: int, expected: str
) -> None:
    payload = sp.event(
        "checkout.session.completed",
        sp.checkout_session(
            amount=minor_units,
            currency=currency,
            metadata={"trader_id": "t-1", "program_id": "p-1"},
        ),
    )
    fact = stripe_events.parse(payload)
    assert fact.amount is not None
    assert fact.amount.currency == currency.upper()
    assert str(fact.amount.amount) == expected
    assert fact.amount.minor_units == minor_units


def test_a_checkout_with_trader_and_program_is_a_challenge_keyed_by_its_payment_intent() -> None:
    payload = sp.event(
        "checkout.session.completed",
        sp.checkout_session(amount=54000, metadata={"trader_id": "t-1", "program_id": "p-1"}),
    )
    fact = stripe_events.parse(payload)
    assert fact.kind == stripe_events.RECEIVED
    assert fact.purpose == payments.CHALLENGE
    assert fact.payment_ref == payload["data"]["object"]["payment_intent"]
    assert fact.event_id == payload["id"]
    assert (fact.trader_id, fact.program_id) == ("t-1", "p-1")


@pytest.mark.parametrize(
    ("metadata", "purpose"),
    [
        ({"trader_id": "t-1", "purpose": "wallet_deposit"}, payments.DEPOSIT),
        ({"program_id": "p-1"}, payments.UNALLOCATED),
        ({}, payments.UNALLOCATED),
    ],
)
def test_a_checkouts_metadata_decides_its_purpose(metadata: dict[str, str], purpose: str) -> None:
    payload = sp.event(
        "checkout.session.completed", sp.checkout_session(amount=1000, metadata=metadata)
    )
    assert stripe_events.parse(payload).purpose == purpose


def test_a_cumulative_refund_parses_as_the_charges_amount_refunded() -> None:
    stripe_payment = sp.StripePayment(54000, "kwd")
    fact = stripe_events.parse(stripe_payment.refunded(12345, [10000, 2345]))
    assert fact.kind == stripe_events.REFUND
    assert fact.payment_ref == stripe_payment.intent
    assert fact.amount == Money(Decimal("12.345"), "KWD")


def test_dispute_funds_withdrawn_take_the_dispute_fee_from_the_balance_transactions() -> None:
    stripe_payment = sp.StripePayment(5000, "jpy")
    fact = stripe_events.parse(
        stripe_payment.dispute_event("charge.dispute.funds_withdrawn", "dp_1", fee=2000)
    )
    assert fact.kind == stripe_events.DISPUTE_FUNDS
    assert fact.direction == "withdrawn"
    assert fact.amount == Money(Decimal(5000), "JPY")
    assert fact.fee == Money(Decimal(2000), "JPY")
    reinstated = stripe_events.parse(
        stripe_payment.dispute_event("charge.dispute.funds_reinstated", "dp_1", fee=2000)
    )
    assert reinstated.direction == "reinstated"
    assert reinstated.fee == Money(Decimal(0), "JPY")


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ("lost", payments.DISPUTE_LOST),
        ("won", payments.DISPUTE_WON),
        ("warning_closed", payments.DISPUTE_WON),
    ],
)
def test_a_closed_dispute_is_lost_only_when_stripe_says_lost(status: str, expected: str) -> None:
    stripe_payment = sp.StripePayment(1000)
    fact = stripe_events.parse(
        stripe_payment.dispute_event("charge.dispute.closed", "dp_1", status=status)
    )
    assert (fact.kind, fact.dispute_status, fact.dispute_id) == (
        stripe_events.DISPUTE,
        expected,
        "dp_1",
    )


@pytest.mark.parametrize(
    "event_type",
    [
        "customer.created",
        "invoice.paid",
        "charge.succeeded",
        "payout.paid",
        "radar.early_fraud_warning.created",
    ],
)
def test_an_unknown_event_type_parses_as_record_only(event_type: str) -> None:
    fact = stripe_events.parse(sp.event(event_type, {"id": "obj_1", "object": "thing"}))
    assert fact.kind == stripe_events.RECORD_ONLY
    assert fact.payment_ref is None
    assert (fact.event_type, fact.object_id) == (event_type, "obj_1")


def test_a_checkout_that_has_not_been_paid_yet_is_record_only() -> None:
    payload = sp.event(
        "checkout.session.completed",
        sp.checkout_session(
            amount=54000, payment_status="unpaid", metadata={"trader_id": "t", "program_id": "p"}
        ),
    )
    assert stripe_events.parse(payload).kind == stripe_events.RECORD_ONLY


def test_a_payment_intent_that_is_not_a_deposit_is_record_only() -> None:
    payload = sp.event("payment_intent.succeeded", sp.payment_intent(amount=54000))
    assert stripe_events.parse(payload).kind == stripe_events.RECORD_ONLY


@pytest.mark.parametrize(
    "broken",
    [
        {"object": "event", "type": "charge.refunded", "data": {"object": {}}},
        {"id": "evt_1", "object": "event", "data": {"object": {}}},
        {"id": "evt_1", "object": "event", "type": "charge.refunded", "data": {}},
    ],
)
def test_a_body_that_is_not_a_stripe_event_is_refused(broken: dict[str, Any]) -> None:
    with pytest.raises(InvalidInput):
        stripe_events.parse(broken)


def test_a_negative_or_fractional_stripe_amount_is_refused() -> None:
    stripe_payment = sp.StripePayment(1000)
    negative = stripe_payment.refunded(-5)
    with pytest.raises(InvalidInput):
        stripe_events.parse(negative)
    fractional = stripe_payment.refunded(0)
    fractional["data"]["object"]["amount_refunded"] = 5.5
    with pytest.raises(InvalidInput):
        stripe_events.parse(fractional)


def test_only_an_unallocated_payment_with_money_left_is_identified_as_a_deposit() -> None:
    challenge = new_payment()
    receive_challenge(challenge)
    assert challenge.identify_deposit("trader-9", "evt_pi") is None  # a challenge stays one

    unallocated = new_payment()
    unallocated.receive(
        purpose=payments.UNALLOCATED, trader_id=None, program_id=None,
        amount=usd("300.00"), source_event="evt_session",
    )  # fmt: skip
    booked(unallocated)
    unallocated.report_refund(usd("100.00"), "evt_refund")
    assert unallocated.identify_deposit("trader-9", "evt_pi") == usd("200.00")
    assert net(booked(unallocated)) == {
        "liabilities:unallocated": Decimal("300.00"),  # 100 refunded + 200 moved out
        "assets:processor": Decimal("-100.00"),
        "liabilities:trader_wallet:trader-9": Decimal("-200.00"),
    }
    assert unallocated.purpose == payments.DEPOSIT
    assert unallocated.wallet_refunded == usd("0.00")  # the earlier refund was not the wallet's
    assert unallocated.identify_deposit("trader-9", "evt_pi_again") is None
