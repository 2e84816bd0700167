"""Payouts of funded accounts: eligibility, the profit split, and the Payout aggregate.

The breakdown (split, shares, fee refund, totals) is fixed when the payout is requested.
Approval withdraws the profit from the account and books the entry in the same save as
the payout's approval, so no payout is approved without its money moved, and two
approvers clicking at once collide instead of paying twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from dateutil.relativedelta import relativedelta
from eventsourcing.domain import Aggregate

from domain import journal
from domain.errors import Conflict, DomainError, InvalidInput
from domain.money import Money
from domain.program import FundedTerms

REQUESTED = "requested"
APPROVED = "approved"
REJECTED = "rejected"
PAID = "paid"

NOT_FUNDED = "not_funded"
NOT_ACTIVE = "not_active"
NO_PROFIT = "no_profit"
BELOW_MINIMUM = "below_minimum"
TOO_EARLY = "too_early"
CONSISTENCY = "consistency"
TRADER_SUSPENDED = "trader_suspended"
PAYOUT_PENDING = "payout_pending"


class PayoutRefused(DomainError):
    code = "payout_not_eligible"


class FourEyes(DomainError):
    """The requester of a payout may not approve it (403)."""

    code = "four_eyes"


@dataclass(frozen=True, slots=True)
class Eligibility:
    """What a payout request is judged on, gathered from the account and its trader."""

    is_funded: bool
    is_active: bool
    trader_suspended: bool
    profit: Money
    min_payout: Money
    consistency_holds: bool
    has_pending: bool
    opened_at: datetime
    last_approved_at: datetime | None
    first_payout_after_days: int
    payout_interval_days: int
    now: datetime
    # The account's own clock, as the rules' days are (DESIGN: "not the wall clock:
    # bridges replay history"): its newest trade or mark, and the instant the account
    # opened on that clock (the clock of the account whose pass opened it). None where
    # unknown.
    activity_at: datetime | None = None
    opened_activity_at: datetime | None = None

    def reasons(self) -> list[str]:
        """Every failed condition, in the order DESIGN.md lists them."""
        failed = []
        if not self.is_funded:
            failed.append(NOT_FUNDED)
        if not self.is_active:
            failed.append(NOT_ACTIVE)
        if self.profit.amount <= 0:
            failed.append(NO_PROFIT)
        if self.profit < self.min_payout:
            failed.append(BELOW_MINIMUM)
        if self.too_early():
            failed.append(TOO_EARLY)
        if not self.consistency_holds:
            failed.append(CONSISTENCY)
        if self.trader_suspended:
            failed.append(TRADER_SUSPENDED)
        if self.has_pending:
            failed.append(PAYOUT_PENDING)
        return failed

    def earliest(self) -> datetime:
        """On the ledger's clock: the first instant a payout may be asked for."""
        if self.last_approved_at is None:
            return self.opened_at + relativedelta(days=self.first_payout_after_days)
        return self.last_approved_at + relativedelta(days=self.payout_interval_days)

    def too_early(self) -> bool:
        """The first payout's days count on two clocks, and have passed when they have on
        either: the ledger's (a live firm) or the account's own (a bridge replaying weeks
        of trades in a minute has traded through them), never ahead of the ledger's (a
        trade or mark dated in the future moves no payout). The interval after an
        approval counts on the ledger's clock only: an approval is an act of now, not a
        moment of the account's history, and its own clock may have stood still for
        weeks before it."""
        if self.now >= self.earliest():
            return False
        since = self.opened_activity_at
        if self.last_approved_at is not None or since is None or self.activity_at is None:
            return True
        reached = min(self.activity_at, self.now)
        return reached < since + relativedelta(days=self.first_payout_after_days)


@dataclass(frozen=True, slots=True)
class Breakdown:
    profit: Money
    profit_split_pct: Decimal
    trader_share: Money
    firm_share: Money
    fee_refund: Money

    @property
    def totals(self) -> dict[str, Money]:
        """What the trader receives, per currency."""
        totals = {self.trader_share.currency: self.trader_share}
        if self.fee_refund.amount > 0:
            currency = self.fee_refund.currency
            totals[currency] = (
                totals[currency] + self.fee_refund if currency in totals else self.fee_refund
            )
        return totals

    def to_dict(self) -> dict[str, Any]:
        return {
            "currency": self.profit.currency,
            "profit": self.profit.amount,
            "profit_split_pct": self.profit_split_pct,
            "trader_share": self.trader_share.amount,
            "firm_share": self.firm_share.amount,
            "fee_refund": self.fee_refund.amount,
            "fee_refund_currency": self.fee_refund.currency,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Breakdown:
        currency = data["currency"]
        return cls(
            profit=Money(Decimal(data["profit"]), currency),
            profit_split_pct=Decimal(data["profit_split_pct"]),
            trader_share=Money(Decimal(data["trader_share"]), currency),
            firm_share=Money(Decimal(data["firm_share"]), currency),
            fee_refund=Money(Decimal(data["fee_refund"]), data["fee_refund_currency"]),
        )


def split_pct(terms: FundedTerms, approved_payouts: int) -> Decimal:
    """The base split, or the highest scaling tier the approved payouts have reached."""
    pct = terms.profit_split_pct
    for tier in terms.split_scaling:
        if approved_payouts >= tier.after_payouts:
            pct = tier.profit_split_pct
    return pct


def breakdown(profit: Money, terms: FundedTerms, approved_payouts: int, fee: Money) -> Breakdown:
    pct = split_pct(terms, approved_payouts)
    trader_share = profit.percent(pct)  # half-even to the minor unit
    refund_fee = terms.refund_fee_with_first_payout and approved_payouts == 0
    return Breakdown(
        profit=profit,
        profit_split_pct=pct,
        trader_share=trader_share,
        firm_share=profit - trader_share,
        fee_refund=fee if refund_fee else Money.zero(fee.currency),
    )


def _storable(text: str, field: str) -> None:
    """Free text the stores can hold: PostgreSQL refuses NUL, and a recorded one would
    stop the projections for good (the console's forms reach here without the API's
    check of JSON bodies)."""
    if "\x00" in text:
        raise InvalidInput(
            f"{field} must not contain the NUL character",
            code="invalid_input",
            details={"field": field},
        )


class Payout(Aggregate):
    class Requested(Aggregate.Created):
        account_id: str
        trader_id: str
        program_id: str
        breakdown: dict[str, Any]
        requested_by: str
        requested_at: datetime

    class Approved(Aggregate.Event):
        approved_by: str
        approved_at: datetime
        journal: list[dict[str, Any]]

        def apply(self, aggregate: Any) -> None:
            assert isinstance(aggregate, Payout)
            aggregate.status = APPROVED
            aggregate.approved_by = self.approved_by
            aggregate.approved_at = self.approved_at

    class Rejected(Aggregate.Event):
        rejected_by: str
        reason: str

        def apply(self, aggregate: Any) -> None:
            assert isinstance(aggregate, Payout)
            aggregate.status = REJECTED
            aggregate.rejected_by = self.rejected_by
            aggregate.rejection_reason = self.reason

    class Paid(Aggregate.Event):
        paid_by: str
        reference: str
        paid_at: datetime
        journal: list[dict[str, Any]]

        def apply(self, aggregate: Any) -> None:
            assert isinstance(aggregate, Payout)
            aggregate.status = PAID
            aggregate.paid_reference = self.reference
            aggregate.paid_at = self.paid_at

    def __init__(
        self,
        account_id: str,
        trader_id: str,
        program_id: str,
        breakdown: dict[str, Any],
        requested_by: str,
        requested_at: datetime,
    ) -> None:
        self.account_id = account_id
        self.trader_id = trader_id
        self.program_id = program_id
        self.breakdown = Breakdown.from_dict(breakdown)
        self.requested_by = requested_by
        self.requested_at = requested_at
        self.status = REQUESTED
        self.approved_by: str | None = None
        self.approved_at: datetime | None = None
        self.rejected_by: str | None = None
        self.rejection_reason: str | None = None
        self.paid_reference: str | None = None
        self.paid_at: datetime | None = None

    @classmethod
    def request(
        cls,
        *,
        payout_id: Any,
        account_id: str,
        trader_id: str,
        program_id: str,
        split: Breakdown,
        requested_by: str,
        requested_at: datetime,
    ) -> Payout:
        return cls._create(
            cls.Requested,
            id=payout_id,
            account_id=account_id,
            trader_id=trader_id,
            program_id=program_id,
            breakdown=split.to_dict(),
            requested_by=requested_by,
            requested_at=requested_at,
            timestamp=requested_at,
        )

    def _require(self, status: str, action: str) -> None:
        if self.status != status:
            raise Conflict(
                f"payout {self.id} is {self.status}: it cannot be {action}",
                code=f"payout_{self.status}",
                details={"status": self.status},
            )

    def approve(
        self, approver: str, at: datetime, *, approver_trader_id: str | None = None
    ) -> None:
        """`approver_trader_id`: the trader the approving token also speaks for, if any
        (a token holding `trader` beside `approver`): it may not approve its own payout."""
        self._require(REQUESTED, "approved")
        if approver == self.requested_by:
            raise FourEyes(
                "whoever requested a payout may not approve it",
                details={"requested_by": self.requested_by},
            )
        if approver_trader_id is not None and approver_trader_id == self.trader_id:
            raise FourEyes(
                "a trader may not approve its own payout",
                details={"trader_id": self.trader_id},
            )
        split = self.breakdown
        payable = journal.trader_payable(self.trader_id)
        lines: list[dict[str, Any]] = []
        # A share that rounds to nothing with no fee to give back books no entry (an
        # entry needs two lines): the approval still withdraws the profit.
        if split.trader_share.amount or split.fee_refund.amount:
            lines = journal.JournalEntry.of(
                debits=[
                    (journal.EXPENSES_PROFIT_SHARE, split.trader_share),
                    (journal.REVENUE_REFUNDS, split.fee_refund),
                ],
                credits=[(payable, split.trader_share), (payable, split.fee_refund)],
            ).to_list()
        # The event is recorded at the approval instant, so the journal books the entry at
        # exactly the time reports file the payout under.
        self.trigger_event(
            self.Approved, approved_by=approver, approved_at=at, journal=lines, timestamp=at
        )

    def reject(self, approver: str, reason: str) -> None:
        _storable(reason, "reason")
        self._require(REQUESTED, "rejected")
        self.trigger_event(self.Rejected, rejected_by=approver, reason=reason)

    def mark_paid(self, by: str, reference: str, at: datetime) -> None:
        _storable(reference, "reference")
        self._require(APPROVED, "marked paid")
        payable = journal.trader_payable(self.trader_id)
        totals = list(self.breakdown.totals.values())
        lines: list[dict[str, Any]] = []
        if any(total.amount for total in totals):
            lines = journal.JournalEntry.of(
                debits=[(payable, total) for total in totals],
                credits=[(journal.ASSETS_BANK, total) for total in totals],
            ).to_list()
        self.trigger_event(
            self.Paid, paid_by=by, reference=reference, paid_at=at, journal=lines, timestamp=at
        )
