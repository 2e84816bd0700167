"""Payments at a processor, and the webhook deliveries that tell us about them.

A `Payment` is keyed by the processor's payment id (for Stripe, the PaymentIntent id), so
every delivery about one payment lands on one stream and a duplicate is found, not
re-applied. Deliveries arrive at least once and in any order: a refund or a dispute can
arrive before the payment it belongs to. The payment keeps what it learnt and books each
movement as soon as it knows enough to book it (a refund needs to know whether it refunds
a challenge fee, a deposit or an unallocated payment), so every order of the same
deliveries ends with the same bookings in total.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from eventsourcing.domain import Aggregate

from domain import journal
from domain.errors import Conflict, CurrencyMismatch, InvalidInput
from domain.money import Money

CHALLENGE = "challenge"
DEPOSIT = "deposit"
UNALLOCATED = "unallocated"

DISPUTE_OPEN = "open"
DISPUTE_WON = "won"
DISPUTE_LOST = "lost"
# On a trader a payment named before finance allocated it to another: no longer theirs.
DISPUTE_MOVED = "moved"


class WebhookDelivery(Aggregate):
    """One processor event, recorded once by its event id (the deduplication key)."""

    class Recorded(Aggregate.Created):
        processor: str
        event_id: str
        event_type: str
        object_id: str | None
        outcome: str

    def __init__(
        self, processor: str, event_id: str, event_type: str, object_id: str | None, outcome: str
    ) -> None:
        self.processor = processor
        self.event_id = event_id
        self.event_type = event_type
        self.object_id = object_id
        self.outcome = outcome


class Payment(Aggregate):
    class Opened(Aggregate.Created):
        processor: str
        payment_ref: str

    class Received(Aggregate.Event):
        purpose: str
        trader_id: str | None
        program_id: str | None
        amount: Decimal
        currency: str
        source_event: str
        journal: list[dict[str, Any]]

        def apply(self, aggregate: Any) -> None:
            assert isinstance(aggregate, Payment)
            aggregate.purpose = self.purpose
            aggregate.trader_id = self.trader_id
            aggregate.program_id = self.program_id
            aggregate.amount = Money(self.amount, self.currency)

    class RefundReported(Aggregate.Event):
        """The processor reports this cumulative refunded amount (never decreases)."""

        refunded_total: Decimal
        currency: str
        source_event: str

        def apply(self, aggregate: Any) -> None:
            assert isinstance(aggregate, Payment)
            aggregate.refunded_reported = Money(self.refunded_total, self.currency)

    class RefundBooked(Aggregate.Event):
        amount: Decimal
        currency: str
        purpose: str
        journal: list[dict[str, Any]]

        def apply(self, aggregate: Any) -> None:
            assert isinstance(aggregate, Payment)
            booked = Money(self.amount, self.currency)
            previous = aggregate.refunded_booked
            aggregate.refunded_booked = booked if previous is None else previous + booked

    class DisputeChanged(Aggregate.Event):
        dispute_id: str
        status: str
        source_event: str

        def apply(self, aggregate: Any) -> None:
            assert isinstance(aggregate, Payment)
            aggregate.disputes[self.dispute_id] = self.status

    class DisputeFundsMoved(Aggregate.Event):
        dispute_id: str
        direction: str  # withdrawn | reinstated
        amount: Decimal
        fee: Decimal
        currency: str
        source_event: str
        journal: list[dict[str, Any]]

        def apply(self, aggregate: Any) -> None:
            assert isinstance(aggregate, Payment)
            aggregate.funds_moves.add(f"{self.dispute_id}:{self.direction}")
            if aggregate.amount is None or aggregate.amount.currency == self.currency:
                sign = 1 if self.direction == "withdrawn" else -1
                aggregate.charged_back += sign * self.amount

    class Identified(Aggregate.Event):
        """An unallocated payment turned out to be a trader's wallet deposit (its intent,
        arriving after a session without metadata, names the trader): what it still holds
        moves from liabilities:unallocated to the trader's wallet."""

        trader_id: str
        amount: Decimal
        currency: str
        source_event: str
        journal: list[dict[str, Any]]

        def apply(self, aggregate: Any) -> None:
            assert isinstance(aggregate, Payment)
            aggregate.purpose = DEPOSIT
            aggregate.trader_id = self.trader_id
            # Refunds booked while it was unallocated were not the wallet's.
            aggregate.refunded_before_wallet = aggregate.refunded_booked

    class Allocated(Aggregate.Event):
        trader_id: str
        program_id: str
        account_id: str
        allocated_by: str
        journal: list[dict[str, Any]]

        def apply(self, aggregate: Any) -> None:
            assert isinstance(aggregate, Payment)
            aggregate.purpose = CHALLENGE
            aggregate.trader_id = self.trader_id
            aggregate.program_id = self.program_id
            aggregate.allocated_account_id = self.account_id

    def __init__(self, processor: str, payment_ref: str) -> None:
        self.processor = processor
        self.payment_ref = payment_ref
        self.purpose: str | None = None
        self.trader_id: str | None = None
        self.program_id: str | None = None
        self.amount: Money | None = None
        self.refunded_reported: Money | None = None
        self.refunded_booked: Money | None = None
        self.disputes: dict[str, str] = {}
        self.funds_moves: set[str] = set()
        # Dispute funds withdrawn and not reinstated, in the payment's currency.
        self.charged_back = Decimal(0)
        self.allocated_account_id: str | None = None
        self.refunded_before_wallet: Money | None = None

    @classmethod
    def open(cls, payment_id: Any, processor: str, payment_ref: str) -> Payment:
        return cls._create(cls.Opened, id=payment_id, processor=processor, payment_ref=payment_ref)

    @property
    def is_received(self) -> bool:
        return self.purpose is not None

    # Commands ----------------------------------------------------------------------

    def receive(
        self,
        *,
        purpose: str,
        trader_id: str | None,
        program_id: str | None,
        amount: Money,
        source_event: str,
    ) -> bool:
        """Record the money received; False when it was already recorded."""
        if self.is_received:
            return False
        if amount.amount < 0:
            raise InvalidInput("a received payment cannot be negative", code="invalid_amount")
        # A fully discounted checkout receives 0: it opens the account and books nothing.
        credit = {
            CHALLENGE: journal.REVENUE_CHALLENGE_FEES,
            DEPOSIT: journal.trader_wallet(trader_id or ""),
            UNALLOCATED: journal.LIABILITIES_UNALLOCATED,
        }[purpose]
        self.trigger_event(
            self.Received,
            purpose=purpose,
            trader_id=trader_id,
            program_id=program_id,
            amount=amount.amount,
            currency=amount.currency,
            source_event=source_event,
            journal=journal.transfer_lines(journal.ASSETS_PROCESSOR, credit, amount),
        )
        self._book_pending_refund()
        return True

    def report_refund(self, refunded_total: Money, source_event: str) -> Money | None:
        """Record the processor's cumulative refunded amount; returns the amount newly
        booked (None while the payment itself is still unknown)."""
        if self.amount is not None and refunded_total.currency != self.amount.currency:
            raise CurrencyMismatch(
                f"a refund in {refunded_total.currency} of a payment in {self.amount.currency}",
                details={"currencies": [self.amount.currency, refunded_total.currency]},
            )
        reported = self.refunded_reported
        # A report in another currency (only possible before the payment is known) is
        # replaced, not compared with.
        if (
            reported is None
            or reported.currency != refunded_total.currency
            or (refunded_total > reported)
        ):
            self.trigger_event(
                self.RefundReported,
                refunded_total=refunded_total.amount,
                currency=refunded_total.currency,
                source_event=source_event,
            )
        return self._book_pending_refund()

    def _book_pending_refund(self) -> Money | None:
        if not self.is_received or self.refunded_reported is None or self.amount is None:
            return None
        if self.refunded_reported.currency != self.amount.currency:
            # Reported before the payment arrived, in another currency than it: not a
            # refund of this payment's money. It stays recorded and books nothing, and
            # it does not stop the payment from being booked.
            return None
        booked = self.refunded_booked or Money.zero(self.amount.currency)
        # Never more than was paid: a processor's cumulative figure beyond the payment's
        # amount books the rest of the payment only.
        due = self.refunded_reported.min(self.amount) - booked
        if due.amount <= 0:
            return None
        debit = {
            CHALLENGE: journal.REVENUE_REFUNDS,
            DEPOSIT: journal.trader_wallet(self.trader_id or ""),
            UNALLOCATED: journal.LIABILITIES_UNALLOCATED,
        }[self.purpose or UNALLOCATED]
        self.trigger_event(
            self.RefundBooked,
            amount=due.amount,
            currency=due.currency,
            purpose=self.purpose,
            journal=journal.transfer_lines(debit, journal.ASSETS_PROCESSOR, due),
        )
        return due

    def change_dispute(self, dispute_id: str, status: str, source_event: str) -> bool:
        """A dispute opened or closed. A closed dispute stays closed whatever arrives later,
        and a lost one stays lost: two closings that disagree end lost in either order
        (the last one won before, so the order decided the trader's suspension)."""
        current = self.disputes.get(dispute_id)
        if (
            current == status
            or (current in (DISPUTE_WON, DISPUTE_LOST) and status == DISPUTE_OPEN)
            or (current == DISPUTE_LOST and status == DISPUTE_WON)
        ):
            return False
        self.trigger_event(
            self.DisputeChanged, dispute_id=dispute_id, status=status, source_event=source_event
        )
        return True

    def move_dispute_funds(
        self,
        dispute_id: str,
        direction: str,
        amount: Money,
        fee: Money,
        source_event: str,
        *,
        other_fees: tuple[Money, ...] = (),
    ) -> bool:
        """`fee` is in the dispute's currency; `other_fees`, in other currencies (Stripe
        takes the fee in the account's settlement currency), are booked as lines of their
        own, each balancing in its currency."""
        if f"{dispute_id}:{direction}" in self.funds_moves:
            return False
        if direction == "withdrawn":
            fees = [fee, *other_fees]
            lines: list[dict[str, Any]] = []
            if amount.amount or any(part.amount for part in fees):
                lines = journal.JournalEntry.of(
                    debits=[
                        (journal.EXPENSES_CHARGEBACKS, amount),
                        *((journal.EXPENSES_PROCESSOR_FEES, part) for part in fees),
                    ],
                    credits=[
                        (journal.ASSETS_PROCESSOR, amount + fee),
                        *((journal.ASSETS_PROCESSOR, part) for part in other_fees),
                    ],
                ).to_list()
        else:
            lines = journal.transfer_lines(
                journal.ASSETS_PROCESSOR, journal.EXPENSES_CHARGEBACKS, amount
            )
        self.trigger_event(
            self.DisputeFundsMoved,
            dispute_id=dispute_id,
            direction=direction,
            amount=amount.amount,
            fee=fee.amount,
            currency=amount.currency,
            source_event=source_event,
            journal=lines,
        )
        return True

    @property
    def unrefunded(self) -> Money | None:
        """The amount received less the refunds booked (None before it is received): what
        the payment's receiving account still holds for it."""
        if self.amount is None:
            return None
        return self.amount - (self.refunded_booked or Money.zero(self.amount.currency))

    @property
    def wallet_refunded(self) -> Money | None:
        """Refunds booked against the trader's wallet: all of a deposit's, less those booked
        while the payment was still unallocated."""
        booked = self.refunded_booked
        before = self.refunded_before_wallet
        if booked is None or before is None:
            return booked
        return booked - before

    def identify_deposit(self, trader_id: str, source_event: str) -> Money | None:
        """An unallocated payment is a wallet deposit of `trader_id` after all; returns
        what moves to the wallet (zero when refunds took it all: the trader is still
        named), None when the payment is not unallocated (any more)."""
        held = self.unrefunded
        if self.purpose != UNALLOCATED or held is None or self.allocated_account_id:
            return None
        # What liabilities:unallocated holds for it. A chargeback is an expense (DESIGN's
        # table) and leaves a deposit's wallet as it is, so it is not subtracted: the order
        # of the two events cannot matter.
        remaining = held.max(Money.zero(held.currency))
        self.trigger_event(
            self.Identified,
            trader_id=trader_id,
            amount=remaining.amount,
            currency=remaining.currency,
            source_event=source_event,
            journal=journal.transfer_lines(
                journal.LIABILITIES_UNALLOCATED, journal.trader_wallet(trader_id), remaining
            )
            if remaining.amount > 0
            else [],
        )
        return remaining

    def allocate(self, *, trader_id: str, program_id: str, account_id: str, actor: str) -> None:
        """Finance matches an unallocated payment to a trader and program."""
        if self.purpose != UNALLOCATED or self.amount is None:
            raise Conflict(f"payment {self.payment_ref} is not unallocated", code="not_unallocated")
        # What liabilities:unallocated holds for it: the amount less refunds. A chargeback is
        # an expense (DESIGN's table), as for any challenge charged back: allocating moves
        # the liability to revenue and the two net out; the list shows `charged_back` so
        # finance sees it before deciding.
        remaining = self.unrefunded
        assert remaining is not None
        if remaining.amount <= 0:
            raise Conflict(
                f"payment {self.payment_ref} was refunded in full: nothing to allocate",
                code="nothing_to_allocate",
            )
        self.trigger_event(
            self.Allocated,
            trader_id=trader_id,
            program_id=program_id,
            account_id=account_id,
            allocated_by=actor,
            journal=journal.transfer_lines(
                journal.LIABILITIES_UNALLOCATED, journal.REVENUE_CHALLENGE_FEES, remaining
            ),
        )
