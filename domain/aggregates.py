"""The Program and Trader aggregates."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from eventsourcing.domain import Aggregate

from domain import journal
from domain.errors import Conflict, InvalidInput
from domain.events import RecordsActor
from domain.ids import program_id_to_uuid, trader_id_to_uuid
from domain.money import Money
from domain.payment import DISPUTE_LOST, DISPUTE_OPEN
from domain.program import ProgramDefinition

ACTIVE = "active"
SUSPENDED = "suspended"


class Program(Aggregate):
    """A published rule set. Each (re)definition is a new version; accounts pin theirs."""

    class Defined(RecordsActor, Aggregate.Created):
        definition: dict[str, Any]
        actor: str | None

    class Revised(RecordsActor, Aggregate.Event):
        definition: dict[str, Any]
        actor: str | None

        def apply(self, aggregate: Any) -> None:
            assert isinstance(aggregate, Program)
            aggregate.definition = ProgramDefinition.parse(self.definition, stored=True)

    def __init__(self, definition: dict[str, Any]) -> None:
        self.definition = ProgramDefinition.parse(definition, stored=True)

    @classmethod
    def define(cls, definition: ProgramDefinition, actor: str | None = None) -> Program:
        return cls._create(
            cls.Defined,
            id=program_id_to_uuid(definition.program_id),
            definition=definition.to_dict(),
            actor=actor,
        )

    def revise(self, definition: ProgramDefinition, actor: str | None = None) -> bool:
        """Record a new version; False (nothing recorded) when the definition is unchanged."""
        if definition.program_id != self.definition.program_id:
            raise ValueError("a program's id cannot change")
        # Compared as values: "8" and "8.0" are the same percentage, "100000" and
        # "100000.00" the same balance, so writing one differently is no new version.
        if definition == self.definition:
            return False
        self.trigger_event(self.Revised, definition=definition.to_dict(), actor=actor)
        return True


class Trader(Aggregate):
    """A trader as the ledger knows them: registered on their first purchase or payment.

    Holds the trader's wallet (per currency), the accounts opened for them, and the disputes
    against their payments. A trader is suspended while any dispute is open, and after a
    lost one until an admin reinstates them.
    """

    class Registered(Aggregate.Created):
        trader_id: str

    class AccountAdded(Aggregate.Event):
        account_id: str

        def apply(self, aggregate: Any) -> None:
            assert isinstance(aggregate, Trader)
            aggregate.account_ids.append(self.account_id)

    class WalletMoved(Aggregate.Event):
        """A wallet credit (positive) or debit (negative). `journal` holds the entry when
        this event books it (a wallet purchase); a deposit or its refund is booked by its
        payment, and moves the wallet here without lines."""

        amount: Decimal
        currency: str
        reference: str
        reason: str
        journal: list[dict[str, Any]]

        def apply(self, aggregate: Any) -> None:
            assert isinstance(aggregate, Trader)
            balance = aggregate.wallet.get(self.currency, Decimal(0))
            aggregate.wallet[self.currency] = balance + self.amount
            aggregate.wallet_references.add(f"{self.reason}:{self.reference}")
            if self.reason == "deposit_refund":
                refunded = aggregate.deposit_refunds.get(self.reference, Decimal(0))
                aggregate.deposit_refunds[self.reference] = refunded - self.amount

    class DisputeNoted(Aggregate.Event):
        dispute_id: str
        status: str
        suspended: bool

        def apply(self, aggregate: Any) -> None:
            assert isinstance(aggregate, Trader)
            aggregate.disputes[self.dispute_id] = self.status

    class Reinstated(Aggregate.Event):
        by: str
        cleared: list[str]

        def apply(self, aggregate: Any) -> None:
            assert isinstance(aggregate, Trader)
            aggregate.cleared.update(self.cleared)

    def __init__(self, trader_id: str) -> None:
        self.trader_id = trader_id
        self.account_ids: list[str] = []
        self.wallet: dict[str, Decimal] = {}
        self.wallet_references: set[str] = set()
        # deposit reference -> amount refunded out of the wallet so far
        self.deposit_refunds: dict[str, Decimal] = {}
        self.disputes: dict[str, str] = {}
        self.cleared: set[str] = set()

    @classmethod
    def register(cls, trader_id: str) -> Trader:
        return cls._create(cls.Registered, id=trader_id_to_uuid(trader_id), trader_id=trader_id)

    @property
    def is_suspended(self) -> bool:
        return any(
            status == DISPUTE_OPEN or (status == DISPUTE_LOST and dispute_id not in self.cleared)
            for dispute_id, status in self.disputes.items()
        )

    @property
    def status(self) -> str:
        return SUSPENDED if self.is_suspended else ACTIVE

    def wallet_balance(self, currency: str) -> Money:
        return Money(self.wallet.get(currency, Decimal(0)), currency)

    def add_account(self, account_id: str) -> None:
        if account_id not in self.account_ids:
            self.trigger_event(self.AccountAdded, account_id=account_id)

    def credit_wallet(self, amount: Money, reference: str) -> bool:
        """A deposit; False when this deposit was already credited."""
        if f"deposit:{reference}" in self.wallet_references:
            return False
        self.trigger_event(
            self.WalletMoved,
            amount=amount.amount,
            currency=amount.currency,
            reference=reference,
            reason="deposit",
            journal=[],
        )
        return True

    def refund_deposit(self, amount: Money, reference: str) -> None:
        """A refund of a deposit leaves the wallet (booked by the payment)."""
        self.trigger_event(
            self.WalletMoved,
            amount=-amount.amount,
            currency=amount.currency,
            reference=reference,
            reason="deposit_refund",
            journal=[],
        )

    def pay_from_wallet(self, amount: Money, purchase_id: str) -> None:
        """A challenge paid from the wallet; refused when the wallet is short, or while the
        trader is suspended (a disputed deposit may be the very money being spent)."""
        if self.is_suspended:
            raise Conflict(
                f"trader {self.trader_id} is suspended: the wallet cannot be spent",
                code="trader_suspended",
            )
        balance = self.wallet_balance(amount.currency)
        if balance < amount:
            raise InvalidInput(
                f"the wallet of trader {self.trader_id} holds {balance}, less than {amount}",
                code="insufficient_funds",
                details={"wallet_balance": str(balance.amount), "required": str(amount.amount)},
            )
        self.trigger_event(
            self.WalletMoved,
            amount=-amount.amount,
            currency=amount.currency,
            reference=purchase_id,
            reason="purchase",
            journal=journal.transfer_lines(
                journal.trader_wallet(self.trader_id), journal.REVENUE_CHALLENGE_FEES, amount
            ),
        )

    def note_dispute(self, dispute_id: str, status: str) -> bool:
        """Records a dispute's status; returns whether the suspension changed."""
        if self.disputes.get(dispute_id) == status:
            return False
        before = self.is_suspended
        after_disputes = {**self.disputes, dispute_id: status}
        after = any(
            s == DISPUTE_OPEN or (s == DISPUTE_LOST and d not in self.cleared)
            for d, s in after_disputes.items()
        )
        self.trigger_event(self.DisputeNoted, dispute_id=dispute_id, status=status, suspended=after)
        return before != after

    def reinstate(self, by: str) -> bool:
        """An admin lifts a suspension that lost disputes left; open disputes still count."""
        lost = sorted(
            dispute_id
            for dispute_id, status in self.disputes.items()
            if status == DISPUTE_LOST and dispute_id not in self.cleared
        )
        if not lost:
            return False
        before = self.is_suspended
        self.trigger_event(self.Reinstated, by=by, cleared=lost)
        return before != self.is_suspended
