"""The TradingAccount aggregate: one evaluation phase or the funded stage of a purchase.

Commands decide with the pure rules in `domain.rules`; events record what happened and
what the ledger concluded (`board`: the account's public numbers after the event), so an
auditor reads the judgement as it was made and a projection needs nothing else. Applying
an event recomputes the state with the same rules, so a replay rebuilds it exactly.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

from eventsourcing.domain import Aggregate, Snapshot
from eventsourcing.utils import get_topic

from domain import rules
from domain.errors import Conflict, InvalidInput
from domain.events import RecordsActor
from domain.ids import next_account_id
from domain.money import Money
from domain.payout import Breakdown, Eligibility, PayoutRefused, breakdown
from domain.program import ProgramDefinition, StageRules
from domain.rules import ACTIVE, BREACHED, PASSED, SUSPENDED, AccountState, Breach, Calendar
from domain.trade import Trade


@dataclass(frozen=True, slots=True)
class TradeOutcome:
    """What recording one trade did: the account's version after it, whether it was a
    duplicate of a trade already recorded, and the account it opened when it passed."""

    version: int
    duplicate: bool
    opened: TradingAccount | None = None


class _TradeLog:
    """Trade ids as a snapshot stored them: `trade_id<TAB>version<TAB>fingerprint` lines
    (trade ids hold neither character). Parsed once, when first needed; the parsed map is
    never changed (each account copies it before adding to it)."""

    __slots__ = ("_parsed", "text")

    def __init__(self, text: str) -> None:
        self.text = text
        self._parsed: dict[str, tuple[int, str]] | None = None

    def parsed(self) -> dict[str, tuple[int, str]]:
        parsed = self._parsed
        if parsed is None:
            rows = [line.split("\t") for line in self.text.split("\n")] if self.text else []
            parsed = self._parsed = {t: (int(v), fp) for t, v, fp in rows}  # 3 fields each
        return parsed


# Programs as accounts pinned them, parsed: an account's Opened event and its snapshots
# carry the whole definition, and parsing it (~37 us) was a tenth of loading a cold
# account. Keyed by program id and version, and used only for an equal definition.
_PARSED_PROGRAMS: dict[tuple[str, int], tuple[dict[str, Any], ProgramDefinition]] = {}
_PARSED_PROGRAMS_MAX = 1024


def _pinned_program(data: dict[str, Any], version: int) -> ProgramDefinition:
    key = (str(data.get("program_id")), version)
    known = _PARSED_PROGRAMS.get(key)
    if known is not None and known[0] == data:
        return known[1]
    definition = ProgramDefinition.parse(data, stored=True)
    if len(_PARSED_PROGRAMS) >= _PARSED_PROGRAMS_MAX:
        _PARSED_PROGRAMS.clear()
    _PARSED_PROGRAMS[key] = (copy.deepcopy(data), definition)
    return definition


# Each trade is at most 12 digits, but a balance sums them: an active account's stays
# below 10^14 units either way (a trade may still bring one back from beyond), and so does
# a payout's profit, so that it fits the projections' 64-bit columns in minor units (up
# to four places: CLF). A payout past that stopped the payout projection for good. A
# breached or passed account records every trade (DESIGN): it pays nothing out.
_BALANCE_DIGITS = 14
BALANCE_LIMIT = Decimal(10) ** _BALANCE_DIGITS


def mark_key(at: datetime, equity: Decimal) -> str:
    """An equity mark's identity: its instant in UTC and its amount at the minor unit."""
    return f"{at.astimezone(UTC).isoformat()} {equity}"


def _trade_log_of(trades: dict[str, tuple[int, str]]) -> str:
    return "\n".join(f"{trade_id}\t{v}\t{fp}" for trade_id, (v, fp) in trades.items())


class AccountSnapshot(Snapshot):
    """A snapshot of an account as primitives (the aggregate holds domain values the
    event store's JSON transcoder does not know), so long histories load fast."""

    @classmethod
    def take(cls, aggregate: Any) -> AccountSnapshot:
        assert isinstance(aggregate, TradingAccount)
        return cls(
            originator_id=aggregate.id,
            originator_version=aggregate.version,
            timestamp=cls.create_timestamp(),
            topic=get_topic(type(aggregate)),
            state=aggregate.snapshot_state(),
        )

    def mutate(self, _: Any) -> TradingAccount:
        return TradingAccount.from_snapshot_state(
            self.originator_id, self.originator_version, self.state
        )


class TradingAccount(Aggregate):
    """Every event of an account carries `board`: its public numbers after the event."""

    Snapshot = AccountSnapshot

    class Opened(RecordsActor, Aggregate.Created):
        trader_id: str
        program: dict[str, Any]
        program_version: int
        stage: str
        purchase: dict[str, Any] | None
        previous_account_id: str | None
        board: dict[str, Any]
        journal: list[dict[str, Any]]
        actor: str | None

    class TradeClosed(RecordsActor, Aggregate.Event):
        trade: dict[str, Any]
        fingerprint: str
        board: dict[str, Any]
        actor: str | None

        def apply(self, aggregate: Any) -> None:
            assert isinstance(aggregate, TradingAccount)
            aggregate._apply_trade(self)

    class EquityMarked(RecordsActor, Aggregate.Event):
        equity: Decimal
        at: datetime
        board: dict[str, Any]
        actor: str | None

        def apply(self, aggregate: Any) -> None:
            assert isinstance(aggregate, TradingAccount)
            aggregate._apply_equity_mark(self)

    class RuleBreached(Aggregate.Event):
        rule: str
        at: datetime
        value: Decimal
        floor: Decimal
        board: dict[str, Any]

        def apply(self, aggregate: Any) -> None:
            assert isinstance(aggregate, TradingAccount)
            currency = aggregate.currency
            aggregate.status = BREACHED
            aggregate.breach = Breach(
                self.rule, self.at, Money(self.value, currency), Money(self.floor, currency)
            )

    class PhasePassed(Aggregate.Event):
        at: datetime
        next_account_id: str
        next_stage: str
        board: dict[str, Any]

        def apply(self, aggregate: Any) -> None:
            assert isinstance(aggregate, TradingAccount)
            aggregate.status = PASSED
            aggregate.passed_at = self.at
            # A late trade can pass the phase: the account's clock is then past its
            # closed_at, and the next account opens at the clock, not at the trade.
            aggregate.passed_activity_at = aggregate.activity_at or self.at
            aggregate.next_account_id = self.next_account_id

    class Suspended(Aggregate.Event):
        """The trader is suspended (a payment dispute): payouts and passes wait."""

        reason: str
        board: dict[str, Any]

        def apply(self, aggregate: Any) -> None:
            assert isinstance(aggregate, TradingAccount)
            aggregate.suspended = True

    class Reinstated(Aggregate.Event):
        reason: str
        board: dict[str, Any]

        def apply(self, aggregate: Any) -> None:
            assert isinstance(aggregate, TradingAccount)
            aggregate.suspended = False

    class PayoutRequested(Aggregate.Event):
        payout_id: str
        board: dict[str, Any]

        def apply(self, aggregate: Any) -> None:
            assert isinstance(aggregate, TradingAccount)
            aggregate.pending_payout_id = self.payout_id

    class PayoutReleased(Aggregate.Event):
        """A pending payout was rejected: nothing moved, the account may ask again."""

        payout_id: str
        board: dict[str, Any]

        def apply(self, aggregate: Any) -> None:
            assert isinstance(aggregate, TradingAccount)
            aggregate.pending_payout_id = None

    class PayoutWithdrawn(Aggregate.Event):
        """An approved payout took its profit out of the balance (floors stay)."""

        payout_id: str
        amount: Decimal
        at: datetime
        board: dict[str, Any]

        def apply(self, aggregate: Any) -> None:
            assert isinstance(aggregate, TradingAccount)
            amount = Money(self.amount, aggregate.currency)
            aggregate.state = rules.after_withdrawal(aggregate.state, amount)
            aggregate.pending_payout_id = None
            aggregate.approved_payouts += 1
            aggregate.last_payout_at = self.at

    def __init__(
        self,
        trader_id: str,
        program: dict[str, Any],
        program_version: int,
        stage: str,
        purchase: dict[str, Any] | None,
        previous_account_id: str | None,
    ) -> None:
        self.trader_id = trader_id
        self.program = _pinned_program(program, program_version)
        self.program_version = program_version
        self.stage = stage
        self.purchase = purchase
        self.previous_account_id = previous_account_id
        self.rules: StageRules = self.program.stage_rules(stage)
        self.calendar = Calendar(self.program.zone, self.program.day_start)
        self.state: AccountState = rules.opening_state(self.program.initial_balance, self.rules)
        # The rules' verdict (active, passed, breached); `suspended` overlays it while the
        # trader is suspended, and lifting the suspension shows the verdict again.
        self.status = ACTIVE
        self.suspended = False
        self.breach: Breach | None = None
        self.passed_at: datetime | None = None
        self.next_account_id: str | None = None
        self.pending_payout_id: str | None = None
        self.approved_payouts = 0
        self.last_payout_at: datetime | None = None
        # The account's own clock (its newest trade or mark) when it passed: where the
        # next account opened on that clock (for the first payout's days; `Eligibility`).
        self.passed_activity_at: datetime | None = None
        # trade_id -> (account version that recorded it, content fingerprint)
        self.trades = {}
        # Every equity mark recorded, as `mark_key`s (a dict for its order): a bridge
        # sending an older mark again is answered as a duplicate, not judged again.
        self.marks: dict[str, None] = {}

    # The trade ids an account has recorded, for spotting a trade posted again. Loaded from
    # a snapshot they stay the snapshot's text (a `_TradeLog` shared by the copies of the
    # account) until a command needs them: a read of a long account (10,000 trades) then
    # decodes one string instead of a map of 10,000 entries, about half of its load time.
    @property
    def trades(self) -> dict[str, tuple[int, str]]:
        trades: dict[str, tuple[int, str]] | None = self.__dict__.get("_trades")
        if trades is None:
            source: _TradeLog | None = self.__dict__.get("_trade_source")
            trades = {} if source is None else dict(source.parsed())
            trades.update(self.__dict__.get("_trades_added") or {})
            self.__dict__.update(_trades=trades, _trade_source=None, _trades_added=None)
        return trades

    @trades.setter
    def trades(self, value: dict[str, tuple[int, str]]) -> None:
        self.__dict__.update(_trades=value, _trade_source=None, _trades_added=None)

    def _add_trade(self, trade_id: str, entry: tuple[int, str]) -> None:
        """Records a trade id; on an account whose ids are still a snapshot's text, beside
        it (a replay after the snapshot does not need to parse them)."""
        trades: dict[str, tuple[int, str]] | None = self.__dict__.get("_trades")
        if trades is not None:
            trades[trade_id] = entry
            return
        added: dict[str, tuple[int, str]] | None = self.__dict__.get("_trades_added")
        self.__dict__["_trades_added"] = {**(added or {}), trade_id: entry}

    def _trade_log_text(self) -> str:
        source: _TradeLog | None = self.__dict__.get("_trade_source")
        if source is None or self.__dict__.get("_trades") is not None:
            return _trade_log_of(self.trades)
        added = self.__dict__.get("_trades_added")
        if not added:
            return source.text  # as loaded, never parsed: the same text
        return "\n".join(filter(None, [source.text, _trade_log_of(added)]))

    def __deepcopy__(self, memo: dict[int, Any]) -> TradingAccount:
        """Commands work on copies of cached accounts. Most of an account is immutable
        (program, rules, calendar, state and breach are frozen values that are replaced,
        never changed), so a copy shares them and copies only the containers that change
        in place: the trade ids and the pending events. Copying the whole history of trade
        ids deeply was most of the cost of every command on a long account."""
        clone = object.__new__(type(self))
        clone.__dict__.update(self.__dict__)
        own = self.__dict__.get("_trades")
        if own is not None:  # else the clone shares the unparsed snapshot text
            clone.__dict__["_trades"] = dict(own)
        # The marks are shared until one of the two records a mark (copied then, in
        # _apply_equity_mark): a trade command does not pay for a copy of every mark.
        clone.__dict__["_marks_shared"] = self.__dict__["_marks_shared"] = True
        clone._pending_events = list(self._pending_events)
        memo[id(self)] = clone
        return clone

    def snapshot_state(self) -> dict[str, Any]:
        breach = self.breach
        return {
            "trader_id": self.trader_id,
            "program": self.program.to_dict(),
            "program_version": self.program_version,
            "stage": self.stage,
            "purchase": self.purchase,
            "previous_account_id": self.previous_account_id,
            "state": self.state.to_dict(),
            "status": self.status,
            "suspended": self.suspended,
            "breach": None if breach is None else breach.to_dict(),
            "passed_at": self.passed_at,
            "next_account_id": self.next_account_id,
            "pending_payout_id": self.pending_payout_id,
            "approved_payouts": self.approved_payouts,
            "last_payout_at": self.last_payout_at,
            "passed_activity_at": self.passed_activity_at,
            "trade_log": self._trade_log_text(),
            "mark_log": "\n".join(self.marks),
            "created_on": self.created_on,
            "modified_on": self.modified_on,
        }

    @classmethod
    def from_snapshot_state(
        cls, account_id: UUID, version: int, data: dict[str, Any]
    ) -> TradingAccount:
        account = object.__new__(cls)
        program = _pinned_program(data["program"], data["program_version"])
        currency = program.currency
        breach = data["breach"]
        account.__dict__.update(
            _id=account_id,
            _version=version,
            _pending_events=[],
            _created_on=data["created_on"],
            _modified_on=data["modified_on"],
            trader_id=data["trader_id"],
            program=program,
            program_version=data["program_version"],
            stage=data["stage"],
            purchase=data["purchase"],
            previous_account_id=data["previous_account_id"],
            rules=program.stage_rules(data["stage"]),
            calendar=Calendar(program.zone, program.day_start),
            state=AccountState.from_dict(data["state"], currency),
            status=data["status"],
            suspended=data["suspended"],
            breach=None
            if breach is None
            else Breach(
                breach["rule"],
                breach["at"],
                Money(Decimal(breach["value"]), currency),
                Money(Decimal(breach["floor"]), currency),
            ),
            passed_at=data["passed_at"],
            next_account_id=data["next_account_id"],
            pending_payout_id=data["pending_payout_id"],
            approved_payouts=data["approved_payouts"],
            last_payout_at=data["last_payout_at"],
            # .get: a snapshot written by a process from before it (a rolling deploy;
            # migration 0011 dropped the older ones) still loads.
            passed_activity_at=data.get("passed_activity_at", data["passed_at"]),
        )
        mark_log = str(data.get("mark_log") or "")
        account.marks = dict.fromkeys(mark_log.split("\n")) if mark_log else {}
        if "trade_log" in data:
            account.__dict__.update(_trades=None, _trade_source=_TradeLog(str(data["trade_log"])))
        else:  # a snapshot taken before trade_log: the map of trade id -> [version, fp]
            account.trades = {
                trade_id: (int(v), str(fp)) for trade_id, (v, fp) in data["trades"].items()
            }
        return account

    # Opening -----------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        *,
        account_id: UUID,
        trader_id: str,
        program: ProgramDefinition,
        program_version: int,
        stage: str,
        purchase: dict[str, Any] | None = None,
        previous_account_id: str | None = None,
        journal: list[dict[str, Any]] | None = None,
        actor: str | None = None,
    ) -> TradingAccount:
        stage_rules = program.stage_rules(stage)
        state = rules.opening_state(program.initial_balance, stage_rules)
        return cls._create(
            cls.Opened,
            id=account_id,
            trader_id=trader_id,
            program=program.to_dict(),
            program_version=program_version,
            stage=stage,
            purchase=purchase,
            previous_account_id=previous_account_id,
            board=_board(state, stage_rules, ACTIVE, None, None, None),
            journal=journal or [],
            actor=actor,
        )

    # Queries -----------------------------------------------------------------------

    @property
    def currency(self) -> str:
        return self.program.currency

    @property
    def program_id(self) -> str:
        return self.program.program_id

    @property
    def public_status(self) -> str:
        return SUSPENDED if self.suspended else self.status

    def board(self) -> dict[str, Any]:
        return self._board_with(self.state, self.status)

    def _board_with(
        self, state: AccountState, status: str, suspended: bool | None = None
    ) -> dict[str, Any]:
        shown = SUSPENDED if (self.suspended if suspended is None else suspended) else status
        return _board(state, self.rules, shown, self.breach, self.passed_at, self.next_account_id)

    # Commands ----------------------------------------------------------------------

    def close_trade(self, trade: Trade, actor: str | None = None) -> TradeOutcome:
        """Record a closed trade; judge it while the account is active."""
        if trade.profit.currency != self.currency:
            raise InvalidInput(
                f"trade amounts must be in {self.currency}", code="currency_mismatch"
            )
        recorded = self.trades.get(trade.trade_id)
        if recorded is not None:
            version, fingerprint = recorded
            if fingerprint != trade.fingerprint:
                raise Conflict(
                    f"trade {trade.trade_id} was already recorded with other content",
                    code="trade_id_conflict",
                    details={"trade_id": trade.trade_id, "recorded_at_version": version},
                )
            return TradeOutcome(version=version, duplicate=True)

        state = rules.after_trade(self.state, self.rules, self.calendar, trade.closed_at, trade.net)
        if (
            self.status == ACTIVE  # a breached or passed account pays nothing out
            and abs(state.balance.amount) >= BALANCE_LIMIT
            and abs(state.balance.amount) > abs(self.state.balance.amount)  # not back in
        ):
            raise InvalidInput(
                f"trade {trade.trade_id} would take the balance to {state.balance.amount} "
                f"{self.currency}: a balance stays below 10^{_BALANCE_DIGITS} either way",
                code="balance_out_of_range",
                details={"trade_id": trade.trade_id, "balance": str(state.balance.amount)},
            )
        recorded_trade = trade.to_event_dict()
        # Applying the event would compute the same state from the same inputs again:
        # hand it over (for this very trade only) instead.
        self.__dict__["_decided"] = (recorded_trade, state)
        try:
            self.trigger_event(
                self.TradeClosed,
                trade=recorded_trade,
                fingerprint=trade.fingerprint,
                board=self._board_with(state, self.status),
                actor=actor,
            )
        finally:
            self.__dict__.pop("_decided", None)
        version = self.version
        if self.status != ACTIVE:
            # Trades after a breach or a pass happened and are recorded, but decide nothing.
            return TradeOutcome(version=version, duplicate=False)
        breach = rules.find_breach(self.state, self.rules, self.state.balance, trade.closed_at)
        if breach is not None:
            self._breach(breach)
            return TradeOutcome(version=version, duplicate=False)
        # A suspended trader's phase does not pass; the next trade after reinstatement can.
        passes = not self.suspended and not self.rules.is_funded
        if passes and rules.has_passed(self.state, self.rules):
            return TradeOutcome(
                version=version, duplicate=False, opened=self._pass(trade.closed_at)
            )
        return TradeOutcome(version=version, duplicate=False)

    def mark_equity(self, equity: Money, at: datetime, actor: str | None = None) -> bool:
        """Record an equity mark; False when it repeats a recorded one (the same instant
        and the same equity), however many marks came since: a mark already judged is not
        judged again against the floors of a later day."""
        if equity.currency != self.currency:
            raise InvalidInput(f"equity must be in {self.currency}", code="currency_mismatch")
        if mark_key(at, equity.amount) in self.marks:
            return False
        state = rules.after_equity_mark(self.state, self.rules, self.calendar, equity, at)
        self.trigger_event(
            self.EquityMarked,
            equity=equity.amount,
            at=at,
            board=self._board_with(state, self.status),
            actor=actor,
        )
        if self.status == ACTIVE:
            breach = rules.find_breach(self.state, self.rules, equity, at)
            if breach is not None:
                self._breach(breach)
        return True

    # Payouts ------------------------------------------------------------------------

    @property
    def activity_at(self) -> datetime | None:
        """The account's own clock: its newest trade or equity mark (None before any)."""
        trade_at, mark_at = self.state.last_trade_at, self.state.last_mark_at
        if trade_at is None or mark_at is None:
            return trade_at or mark_at
        return max(trade_at, mark_at)

    def payout_eligibility(
        self,
        *,
        now: datetime,
        trader_suspended: bool,
        opened_activity_at: datetime | None = None,
    ) -> Eligibility:
        """`opened_activity_at`: when this account opened on the accounts' own clock (the
        clock of the account whose pass opened it, at the pass), when the caller knows it."""
        terms = self.program.funded_terms
        return Eligibility(
            is_funded=self.rules.is_funded,
            # A suspended account shows `suspended`, not `active`: it fails that condition
            # too (DESIGN.md: a refusal names every failed condition).
            is_active=self.public_status == ACTIVE,
            trader_suspended=trader_suspended or self.suspended,
            profit=self.state.profit,
            min_payout=terms.min_payout,
            consistency_holds=rules.consistency_holds(
                self.state, self.rules.consistency_max_day_pct
            ),
            has_pending=self.pending_payout_id is not None,
            opened_at=self.created_on,
            last_approved_at=self.last_payout_at,
            first_payout_after_days=terms.first_payout_after_days,
            payout_interval_days=terms.payout_interval_days,
            now=now,
            activity_at=self.activity_at,
            opened_activity_at=opened_activity_at,
        )

    @property
    def refunds_fee_next(self) -> bool:
        """Whether the next payout adds the purchase fee (the first, when the program
        says so)."""
        return self.program.funded_terms.refund_fee_with_first_payout and not self.approved_payouts

    def fee_to_refund(self, fee_kept: Money | None) -> Money:
        """The fee a refund gives back, given `fee_kept`: what the firm kept of the
        purchase's payment (paid, less refunds and chargebacks; None when unknown). The
        program's fee, but never more than that (a purchase paid 0, or refunded, has no fee
        to give back). A purchase paid in another currency than the fee's cannot be
        compared with it (there is no rate): the fee goes back in its own currency when
        anything was kept, nothing when nothing was."""
        fee = self.program.fee
        if fee_kept is None:
            return fee
        kept = fee_kept.max(Money.zero(fee_kept.currency))
        if kept.currency == fee.currency:
            return fee.min(kept)
        return fee if kept.amount else Money.zero(fee.currency)

    def request_payout(
        self,
        payout_id: str,
        *,
        now: datetime,
        trader_suspended: bool,
        fee_kept: Money | None = None,
        opened_activity_at: datetime | None = None,
    ) -> Breakdown:
        """Checks every condition at once; the breakdown is fixed here (`fee_to_refund`
        for the fee, from `fee_kept`)."""
        reasons = self.payout_eligibility(
            now=now, trader_suspended=trader_suspended, opened_activity_at=opened_activity_at
        ).reasons()
        if reasons:
            raise PayoutRefused(
                f"account {self.id} cannot be paid out now: {', '.join(reasons)}",
                details={"reasons": reasons},
            )
        if self.state.profit.amount >= BALANCE_LIMIT:
            # Only a balance recorded before trades were bounded can be this far out.
            raise InvalidInput(
                f"account {self.id} has a profit of {self.state.profit.amount} "
                f"{self.currency}: a payout stays below 10^{_BALANCE_DIGITS}",
                code="balance_out_of_range",
                details={"profit": str(self.state.profit.amount)},
            )
        fee = self.fee_to_refund(fee_kept)
        split = breakdown(self.state.profit, self.program.funded_terms, self.approved_payouts, fee)
        self.trigger_event(self.PayoutRequested, payout_id=payout_id, board=self.board())
        return split

    def withdraw_payout(self, payout_id: str, amount: Money, at: datetime) -> None:
        if self.pending_payout_id != payout_id:
            raise Conflict(f"payout {payout_id} is not pending on account {self.id}")
        if self.status != ACTIVE:
            # A breach after the request is terminal and earns no payout: the request was
            # fine when made, the approval is not (the approver rejects it instead).
            raise Conflict(
                f"account {self.id} is {self.status}: its pending payout cannot be approved",
                code="not_active",
            )
        if self.state.profit < amount:
            # Losses since the request: withdrawing the profit asked for would pay out
            # money the account no longer has and leave its balance under its floors.
            raise Conflict(
                f"account {self.id} now has {self.state.profit.amount} of profit, less than "
                f"the {amount.amount} this payout withdraws: reject it and request again",
                code="insufficient_profit",
                details={"profit": str(self.state.profit.amount), "payout": str(amount.amount)},
            )
        state = rules.after_withdrawal(self.state, amount)
        self.trigger_event(
            self.PayoutWithdrawn,
            payout_id=payout_id,
            amount=amount.amount,
            at=at,
            board=self._board_with(state, self.status),
        )

    def release_payout(self, payout_id: str) -> None:
        if self.pending_payout_id == payout_id:
            self.trigger_event(self.PayoutReleased, payout_id=payout_id, board=self.board())

    def suspend(self, reason: str) -> bool:
        if self.suspended:
            return False
        self.trigger_event(
            self.Suspended, reason=reason, board=self._board_with(self.state, self.status, True)
        )
        return True

    def reinstate(self, reason: str) -> bool:
        if not self.suspended:
            return False
        self.trigger_event(
            self.Reinstated, reason=reason, board=self._board_with(self.state, self.status, False)
        )
        return True

    def _breach(self, breach: Breach) -> None:
        shown = SUSPENDED if self.suspended else BREACHED
        board = _board(self.state, self.rules, shown, breach, None, None)
        self.trigger_event(
            self.RuleBreached,
            rule=breach.rule,
            at=breach.at,
            value=breach.value.amount,
            floor=breach.floor.amount,
            board=board,
        )

    def _pass(self, at: datetime) -> TradingAccount:
        """Close this phase and open the next one (or the funded account), fresh B0."""
        next_stage = self.program.next_stage(self.stage)
        opened_id = next_account_id(self.id)
        board = _board(self.state, self.rules, PASSED, None, at, str(opened_id))
        self.trigger_event(
            self.PhasePassed,
            at=at,
            next_account_id=str(opened_id),
            next_stage=next_stage,
            board=board,
        )
        return TradingAccount.open(
            account_id=opened_id,
            trader_id=self.trader_id,
            program=self.program,
            program_version=self.program_version,
            stage=next_stage,
            previous_account_id=str(self.id),
            actor="propledger",
        )

    # Applying recorded events --------------------------------------------------------

    def _apply_trade(self, event: TradingAccount.TradeClosed) -> None:
        trade = event.trade
        decided = self.__dict__.pop("_decided", None)
        if decided is not None and decided[0] is trade:
            # close_trade just computed this state from the same state and trade.
            self.state = decided[1]
        else:
            currency = self.currency
            net = (
                Money(trade["profit"], currency)
                + Money(trade["commission"], currency)
                + Money(trade["swap"], currency)
            )
            self.state = rules.after_trade(
                self.state, self.rules, self.calendar, trade["closed_at"], net
            )
        self._add_trade(trade["trade_id"], (event.originator_version, event.fingerprint))

    def _apply_equity_mark(self, event: TradingAccount.EquityMarked) -> None:
        equity = Money(event.equity, self.currency)
        if self.__dict__.pop("_marks_shared", False):
            self.marks = dict(self.marks)
        self.marks[mark_key(event.at, equity.amount)] = None
        self.state = rules.after_equity_mark(
            self.state, self.rules, self.calendar, equity, event.at
        )


def _board(
    state: AccountState,
    stage_rules: StageRules,
    status: str,
    breach: Breach | None,
    passed_at: datetime | None,
    next_id: str | None,
) -> dict[str, Any]:
    """The account's public numbers, as recorded with each event and shown by the API."""
    return {
        "status": status,
        "balance": state.balance.amount,
        "equity": state.equity.amount,
        "high_water_mark": state.high_water_mark.amount,
        "day_start_balance": state.day_start_balance.amount,
        "daily_loss_floor": state.daily_loss_floor(stage_rules).amount,
        "max_loss_floor": state.max_loss_floor.amount,
        "trading_days": state.trading_days,
        "profit": state.profit.amount,
        "current_day": None if state.current_day is None else state.current_day.isoformat(),
        "breach": None if breach is None else breach.to_dict(),
        "passed_at": passed_at,
        "next_account_id": next_id,
    }
