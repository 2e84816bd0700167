"""The ledger application: use cases over the event store (load, decide, save).

One eventsourcing Application holds every aggregate, so a command that touches several
aggregates (a purchase registering its trader, a pass opening the next account, a batch of
trades over many accounts) saves them in one atomic transaction, and one notification log
orders everything for projections and auditors.

Concurrent writers to one aggregate collide on (aggregate id, version): the loser reloads
and decides again, a bounded number of times. Because a trade's id is remembered by its
account, a retried or concurrent copy of a trade is found on reload and answered as a
duplicate: no trade is applied twice.
"""

from __future__ import annotations

import copy
import logging
import random
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, ClassVar, TypeVar
from uuid import UUID, uuid5

from eventsourcing.application import (
    AggregateNotFoundError,
    Application,
    ProcessingEvent,
    Repository,
)
from eventsourcing.domain import Aggregate, CanInitAggregate, DomainEventProtocol
from eventsourcing.persistence import IntegrityError, Recording, StoredEvent, Transcoder
from eventsourcing.postgres import PostgresAggregateRecorder
from eventsourcing.utils import strtobool
from psycopg.sql import SQL, Identifier

from domain import journal
from domain.account import TradingAccount
from domain.aggregates import Program, Trader
from domain.errors import Conflict, DomainError, InvalidInput, NotFound
from domain.ids import NAMESPACE, first_account_id, program_id_to_uuid, trader_id_to_uuid
from domain.money import Money, check_currency
from domain.payment import (
    CHALLENGE,
    DEPOSIT,
    DISPUTE_MOVED,
    UNALLOCATED,
    Payment,
    WebhookDelivery,
)
from domain.payout import Payout
from domain.program import ProgramDefinition
from domain.trade import Trade, parse_equity_mark
from ledger import chain, stripe_events
from ledger.config import database_url_to_env
from ledger.encoding import ComposedJSONTranscoder
from ledger.grouping import TradeGrouper

T = TypeVar("T")
_LOG = logging.getLogger(__name__)

MAX_ATTEMPTS = 12
# A batch decides all its trades again on every collision, so writers posting single trades
# to its accounts can keep beating it: after this many collisions it is applied in two
# halves, in order, each retried (and halved) the same way.
BATCH_ATTEMPTS = 4
HOT_ACCOUNTS = 20_000  # accounts kept as last saved by this process
SNAPSHOT_EVERY = 200  # account events between snapshots
MAX_BATCH_TRADES = 1000
PURCHASE_METHODS = ("manual", "wallet")
# The purchase id of a challenge paid at Stripe: `stripe:` and its PaymentIntent id.
PROCESSOR_PURCHASE_PREFIX = "stripe:"
_ID_MAX_LENGTH = 128


PayoutReply = tuple[Payout, int | None]


class _StaleRead(Exception):
    """Aggregates read one after another do not agree: another command committed between
    the reads. Retried like a concurrency conflict."""


@dataclass(frozen=True)
class AccountReply:
    account: TradingAccount
    duplicate: bool
    position: int | None


@dataclass(frozen=True)
class BatchResult:
    account_id: str
    trade_id: str | None
    result: str  # created | duplicate | rejected
    error: dict[str, Any] | None = None


@dataclass
class _BatchAccount:
    account: TradingAccount | None
    error: DomainError | None = None
    opened: list[TradingAccount] = field(default_factory=list)


class _HotAccounts:
    """A bounded LRU of accounts as this process last saved them."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._items: OrderedDict[UUID, TradingAccount] = OrderedDict()
        self._lock = threading.Lock()

    def copy_of(self, aggregate_id: UUID) -> TradingAccount | None:
        with self._lock:
            account = self._items.get(aggregate_id)
            if account is None:
                return None
            self._items.move_to_end(aggregate_id)
        return copy.deepcopy(account)

    def remember(self, account: TradingAccount) -> None:
        # A copy, so replies and later commands cannot change what is remembered.
        remembered = copy.deepcopy(account)
        with self._lock:
            self._items[account.id] = remembered
            self._items.move_to_end(account.id)
            while len(self._items) > self.size:
                self._items.popitem(last=False)

    def forget(self, aggregate_id: UUID) -> None:
        with self._lock:
            self._items.pop(aggregate_id, None)


def _project(aggregate: Any, events: Iterable[Any]) -> Any:
    """The library's `project_aggregate` without its per-event `assert isinstance(event,
    CanMutateProtocol)`: a runtime-checkable Protocol, checked with inspect.getattr_static
    on every event, was about a quarter of the CPU of replaying an account. Every stored
    event and snapshot here has `mutate`; one that had not would fail just the same."""
    for event in events:
        aggregate = event.mutate(aggregate)
    return aggregate


class _Repository(Repository[UUID]):
    """The library's repository, replaying with `_project` unless told otherwise."""

    def get(
        self,
        aggregate_id: UUID,
        *,
        version: int | None = None,
        projector_func: Any = _project,
        fastforward_skipping: bool = False,
        deepcopy_from_cache: bool = True,
    ) -> Any:
        return super().get(
            aggregate_id,
            version=version,
            projector_func=projector_func,
            fastforward_skipping=fastforward_skipping,
            deepcopy_from_cache=deepcopy_from_cache,
        )


class _Collected(ProcessingEvent[UUID]):
    """The library's `ProcessingEvent` collecting from the ledger's aggregates without
    its two runtime-checkable Protocol `isinstance` checks per object (each walks the
    class with inspect.getattr_static: ~4% of a 1,000-account batch). Aggregates are
    told by their base class; anything else is collected as the library does."""

    def collect_events(self, *objs: Any, **kwargs: Any) -> None:
        for obj in objs:
            if isinstance(obj, Aggregate):
                self.events.extend(obj.collect_events())
                self.aggregates[obj.id] = obj
            elif obj is not None:
                super().collect_events(obj)
        self.saved_kwargs.update(kwargs)


class PropLedger(Application[UUID]):
    name = "propledger"
    # Long accounts load from their latest snapshot plus the events after it. Snapshots
    # are a cache of what the events say: export, replay and the chain ignore them.
    snapshotting_intervals: ClassVar[dict[type[Any], int]] = {TradingAccount: SNAPSHOT_EVERY}

    def __init__(
        self,
        database_url: str,
        env: dict[str, str] | None = None,
        *,
        clock: Callable[[], datetime] | None = None,
        group_writes: bool = False,
        group_window_ms: float = 0,
        stamp_events: bool = False,
    ) -> None:
        # The one clock of the ledger (payout timing, approval times); tests give their own.
        self.clock = clock or (lambda: datetime.now(UTC))
        # Only `propledger demo` sets this: every save is stamped with the clock's instant
        # (events, created/modified times, chain links), so a demo store's history carries
        # simulated business time. The clock must never go back nor past the real now.
        self.stamp_events = stamp_events
        settings = database_url_to_env(database_url)
        # Aggregates stay cached between commands and are fast-forwarded with the events
        # other processes recorded since; commands work on deep copies, so a command that
        # loses a race leaves the cache untouched.
        settings["AGGREGATE_CACHE_MAXSIZE"] = "5000"
        settings.update(env or {})
        super().__init__(env=settings)
        self._hot = _HotAccounts(HOT_ACCOUNTS)
        # Single trade posts from concurrent requests decided and saved together: what is
        # queued while a save commits goes into the next one; `group_window_ms` also
        # waits that long for more (off when neither is set).
        self._grouper: TradeGrouper | None = (
            TradeGrouper(self, group_window_ms / 1000)
            if group_writes or group_window_ms > 0
            else None
        )

    # Helpers ------------------------------------------------------------------------

    def _retrying(self, command: Callable[[], T], attempts: int = MAX_ATTEMPTS) -> T:
        """Runs `command` again when a concurrent writer won the race for an aggregate."""
        for attempt in range(1, attempts + 1):
            try:
                return command()
            except (IntegrityError, _StaleRead):
                if attempt == attempts:
                    raise
                time.sleep(random.uniform(0, 0.002 * 2 ** min(attempt, 6)))  # noqa: S311
        raise AssertionError("unreachable")

    def save(self, *objs: Any, **kwargs: Any) -> list[Recording[UUID]]:
        """`Application.save` of eventsourcing 9.5, line for line, collecting with
        `_Collected`."""
        processing_event = _Collected()
        processing_event.collect_events(*objs, **kwargs)
        recordings: list[Recording[UUID]] = self._record(processing_event)
        try:
            self._take_snapshots(processing_event)
        except Exception:
            # The events are committed: the command's answer is theirs. A snapshot is a
            # cache (loads replay from the one before, or from the start), so a store that
            # failed just after the commit must not turn a recorded trade into a 5xx.
            _LOG.warning("snapshot not taken after a committed save", exc_info=True)
        self._notify(recordings)
        self.notify(processing_event.events)  # the library's deprecated hook, as it calls it
        return recordings

    def _record(self, processing_event: Any) -> Any:
        """Every event of one save carries the save's instant (its first event's time), so
        a reading `as_of` any instant sees a save whole or not at all."""
        events = processing_event.events
        if self.stamp_events and events:
            return self._record_stamped(processing_event, self.clock().astimezone(UTC))
        if len(events) > 1:
            instant = min(event.timestamp for event in events)
            for event in events:
                object.__setattr__(event, "timestamp", instant)
            # Keep the saved objects as a reload would show them.
            for aggregate in processing_event.aggregates.values():
                if aggregate.created_on > instant:
                    aggregate._created_on = instant
                aggregate._modified_on = instant
        return super()._record(processing_event)

    def _record_stamped(self, processing_event: Any, instant: datetime) -> Any:
        """A save at `instant` of the ledger's clock instead of the wall clock."""
        created = set()
        for event in processing_event.events:
            object.__setattr__(event, "timestamp", instant)
            if isinstance(event, CanInitAggregate):
                created.add(event.originator_id)
        for aggregate in processing_event.aggregates.values():
            if aggregate.id in created:
                aggregate._created_on = instant
            aggregate._modified_on = instant
        with chain.recording_at(instant):
            return super()._record(processing_event)

    def _save(self, *aggregates: Any) -> int | None:
        try:
            recordings = self.save(*aggregates)
        except IntegrityError:
            for aggregate in aggregates:
                if aggregate is not None:
                    self._hot.forget(aggregate.id)
            raise
        for aggregate in aggregates:
            if isinstance(aggregate, TradingAccount):
                self._hot.remember(aggregate)
        return recordings[-1].notification.id if recordings else None

    def _command_account(self, account_id: str) -> TradingAccount:
        """The account a write command decides on: this process's copy as it last saved
        it, without asking the store. If another process wrote since, the save collides
        on the version and the retry reads the store; so a stale copy costs a retry, never
        a wrong decision (a trade id another process recorded is found on that retry)."""
        aggregate_id = _parse_uuid(account_id, "account")
        cached = self._hot.copy_of(aggregate_id)
        if isinstance(cached, TradingAccount):
            return cached
        return self.account(account_id)

    def construct_transcoder(self) -> Transcoder:
        """The library's JSON transcoder, composing its text directly (ledger/encoding.py:
        the same bytes, a third of the time); a transcoder chosen by topic is left be."""
        if self.factory.env.get(self.factory.TRANSCODER_TOPIC):
            return super().construct_transcoder()
        transcoder = ComposedJSONTranscoder()
        self.register_transcodings(transcoder)
        return transcoder

    def construct_repository(self) -> Repository[UUID]:
        """As the library constructs it (eventsourcing 9.5, same settings), as a
        `_Repository`."""
        maxsize = self.env.get(self.AGGREGATE_CACHE_MAXSIZE)
        return _Repository(
            event_store=self.events,
            snapshot_store=self.snapshots,
            cache_maxsize=int(maxsize) if maxsize else None,
            fastforward=strtobool(self.env.get(self.AGGREGATE_CACHE_FASTFORWARD, "y")),
            fastforward_skipping=strtobool(
                self.env.get(self.AGGREGATE_CACHE_FASTFORWARD_SKIPPING, "n")
            ),
            deepcopy_from_cache=strtobool(self.env.get(self.DEEPCOPY_FROM_AGGREGATE_CACHE, "y")),
        )

    def position(self) -> int:
        """The newest position of the event log (0 when empty)."""
        return self.recorder.max_notification_id() or 0

    def _get(self, aggregate_id: UUID, kind: type[T], label: str, key: str) -> T:
        try:
            aggregate: Any = self.repository.get(aggregate_id)
        except AggregateNotFoundError:
            raise NotFound(f"{label} {key} not found", code=f"unknown_{label}") from None
        if not isinstance(aggregate, kind):
            raise NotFound(f"{label} {key} not found", code=f"unknown_{label}")
        return aggregate

    def account(self, account_id: str) -> TradingAccount:
        return self._get(_parse_uuid(account_id, "account"), TradingAccount, "account", account_id)

    def program(self, program_id: str, version: int | None = None) -> Program:
        """The program, or its definition as it was at `version` (the version an account
        pins and is judged by)."""
        program = self._get(program_id_to_uuid(program_id), Program, "program", program_id)
        if version is None or version == program.version:
            return program
        if not 1 <= version < program.version:
            raise NotFound(
                f"program {program_id} has no version {version} (it is at {program.version})",
                code="unknown_program_version",
            )
        earlier: Any = self.repository.get(program.id, version=version)
        assert isinstance(earlier, Program)
        return earlier

    # Programs -----------------------------------------------------------------------

    def define_program(
        self, body: Any, actor: str | None = None
    ) -> tuple[Program, bool, int | None]:
        """Define a program, or record a new version of it; (program, changed, position)."""
        definition = ProgramDefinition.parse(body)

        def command() -> tuple[Program, bool, int | None]:
            try:
                program = self.program(definition.program_id)
            except NotFound:
                program = Program.define(definition, actor)
                return program, True, self._save(program)
            if not program.revise(definition, actor):
                return program, False, None
            return program, True, self._save(program)

        return self._retrying(command)

    # Purchases ----------------------------------------------------------------------

    def purchase(self, body: dict[str, Any], actor: str | None = None) -> AccountReply:
        """Record a challenge purchase and open its phase-1 account (once per purchase_id)."""
        # Its ids' rules are asked of a new purchase only (below): one recorded before a
        # rule must still be found by its repeat, not refused.
        purchase_id = _external_id(body.get("purchase_id"), "purchase_id", known=True)
        if purchase_id.startswith(PROCESSOR_PURCHASE_PREFIX):
            # A processor payment's account is keyed by this id: one recorded by hand
            # would take it, and the payment could then never be booked.
            raise InvalidInput(
                f"purchase ids starting with {PROCESSOR_PURCHASE_PREFIX!r} are the ids of "
                "Stripe payments; record this purchase under another id",
                code="invalid_input",
                details={"field": "purchase_id"},
            )
        trader_id = _external_id(body.get("trader_id"), "trader_id", known=True)
        program_id = _external_id(body.get("program_id"), "program_id")
        method = body.get("method")
        if method not in PURCHASE_METHODS:
            raise InvalidInput(
                "method must be 'manual' or 'wallet'",
                code="invalid_method",
                details={"field": "method"},
            )
        currency = check_currency(body.get("currency"))
        amount = Money.of(body.get("amount"), currency)
        if amount.amount < 0:
            raise InvalidInput("amount must not be negative", code="invalid_amount")
        purchase = {
            "purchase_id": purchase_id,
            "method": method,
            "amount": amount.amount,
            "currency": currency,
        }
        account_id = first_account_id(purchase_id)

        def command() -> AccountReply:
            try:
                existing: Any = self.repository.get(account_id)
            except AggregateNotFoundError:
                pass
            else:
                assert isinstance(existing, TradingAccount)
                _check_same_purchase(existing, trader_id, program_id, purchase)
                return AccountReply(existing, duplicate=True, position=None)
            _external_id(purchase_id, "purchase_id")
            _external_id(trader_id, "trader_id")
            program = self.program(program_id)
            trader = self._trader_or_new(trader_id)
            if method == "wallet":
                if amount.amount > 0:
                    trader.pay_from_wallet(amount, purchase_id)  # books its own entry
                lines: list[dict[str, Any]] = []
            else:
                lines = journal.transfer_lines(
                    journal.ASSETS_BANK, journal.REVENUE_CHALLENGE_FEES, amount
                )
            account = self._open_first_account(
                account_id, trader, program, purchase=purchase, journal_lines=lines, actor=actor
            )
            return AccountReply(account, duplicate=False, position=self._save(trader, account))

        return self._retrying(command)

    def _trader_or_new(self, trader_id: str) -> Trader:
        try:
            trader: Any = self.repository.get(trader_id_to_uuid(trader_id))
        except AggregateNotFoundError:
            return Trader.register(trader_id)
        assert isinstance(trader, Trader)
        return trader

    def trader(self, trader_id: str) -> Trader:
        return self._get(trader_id_to_uuid(trader_id), Trader, "trader", trader_id)

    def _open_first_account(
        self,
        account_id: UUID,
        trader: Trader,
        program: Program,
        *,
        purchase: dict[str, Any],
        journal_lines: list[dict[str, Any]],
        actor: str | None = None,
    ) -> TradingAccount:
        account = TradingAccount.open(
            account_id=account_id,
            trader_id=trader.trader_id,
            program=program.definition,
            program_version=program.version,
            stage=program.definition.first_stage,
            purchase=purchase,
            journal=journal_lines,
            actor=actor,
        )
        trader.add_account(str(account_id))
        if trader.is_suspended:
            account.suspend("trader suspended: payment dispute")
        return account

    def _trader_accounts(
        self, trader: Trader, pending: dict[str, TradingAccount]
    ) -> list[TradingAccount]:
        """Every account of the trader: each purchase's first account and the accounts its
        passes opened after it. `pending` holds accounts this command opened or loaded and
        has not saved yet: they are used as they are, not loaded again."""
        accounts = []
        for first_id in trader.account_ids:
            next_id: str | None = first_id
            while next_id is not None:
                account = pending.get(next_id) or self.account(next_id)
                accounts.append(account)
                next_id = account.next_account_id
        return accounts

    def _apply_suspension(
        self, trader: Trader, reason: str, pending: dict[str, TradingAccount] | None = None
    ) -> list[TradingAccount]:
        changed = []
        for account in self._trader_accounts(trader, pending or {}):
            moved = account.suspend(reason) if trader.is_suspended else account.reinstate(reason)
            if moved:
                changed.append(account)
        return changed

    def reinstate_trader(self, trader_id: str, actor: str) -> tuple[Trader, int | None]:
        """An admin lifts the suspension a lost dispute left."""

        def command() -> tuple[Trader, int | None]:
            trader = self.trader(trader_id)
            if not trader.reinstate(actor):
                return trader, None
            accounts = self._apply_suspension(trader, f"reinstated by {actor}")
            return trader, self._save(trader, *accounts)

        return self._retrying(command)

    # Payments (Stripe) ----------------------------------------------------------------

    def apply_stripe_event(self, event: dict[str, Any]) -> tuple[str, bool, int | None]:
        """Apply one verified Stripe event once; (outcome, duplicate, position)."""
        fact = stripe_events.parse(event)
        delivery_id = uuid5(NAMESPACE, f"webhook/stripe/{fact.event_id}")

        def command() -> tuple[str, bool, int | None]:
            if delivery_id in self.repository:
                return "duplicate", True, None
            touched: list[Any] = []
            outcome = self._apply_fact(fact, touched) if fact.payment_ref else "recorded"
            delivery = WebhookDelivery._create(
                WebhookDelivery.Recorded,
                id=delivery_id,
                processor=stripe_events.PROCESSOR,
                event_id=fact.event_id,
                event_type=fact.event_type,
                object_id=fact.object_id,
                outcome=outcome,
            )
            return outcome, False, self._save(delivery, *touched)

        return self._retrying(command)

    def _payment(self, payment_ref: str) -> Payment | None:
        try:
            payment: Any = self.repository.get(_payment_id(payment_ref))
        except AggregateNotFoundError:
            return None
        assert isinstance(payment, Payment)
        return payment

    def _apply_fact(self, fact: stripe_events.StripeFact, touched: list[Any]) -> str:
        assert fact.payment_ref is not None
        payment = self._payment(fact.payment_ref) or Payment.open(
            _payment_id(fact.payment_ref), stripe_events.PROCESSOR, fact.payment_ref
        )
        touched.append(payment)
        trader: Trader | None = None
        if fact.kind == stripe_events.RECEIVED:
            outcome, trader = self._receive(payment, fact, touched)
        elif fact.kind == stripe_events.REFUND:
            assert fact.amount is not None
            payment.report_refund(fact.amount, fact.event_id)
            outcome = "refund"
        elif fact.kind == stripe_events.DISPUTE:
            assert fact.dispute_id is not None
            assert fact.dispute_status is not None
            payment.change_dispute(fact.dispute_id, fact.dispute_status, fact.event_id)
            # As it stands after this event (a lost dispute stays lost, a closed one closed).
            outcome = f"dispute_{payment.disputes.get(fact.dispute_id, fact.dispute_status)}"
        else:
            assert fact.amount is not None
            assert fact.fee is not None
            assert fact.direction is not None
            assert fact.dispute_id is not None
            payment.move_dispute_funds(
                fact.dispute_id,
                fact.direction,
                fact.amount,
                fact.fee,
                fact.event_id,
                other_fees=fact.other_fees,
            )
            outcome = f"dispute_funds_{fact.direction}"
        if payment.trader_id is not None:
            if trader is None:
                trader = self._trader_or_new(payment.trader_id)
                touched.append(trader)
            self._sync_trader(payment, trader, touched)
        return outcome

    def _receive(
        self, payment: Payment, fact: stripe_events.StripeFact, touched: list[Any]
    ) -> tuple[str, Trader | None]:
        assert fact.amount is not None
        assert fact.payment_ref is not None
        purpose = fact.purpose or UNALLOCATED
        program: Program | None = None
        if purpose == CHALLENGE:
            try:
                program = self.program(fact.program_id or "")
            except NotFound:
                purpose = UNALLOCATED  # booked to liabilities:unallocated for finance
        # An unallocated payment keeps the trader and program it named (finance sees them
        # when resolving it), and a trader it names is registered (DESIGN: "a purchase or
        # payment naming an unknown trader_id registers that trader").
        trader_id = fact.trader_id
        if not payment.receive(
            purpose=purpose,
            trader_id=trader_id,
            program_id=fact.program_id if purpose != DEPOSIT else None,
            amount=fact.amount,
            source_event=fact.event_id,
        ):
            if purpose == DEPOSIT and trader_id is not None:
                # The session came first without metadata (booked unallocated); its intent
                # names the trader: the deposit reaches the wallet in either order.
                moved = payment.identify_deposit(trader_id, fact.event_id)
                if moved is not None:
                    trader = self._trader_or_new(trader_id)
                    touched.append(trader)
                    if moved.amount > 0:
                        trader.credit_wallet(moved, fact.payment_ref)
                    return "deposit", trader
            return "duplicate_payment", None
        if trader_id is None:
            return "unallocated", None
        trader = self._trader_or_new(trader_id)
        touched.append(trader)
        if purpose == UNALLOCATED:
            return "unallocated", trader
        if purpose == DEPOSIT:
            trader.credit_wallet(fact.amount, fact.payment_ref)
            return "deposit", trader
        assert program is not None
        account = self._open_first_account(
            first_account_id(f"{PROCESSOR_PURCHASE_PREFIX}{fact.payment_ref}"),
            trader,
            program,
            purchase={
                "purchase_id": f"{PROCESSOR_PURCHASE_PREFIX}{fact.payment_ref}",
                "method": "processor",
                "amount": fact.amount.amount,
                "currency": fact.amount.currency,
            },
            journal_lines=[],  # the payment books the receipt
        )
        touched.append(account)
        return "challenge", trader

    def _sync_trader(self, payment: Payment, trader: Trader, touched: list[Any]) -> None:
        """Carry what the payment knows over to its trader: refunds of a deposit leave the
        wallet, and the payment's disputes decide the trader's suspension."""
        refunded = payment.wallet_refunded
        if payment.purpose == DEPOSIT and refunded is not None:
            already = trader.deposit_refunds.get(payment.payment_ref, Decimal(0))
            due = refunded.amount - already
            if due > 0:
                trader.refund_deposit(Money(due, refunded.currency), payment.payment_ref)
        changed = False
        for dispute_id, status in sorted(payment.disputes.items()):
            changed = trader.note_dispute(dispute_id, status) or changed
        if changed:
            reason = "payment dispute" if trader.is_suspended else "dispute closed"
            pending = {str(a.id): a for a in touched if isinstance(a, TradingAccount)}
            for account in self._apply_suspension(trader, reason, pending):
                if str(account.id) not in pending:
                    touched.append(account)

    def _release_disputes(
        self, payment: Payment, named_before: str | None, named_now: str, touched: list[Any]
    ) -> None:
        """A payment that named another trader before finance allocated it: its disputes
        are no longer that trader's (they are noted `moved`), so a suspension they caused
        there lifts; the trader it names now carries them (until 2026-12-07 the trader
        named first stayed suspended for good, even after the dispute was won)."""
        if named_before is None or named_before == named_now or not payment.disputes:
            return
        try:
            before = self.trader(named_before)
        except NotFound:
            return
        version, changed = before.version, False
        for dispute_id in sorted(payment.disputes):
            if dispute_id in before.disputes:
                changed = before.note_dispute(dispute_id, DISPUTE_MOVED) or changed
        if before.version != version:
            touched.append(before)
        if changed:
            pending = {str(a.id): a for a in touched if isinstance(a, TradingAccount)}
            for account in self._apply_suspension(before, "dispute moved", pending):
                if str(account.id) not in pending:
                    touched.append(account)

    def allocate_payment(
        self, payment_ref: str, body: dict[str, Any], actor: str
    ) -> tuple[Payment, TradingAccount, int | None]:
        """Finance matches an unallocated payment to a trader and a program."""
        trader_id = _external_id(body.get("trader_id"), "trader_id")
        program_id = _external_id(body.get("program_id"), "program_id")

        def command() -> tuple[Payment, TradingAccount, int | None]:
            payment = self._payment(payment_ref)
            if payment is None or not payment.is_received:
                raise NotFound(f"payment {payment_ref} not found", code="unknown_payment")
            program = self.program(program_id)
            trader = self._trader_or_new(trader_id)
            account_id = first_account_id(f"{PROCESSOR_PURCHASE_PREFIX}{payment_ref}")
            named_before = payment.trader_id
            payment.allocate(
                trader_id=trader_id, program_id=program_id, account_id=str(account_id), actor=actor
            )
            assert payment.amount is not None
            account = self._open_first_account(
                account_id,
                trader,
                program,
                purchase={
                    "purchase_id": f"{PROCESSOR_PURCHASE_PREFIX}{payment_ref}",
                    "method": "processor",
                    "amount": payment.amount.amount,
                    "currency": payment.amount.currency,
                },
                journal_lines=[],  # the allocation books the move
            )
            touched: list[Any] = [payment, trader, account]
            self._sync_trader(payment, trader, touched)
            self._release_disputes(payment, named_before, trader_id, touched)
            return payment, account, self._save(*touched)

        return self._retrying(command)

    # Payouts --------------------------------------------------------------------------

    def payout(self, payout_id: str) -> Payout:
        return self._get(_parse_uuid(payout_id, "payout"), Payout, "payout", payout_id)

    def request_payout(self, account_id: str, requested_by: str) -> PayoutReply:
        """Ask for all of the account's profit; refused with every failed condition."""

        def command() -> PayoutReply:
            account = self.account(account_id)
            trader = self.trader(account.trader_id)
            now = self.clock()
            payout_id = uuid5(NAMESPACE, f"payout/{account.id}/{account.version}")
            split = account.request_payout(
                str(payout_id),
                now=now,
                trader_suspended=trader.is_suspended,
                fee_kept=self._fee_kept(account) if account.refunds_fee_next else None,
                opened_activity_at=self.opened_activity_at(account),
            )
            payout = Payout.request(
                payout_id=payout_id,
                account_id=str(account.id),
                trader_id=account.trader_id,
                program_id=account.program_id,
                split=split,
                requested_by=requested_by,
                requested_at=now,
            )
            return payout, self._save(payout, account)

        return self._retrying(command)

    def opened_activity_at(self, account: TradingAccount) -> datetime | None:
        """When `account` opened on the accounts' own clock: the furthest that clock had
        reached at the passes that led to it (each phase's newest trade or mark when it
        passed), so a phase whose trades are dated before an earlier phase's cannot move
        the opening back (None for a first phase, opened by a purchase)."""
        reached: datetime | None = None
        previous_id = account.previous_account_id
        while previous_id is not None:
            previous = self.account(previous_id)
            at = previous.passed_activity_at
            if at is not None and (reached is None or at > reached):
                reached = at
            previous_id = previous.previous_account_id
        return reached

    def _kept_of_wallet_purchase(self, first: TradingAccount, paid: Money) -> Money:
        """A wallet purchase's amount less its share of what the wallet owes (below zero:
        a deposit refunded after it was spent). The wallet is one pot, so what it owes is
        charged to its purchases in that currency oldest first, each up to its amount:
        one refunded deposit of 540.00 behind two purchases of 540.00 takes one fee refund,
        not both (an audit found both taken). Only purchases whose fee refund is still to
        come take a share: charging one already refunded would recover nothing."""
        trader = self.trader(first.trader_id)
        owed = -trader.wallet_balance(paid.currency).amount
        if owed <= 0:
            return paid
        for account_id in trader.account_ids:
            bought = first if account_id == str(first.id) else self.account(account_id)
            purchase = bought.purchase or {}
            if purchase.get("method") != "wallet" or purchase.get("currency") != paid.currency:
                continue
            if bought is not first and not self._fee_refund_to_come(bought):
                continue
            charged = min(owed, Decimal(str(purchase["amount"])))
            if bought is first:
                return paid - Money(charged, paid.currency)
            owed -= charged
            if owed <= 0:
                return paid
        return paid

    def _fee_refund_to_come(self, first: TradingAccount) -> bool:
        """Whether the challenge `first` opened may still give its fee back: its program
        refunds the fee and its funded account (if reached) has had no payout approved."""
        if not first.program.funded_terms.refund_fee_with_first_payout:
            return False
        last = first
        while last.next_account_id is not None:
            last = self.account(last.next_account_id)
        return not last.approved_payouts

    def _fee_kept(self, account: TradingAccount) -> Money | None:
        """What the firm kept of the payment that bought this account's challenge (its
        first phase's purchase): the amount paid, less refunds and chargebacks for a
        processor payment; for a wallet purchase, less its share of what the trader's
        wallet owes (`_kept_of_wallet_purchase`). None when the purchase is not recorded."""
        first = account
        while first.previous_account_id is not None:
            first = self.account(first.previous_account_id)
        purchase = first.purchase
        if not purchase or purchase.get("amount") is None:
            return None
        paid = Money(Decimal(str(purchase["amount"])), str(purchase["currency"]))
        if purchase.get("method") == "wallet":
            return self._kept_of_wallet_purchase(first, paid)
        purchase_id = str(purchase.get("purchase_id") or "")
        if purchase.get("method") != "processor" or not purchase_id.startswith(
            PROCESSOR_PURCHASE_PREFIX
        ):
            return paid
        payment = self._payment(purchase_id.removeprefix(PROCESSOR_PURCHASE_PREFIX))
        kept = None if payment is None else payment.unrefunded
        if payment is None or kept is None or kept.currency != paid.currency:
            return paid
        return kept - Money(payment.charged_back, paid.currency)

    def approve_payout(
        self, payout_id: str, approver: str, approver_trader_id: str | None = None
    ) -> PayoutReply:
        """Approve, withdraw the profit and book the entry, all in one save."""

        def command() -> PayoutReply:
            payout = self.payout(payout_id)
            account = self.account(payout.account_id)
            trader = self.trader(payout.trader_id)
            now = self.clock()
            payout.approve(approver, now, approver_trader_id=approver_trader_id)
            if account.pending_payout_id != str(payout.id):
                # Another approval committed between reading the payout and the account:
                # read both again, and the payout will say it is approved.
                raise _StaleRead
            if trader.is_suspended:
                raise Conflict(
                    f"trader {trader.trader_id} is suspended: payouts are blocked",
                    code="trader_suspended",
                )
            promised = payout.breakdown.fee_refund
            if promised.amount > 0:
                # The challenge's payment may have been refunded or charged back since the
                # request: the fee it fixed would give back money the firm no longer has.
                due = account.fee_to_refund(self._fee_kept(account))
                if due.currency != promised.currency or due < promised:
                    raise Conflict(
                        f"the fee refund of this payout ({promised}) is now {due}: the "
                        "challenge's payment was refunded or charged back since it was "
                        "requested; reject it and request again",
                        code="fee_refund_changed",
                        details={"fee_refund": str(promised.amount), "now": str(due.amount)},
                    )
            account.withdraw_payout(str(payout.id), payout.breakdown.profit, now)
            return payout, self._save(payout, account)

        return self._retrying(command)

    def reject_payout(self, payout_id: str, approver: str, reason: str) -> PayoutReply:
        def command() -> PayoutReply:
            payout = self.payout(payout_id)
            account = self.account(payout.account_id)
            payout.reject(approver, reason)
            account.release_payout(str(payout.id))
            return payout, self._save(payout, account)

        return self._retrying(command)

    def mark_payout_paid(self, payout_id: str, by: str, reference: str) -> PayoutReply:
        def command() -> PayoutReply:
            payout = self.payout(payout_id)
            payout.mark_paid(by, reference, self.clock())
            return payout, self._save(payout)

        return self._retrying(command)

    # Trades and equity --------------------------------------------------------------

    def post_trade(self, account_id: str, body: Any, actor: str | None = None) -> AccountReply:
        """A single trade post: grouped with concurrent posts into one save when write
        grouping is on, else recorded on its own."""
        if self._grouper is not None:
            return self._grouper.submit(account_id, body, actor)
        return self.record_trade(account_id, body, actor)

    def post_trade_later(
        self, account_id: str, body: Any, actor: str | None = None
    ) -> Future[AccountReply] | None:
        """`post_trade` for callers that wait asynchronously: the grouped post's future
        (cancel it before its group forms and the trade is never decided), or None when
        write grouping is off (then call `post_trade`)."""
        if self._grouper is None:
            return None
        return self._grouper.enqueue(account_id, body, actor)

    def close(self) -> None:
        if self._grouper is not None:
            self._grouper.close()
        super().close()

    def record_trade(self, account_id: str, body: Any, actor: str | None = None) -> AccountReply:
        def command() -> AccountReply:
            account = self._command_account(account_id)
            trade = Trade.parse(body, account.currency)
            outcome = account.close_trade(trade, actor)
            if outcome.duplicate:
                # Recorded before: nothing changes, and the reply is the account as it
                # stands in the store (this process's copy may lag another process's
                # writes: a duplicate saves nothing, so it never collides to find out).
                # An Idempotency-Key, not a trade id, replays a first answer.
                return AccountReply(self.account(account_id), duplicate=True, position=None)
            return AccountReply(
                account, duplicate=False, position=self._save(account, outcome.opened)
            )

        return self._retrying(command)

    def record_equity(self, account_id: str, body: Any, actor: str | None = None) -> AccountReply:
        def command() -> AccountReply:
            account = self._command_account(account_id)
            equity, at = parse_equity_mark(body, account.currency)
            if not account.mark_equity(equity, at, actor):
                # Nothing to save: answer from the store, not from this process's copy.
                return AccountReply(self.account(account_id), duplicate=True, position=None)
            return AccountReply(account, duplicate=False, position=self._save(account))

        return self._retrying(command)

    def record_trades_batch(
        self, items: list[Any], actor: str | None = None
    ) -> tuple[list[BatchResult], int | None]:
        """Apply up to 1,000 trades, per account in the order given, in one transaction."""
        if len(items) > MAX_BATCH_TRADES:
            raise InvalidInput(
                f"a batch holds at most {MAX_BATCH_TRADES} trades, got {len(items)}",
                code="batch_too_large",
            )
        return self._apply_in_halves(items, actor)

    def _apply_in_halves(
        self, items: list[Any], actor: str | None
    ) -> tuple[list[BatchResult], int | None]:
        """The batch in one transaction; when concurrent writers to its accounts keep
        winning, its two halves one after the other (each the same way), down to single
        trades. Order is kept: every half sees what the halves before it saved (an account
        a pass opened included), and a failed save stored nothing to redo."""
        if len(items) <= 1:
            try:
                return self._retrying(lambda: self._apply_batch(items, actor))
            except (IntegrityError, _StaleRead):
                # Earlier halves may be saved already: this one trade is answered as not
                # applied (send it again) rather than the whole batch as a failure.
                return [_busy(item) for item in items], None
        try:
            return self._retrying(lambda: self._apply_batch(items, actor), BATCH_ATTEMPTS)
        except (IntegrityError, _StaleRead):
            half = len(items) // 2
            first, first_position = self._apply_in_halves(items[:half], actor)
            try:
                second, second_position = self._apply_in_halves(items[half:], actor)
            except Exception as error:
                if first_position is None:
                    raise  # nothing of the batch is saved: it fails whole, as before
                # The first half is committed: a 5xx would tell the client nothing was.
                # The rest is answered as not applied (send it again), the saved part as
                # what it is.
                _LOG.exception("a batch's later half failed after its first half was saved")
                return first + [_not_applied(item, error) for item in items[half:]], (
                    first_position
                )
            return first + second, second_position or first_position

    def _apply_batch(
        self, items: list[Any], actor: str | None
    ) -> tuple[list[BatchResult], int | None]:
        # One entry per account however its id is spelt (case, braces, hyphens), loaded
        # together before any trade is decided.
        keys: list[tuple[str, str] | None] = []
        first_spelling: dict[str, str] = {}
        for item in items:
            if not isinstance(item, dict):
                keys.append(None)
                continue
            raw_account_id = item.get("account_id")
            account_key = raw_account_id if isinstance(raw_account_id, str) else ""
            canonical = _canonical_id(account_key)
            if account_key:
                first_spelling.setdefault(canonical, account_key)
            keys.append((account_key, canonical))
        accounts = self._load_for_batch(first_spelling)
        # Accounts a pass opened earlier in this batch: later items may trade on them, as
        # single posts sent in the same order could.
        opened_here: dict[str, TradingAccount] = {}
        results: list[BatchResult] = []
        for item, key in zip(items, keys, strict=True):
            if key is None:
                results.append(_rejected("", None, InvalidInput("a trade must be an object")))
                continue
            account_key, canonical = key
            trade_body = {key: value for key, value in item.items() if key != "account_id"}
            raw_trade_id = trade_body.get("trade_id")
            trade_id = (
                str(raw_trade_id)  # a ticket number written as an integer (Trade.parse)
                if type(raw_trade_id) is int and raw_trade_id >= 0
                else raw_trade_id
                if isinstance(raw_trade_id, str)
                else None
            )
            if not account_key:
                error = InvalidInput(
                    "account_id is required: the id of the account the trade belongs to",
                    code="invalid_input",
                    details={"field": "account_id"},
                )
                results.append(_rejected("", trade_id, error))
                continue
            entry = accounts[canonical]
            account = entry.account or opened_here.get(canonical)
            if account is None:
                assert entry.error is not None
                results.append(_rejected(account_key, trade_id, entry.error))
                continue
            try:
                trade = Trade.parse(trade_body, account.currency)
                outcome = account.close_trade(trade, actor)
            except DomainError as error:
                results.append(_rejected(account_key, trade_id, error))
                continue
            if outcome.opened is not None:
                entry.opened.append(outcome.opened)
                opened_here[str(outcome.opened.id)] = outcome.opened
            status = "duplicate" if outcome.duplicate else "created"
            results.append(BatchResult(account_key, trade_id, status))
        to_save: list[TradingAccount] = []
        for entry in accounts.values():
            if entry.account is not None:
                to_save.append(entry.account)
            to_save.extend(entry.opened)  # also by an account this batch opened
        return results, self._save_batch(to_save)

    def _save_batch(self, accounts: list[TradingAccount]) -> int | None:
        """Saves a batch's accounts. Unlike `_save`, a collision leaves this process's
        last-saved copies in place: they are still true states of the accounts, and the
        retry's load brings them up to date with one query instead of re-reading every
        account from its snapshot."""
        recordings = self.save(*accounts)
        for account in accounts:
            self._hot.remember(account)
        return recordings[-1].notification.id if recordings else None

    def _load_for_batch(self, first_spelling: dict[str, str]) -> dict[str, _BatchAccount]:
        """Every account of a batch, as the store has it now, in a few queries.

        This process's last-saved copies are brought up to date with the events recorded
        since (by another API process, say) in one query for all of them, and accounts
        it does not hold are read from their latest snapshot and the events after it:
        one query for the snapshots, the same one for the events. Deciding on current
        accounts, batches sent to several processes do not collide on stale copies; a
        true race still collides on the version and is retried.

        `first_spelling` maps each canonical id to the spelling that came first in the
        batch (what errors name); the result is keyed by canonical id."""
        entries: dict[str, _BatchAccount] = {}
        wanted: dict[UUID, tuple[str, str]] = {}
        for canonical, spelling in first_spelling.items():
            try:
                wanted[_parse_uuid(spelling, "account")] = (canonical, spelling)
            except DomainError as error:
                entries[canonical] = _BatchAccount(None, error)
        loaded: dict[UUID, Any] = {}
        cold: list[UUID] = []
        for aggregate_id in wanted:
            held = self._hot.copy_of(aggregate_id)
            if held is None:
                cold.append(aggregate_id)
            else:
                loaded[aggregate_id] = held
        if cold:
            assert self.snapshots is not None
            for stored in _latest_snapshots(self.snapshots.recorder, cold):
                snapshot: Any = self.snapshots.mapper.to_domain_event(stored)
                loaded[snapshot.originator_id] = snapshot.mutate(None)
        after = {aggregate_id: 0 for aggregate_id in cold}
        after.update({aggregate_id: account.version for aggregate_id, account in loaded.items()})
        mapper = self.mapper
        for stored in _events_after(self.recorder, after):
            event: Any = mapper.to_domain_event(stored)
            loaded[event.originator_id] = event.mutate(loaded.get(event.originator_id))
        for aggregate_id, (canonical, spelling) in wanted.items():
            account = loaded.get(aggregate_id)
            if isinstance(account, TradingAccount):
                entries[canonical] = _BatchAccount(account)
            else:
                missing = NotFound(f"account {spelling} not found", code="unknown_account")
                entries[canonical] = _BatchAccount(None, missing)
        # In the batch's order of first appearance, as the save's order of events.
        return {canonical: entries[canonical] for canonical in first_spelling}

    # Reads --------------------------------------------------------------------------

    def account_as_of(self, account_id: str, as_of: datetime) -> TradingAccount:
        """The account as the ledger knew it at `as_of`: its events recorded until then."""
        aggregate_id = _parse_uuid(account_id, "account")
        account: Any = None
        history: Any = self.events.get(aggregate_id)
        for event in history:
            if event.timestamp > as_of:
                break
            account = event.mutate(account)
        if not isinstance(account, TradingAccount):
            raise NotFound(
                f"account {account_id} did not exist at {as_of.isoformat()}",
                code="unknown_account",
            )
        return account

    def account_events(
        self, account_id: str, *, after_version: int = 0, limit: int = 100
    ) -> list[DomainEventProtocol[UUID]]:
        account = self.account(account_id)
        return list(self.events.get(account.id, gt=after_version, lte=after_version + limit))


def _unapplied(item: Any, error: DomainError) -> BatchResult:
    """A batch item answered `rejected` with `error` without being decided: send it again."""
    account_id = item.get("account_id") if isinstance(item, dict) else None
    trade_id = item.get("trade_id") if isinstance(item, dict) else None
    return _rejected(
        account_id if isinstance(account_id, str) else "",
        trade_id if isinstance(trade_id, str) else None,
        error,
    )


def _busy(item: Any) -> BatchResult:
    return _unapplied(
        item,
        Conflict(
            "the account was written by others on every try: send this trade again",
            code="busy",
        ),
    )


def _not_applied(item: Any, error: BaseException) -> BatchResult:
    return _unapplied(
        item,
        DomainError(
            "not applied: the store failed after earlier trades of this batch were saved; "
            "send this trade again",
            code="not_applied",
            details={"reason": type(error).__name__},
        ),
    )


def _canonical_id(value: str) -> str:
    try:
        return str(UUID(value))
    except (ValueError, TypeError, AttributeError):
        return value


def _latest_snapshots(recorder: Any, ids: list[UUID]) -> list[StoredEvent]:
    """The newest snapshot of each of `ids` that has one."""
    if isinstance(recorder, PostgresAggregateRecorder):
        query = SQL(
            "SELECT DISTINCT ON (originator_id) originator_id, originator_version, topic, "
            "state FROM {schema}.{table} WHERE originator_id = ANY(%b::{id_type}[]) "
            "ORDER BY originator_id, originator_version DESC"
        ).format(
            schema=Identifier(recorder.datastore.schema),
            table=Identifier(recorder.events_table_name),
            id_type=Identifier(recorder.datastore.originator_id_type),
        )
        return _select_stored(recorder, query, (ids,))
    found = []
    for aggregate_id in ids:
        found.extend(recorder.select_events(aggregate_id, desc=True, limit=1))
    return found


def _events_after(recorder: Any, after: dict[UUID, int]) -> list[StoredEvent]:
    """The events of each aggregate in `after` past the version given, in order."""
    if not after:
        return []
    if isinstance(recorder, PostgresAggregateRecorder):
        # One index range scan per aggregate (LATERAL). A plain join let the planner
        # merge-join against the whole events table: a full index scan on every batch,
        # growing with the log (110 ms at 115k events, where this takes ~5 ms).
        query = SQL(
            "SELECT e.originator_id, e.originator_version, e.topic, e.state "
            "FROM unnest(%b::{id_type}[], %b::bigint[]) WITH ORDINALITY AS k(id, after, n) "
            "CROSS JOIN LATERAL (SELECT originator_id, originator_version, topic, state "
            "FROM {schema}.{table} WHERE originator_id = k.id AND originator_version > k.after "
            "ORDER BY originator_version) e "
            "ORDER BY k.n, e.originator_version"
        ).format(
            schema=Identifier(recorder.datastore.schema),
            table=Identifier(recorder.events_table_name),
            id_type=Identifier(recorder.datastore.originator_id_type),
        )
        return _select_stored(recorder, query, (list(after), list(after.values())))
    found = []
    for aggregate_id, version in after.items():
        found.extend(recorder.select_events(aggregate_id, gt=version))
    return found


def _select_stored(recorder: Any, query: Any, params: tuple[Any, ...]) -> list[StoredEvent]:
    with recorder.datastore.get_connection() as connection, connection.cursor() as cursor:
        # These queries' row estimates are far too high for a thousand keys, which made
        # PostgreSQL JIT-compile them on every batch (60-100 ms of compiling for a few
        # milliseconds of index lookups). Off for the session, once per connection (the
        # library's connections are in autocommit, so the setting stays).
        if not getattr(connection, "_propledger_jit_off", False):
            cursor.execute("SET jit = off")
            connection._propledger_jit_off = True
        cursor.execute(query, params)
        return [
            StoredEvent(
                originator_id=row["originator_id"],
                originator_version=row["originator_version"],
                topic=row["topic"],
                state=bytes(row["state"]),
            )
            for row in cursor.fetchall()
        ]


def _payment_id(payment_ref: str) -> UUID:
    return uuid5(NAMESPACE, f"payment/stripe/{payment_ref}")


def _parse_uuid(value: str, label: str) -> UUID:
    try:
        return UUID(value)
    except (ValueError, TypeError, AttributeError):
        raise NotFound(f"{label} {value} not found", code=f"unknown_{label}") from None


def _external_id(value: Any, field_name: str, *, known: bool = False) -> str:
    """An id a client names; `known`: one already recorded (it was accepted then, before
    ids had to be printable, and a repeat of its command must still find it)."""
    if not isinstance(value, str) or not value.strip() or len(value) > _ID_MAX_LENGTH:
        raise InvalidInput(
            f"{field_name} must be a non-empty string of at most {_ID_MAX_LENGTH} characters",
            code="invalid_input",
            details={"field": field_name},
        )
    if not value.isprintable() and not known:
        # A newline or a right-to-left override in an id shows in reports, CSVs and the
        # console as something else than what is stored (trader ids refused them already).
        raise InvalidInput(
            f"{field_name} must be printable text (no control or formatting characters)",
            code="invalid_input",
            details={"field": field_name},
        )
    if field_name == "trader_id" and not known and not journal.is_trader_id(value):
        raise InvalidInput(
            "trader_id must be printable text (no control characters, no '/', not ending "
            "in ':', not '.' or '..'): it is part of ledger account codes such as "
            "liabilities:trader_wallet:{trader_id} and of URLs such as /v1/traders/{trader_id}",
            code="invalid_input",
            details={"field": field_name},
        )
    return value


def _check_same_purchase(
    account: TradingAccount, trader_id: str, program_id: str, purchase: dict[str, Any]
) -> None:
    recorded = account.purchase or {}
    same = (
        account.trader_id == trader_id
        and account.program_id == program_id
        and recorded.get("method") == purchase["method"]
        and recorded.get("currency") == purchase["currency"]
        and recorded.get("amount") == purchase["amount"]
    )
    if not same:
        raise Conflict(
            f"purchase {purchase['purchase_id']} was already recorded with other details",
            code="purchase_conflict",
            details={"account_id": str(account.id)},
        )


def _rejected(account_id: str, trade_id: str | None, error: DomainError) -> BatchResult:
    return BatchResult(
        account_id,
        trade_id,
        "rejected",
        {"code": error.code, "message": error.message, "details": error.details},
    )
