"""Journal entries (domain/journal.py): an entry exists only when it balances per currency."""

from __future__ import annotations

from decimal import Decimal

import pytest

from domain import journal
from domain.journal import JournalEntry, Line, UnbalancedEntry
from domain.money import Money


def usd(amount: str) -> Money:
    return Money(Decimal(amount), "USD")


def eur(amount: str) -> Money:
    return Money(Decimal(amount), "EUR")


def debit(account: str, amount: Money) -> Line:
    return Line(account, amount, Money.zero(amount.currency))


def credit(account: str, amount: Money) -> Line:
    return Line(account, Money.zero(amount.currency), amount)


def test_a_balanced_entry_in_one_currency_is_accepted() -> None:
    entry = JournalEntry(
        (
            debit(journal.ASSETS_PROCESSOR, usd("540.00")),
            credit("revenue:challenge_fees", usd("540.00")),
        )
    )
    assert [line["account"] for line in entry.to_list()] == [
        "assets:processor",
        "revenue:challenge_fees",
    ]


def test_a_journal_entry_whose_debits_and_credits_differ_is_refused() -> None:
    with pytest.raises(UnbalancedEntry) as refused:
        JournalEntry(
            (
                debit(journal.ASSETS_PROCESSOR, usd("540.00")),
                credit("revenue:challenge_fees", usd("539.99")),
            )
        )
    assert refused.value.code == "unbalanced_entry"
    assert refused.value.details == {"difference": {"USD": "0.01"}}


def test_two_currencies_each_balanced_make_one_valid_entry() -> None:
    entry = JournalEntry(
        (
            debit(journal.ASSETS_PROCESSOR, usd("100.00")),
            debit(journal.ASSETS_PROCESSOR, eur("90.00")),
            credit(journal.REVENUE_CHALLENGE_FEES, usd("100.00")),
            credit(journal.REVENUE_CHALLENGE_FEES, eur("90.00")),
        )
    )
    assert len(entry.lines) == 4


def test_two_currencies_that_balance_only_in_sum_are_refused_per_currency() -> None:
    # 100 USD debit against 100 EUR credit "sums" to zero but balances in no currency.
    with pytest.raises(UnbalancedEntry) as refused:
        JournalEntry(
            (
                debit(journal.ASSETS_PROCESSOR, usd("100.00")),
                credit(journal.REVENUE_CHALLENGE_FEES, eur("100.00")),
            )
        )
    assert refused.value.details == {"difference": {"USD": "100.00", "EUR": "-100.00"}}


def test_one_currency_balanced_and_another_unbalanced_is_refused() -> None:
    with pytest.raises(UnbalancedEntry) as refused:
        JournalEntry(
            (
                debit(journal.ASSETS_PROCESSOR, usd("100.00")),
                credit(journal.REVENUE_CHALLENGE_FEES, usd("100.00")),
                debit(journal.ASSETS_PROCESSOR, eur("90.00")),
                credit(journal.REVENUE_CHALLENGE_FEES, eur("80.00")),
            )
        )
    assert refused.value.details == {"difference": {"EUR": "10.00"}}


def test_an_empty_entry_is_refused() -> None:
    with pytest.raises(UnbalancedEntry):
        JournalEntry(())


def test_a_negative_amount_is_refused_even_when_it_balances() -> None:
    with pytest.raises(UnbalancedEntry):
        JournalEntry(
            (debit(journal.ASSETS_PROCESSOR, usd("-5.00")), debit(journal.ASSETS_BANK, usd("5.00")))
        )


def test_a_line_mixing_currencies_is_refused() -> None:
    with pytest.raises(UnbalancedEntry):
        JournalEntry(
            (
                Line(journal.ASSETS_PROCESSOR, usd("5.00"), eur("0.00")),
                credit(journal.ASSETS_BANK, usd("5.00")),
            )
        )


def test_a_chargeback_with_its_dispute_fee_balances_against_the_processor() -> None:
    entry = JournalEntry.of(
        debits=[
            (journal.EXPENSES_CHARGEBACKS, usd("540.00")),
            (journal.EXPENSES_PROCESSOR_FEES, usd("15.00")),
        ],
        credits=[(journal.ASSETS_PROCESSOR, usd("555.00"))],
    )
    assert {line["account"]: line["debit"] - line["credit"] for line in entry.to_list()} == {
        "expenses:chargebacks": Decimal("540.00"),
        "expenses:processor_fees": Decimal("15.00"),
        "assets:processor": Decimal("-555.00"),
    }


def test_an_entry_survives_its_round_trip_through_the_stored_lines() -> None:
    entry = JournalEntry.transfer(
        journal.ASSETS_PROCESSOR, journal.trader_wallet("t-1"), usd("250.00")
    )
    assert JournalEntry.from_list(entry.to_list()) == entry


def test_a_transfer_of_zero_books_no_lines() -> None:
    assert (
        journal.transfer_lines(journal.ASSETS_BANK, journal.REVENUE_CHALLENGE_FEES, usd("0")) == []
    )


def test_the_wallet_and_payable_account_codes_name_the_trader() -> None:
    assert journal.trader_wallet("t-9") == "liabilities:trader_wallet:t-9"
    assert journal.trader_payable("t-9") == "liabilities:trader_payable:t-9"
