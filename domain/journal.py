"""Double-entry bookkeeping: the chart of accounts and balanced journal entries.

Only real money is journalled (simulated trade P&L is not). An entry is a list of lines,
each a debit or a credit of one account in one currency; it must balance per currency,
and `JournalEntry` refuses to exist otherwise. Events that move money carry their entry's
lines (`journal`), decided and checked here before they are saved; the journal's store
checks the balance again (migrations/).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from domain.errors import DomainError
from domain.money import Money

ASSETS_PROCESSOR = "assets:processor"
ASSETS_BANK = "assets:bank"
REVENUE_CHALLENGE_FEES = "revenue:challenge_fees"
REVENUE_REFUNDS = "revenue:refunds"
LIABILITIES_UNALLOCATED = "liabilities:unallocated"
EXPENSES_CHARGEBACKS = "expenses:chargebacks"
EXPENSES_PROCESSOR_FEES = "expenses:processor_fees"
EXPENSES_PROFIT_SHARE = "expenses:profit_share"


def is_trader_id(text: str) -> bool:
    """Whether `text` can name a trader in account codes and in URLs: printable text (no
    NUL or other control characters). A ':' is fine ("mt5:1001"): a trader's code is a
    leaf to the entries filter. A '/' is not, nor "." or "..": `/v1/traders/{trader_id}`
    could never reach such a trader (the path is decoded before it is routed)."""
    return (
        text.isprintable()
        and not text.endswith(":")
        and "/" not in text
        and text not in (".", "..")
    )


def trader_wallet(trader_id: str) -> str:
    return f"liabilities:trader_wallet:{trader_id}"


def trader_payable(trader_id: str) -> str:
    return f"liabilities:trader_payable:{trader_id}"


class UnbalancedEntry(DomainError):
    code = "unbalanced_entry"


@dataclass(frozen=True, slots=True)
class Line:
    account: str
    debit: Money
    credit: Money

    def to_dict(self) -> dict[str, Any]:
        return {
            "account": self.account,
            "currency": self.debit.currency,
            "debit": self.debit.amount,
            "credit": self.credit.amount,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Line:
        currency = data["currency"]
        return cls(
            data["account"],
            Money(Decimal(data["debit"]), currency),
            Money(Decimal(data["credit"]), currency),
        )


@dataclass(frozen=True, slots=True)
class JournalEntry:
    lines: tuple[Line, ...]

    def __post_init__(self) -> None:
        if not self.lines:
            raise UnbalancedEntry("a journal entry needs at least two lines")
        totals: dict[str, Decimal] = defaultdict(Decimal)
        for line in self.lines:
            if line.debit.amount < 0 or line.credit.amount < 0:
                raise UnbalancedEntry(f"negative amount on {line.account}")
            if line.debit.currency != line.credit.currency:
                raise UnbalancedEntry(f"mixed currencies on {line.account}")
            totals[line.debit.currency] += line.debit.amount - line.credit.amount
        unbalanced = {currency: str(total) for currency, total in totals.items() if total != 0}
        if unbalanced:
            raise UnbalancedEntry(
                f"journal entry does not balance: {unbalanced}", details={"difference": unbalanced}
            )

    @classmethod
    def transfer(cls, debit_account: str, credit_account: str, amount: Money) -> JournalEntry:
        """The simplest entry: one account debited, another credited, the same amount."""
        zero = Money.zero(amount.currency)
        return cls((Line(debit_account, amount, zero), Line(credit_account, zero, amount)))

    @classmethod
    def of(cls, debits: list[tuple[str, Money]], credits: list[tuple[str, Money]]) -> JournalEntry:
        lines = [Line(account, amount, Money.zero(amount.currency)) for account, amount in debits]
        lines += [Line(account, Money.zero(amount.currency), amount) for account, amount in credits]
        return cls(tuple(line for line in lines if line.debit.amount or line.credit.amount))

    def to_list(self) -> list[dict[str, Any]]:
        return [line.to_dict() for line in self.lines]

    @classmethod
    def from_list(cls, data: list[dict[str, Any]]) -> JournalEntry:
        return cls(tuple(Line.from_dict(item) for item in data))


def transfer_lines(debit_account: str, credit_account: str, amount: Money) -> list[dict[str, Any]]:
    if amount.amount == 0:
        return []
    return JournalEntry.transfer(debit_account, credit_account, amount).to_list()
