"""Group commit for single trade posts: concurrent commands, one save.

The event store takes a table lock per save, so single saves queue behind each other's
commits. One thread decides and saves single posts: the trades that arrived while the
previous group was being saved (and, with a window, those arriving within it) are decided
in arrival order on one set of loaded accounts, then saved in one transaction. A post
that finds the thread idle is saved at once, alone: grouping adds no wait unless a
window is configured, and groups grow with the load. Each caller still gets its own
exact answer: the account as its own trade left it (copied right after deciding it), its
own refusal, or, for a duplicate, the account as it stands at that point. A collision
with another process re-decides the whole group from the store; any other failure falls
back to deciding each trade on its own.
"""

from __future__ import annotations

import copy
import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from domain.account import TradingAccount
from domain.errors import DomainError
from domain.trade import Trade

if TYPE_CHECKING:
    from ledger.app import AccountReply, PropLedger

MAX_GROUP = 500
WAIT_SECONDS = 60.0


@dataclass
class _Pending:
    account_id: str
    body: Any
    actor: str | None
    future: Future[AccountReply]


class TradeGrouper:
    def __init__(self, ledger: PropLedger, window_seconds: float) -> None:
        self.ledger = ledger
        self.window = window_seconds
        self._queue: queue.Queue[_Pending | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="propledger-grouper", daemon=True)
        self._thread.start()

    def enqueue(self, account_id: str, body: Any, actor: str | None) -> Future[AccountReply]:
        """Queues a post; the future holds its reply (or refusal) once its group is saved.
        Cancelling the future before its group is formed withdraws the post: it is never
        decided. Once grouped, it runs to the end and can no longer be cancelled."""
        pending = _Pending(account_id, body, actor, Future())
        self._queue.put(pending)
        return pending.future

    def submit(self, account_id: str, body: Any, actor: str | None) -> AccountReply:
        return self.enqueue(account_id, body, actor).result(timeout=WAIT_SECONDS)

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            group = [first]
            closing = self._drain(group)
            deadline = time.monotonic() + self.window
            while not closing and self.window > 0 and len(group) < MAX_GROUP:
                remaining = deadline - time.monotonic()
                try:
                    item = self._queue.get(timeout=max(remaining, 0)) if remaining > 0 else None
                except queue.Empty:
                    break
                if item is None:
                    if remaining > 0:
                        self._queue.put(None)  # closing: finish this group first
                    break
                group.append(item)
            # Withdrawn posts (their caller gave up) are left out; the rest can no longer
            # be cancelled, so each gets its answer.
            group = [pending for pending in group if pending.future.set_running_or_notify_cancel()]
            if group:
                self._decide(group)
            if closing:
                return

    def _drain(self, group: list[_Pending]) -> bool:
        """Adds what is queued already, without waiting; True when `close` was asked."""
        while len(group) < MAX_GROUP:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return False
            if item is None:
                return True
            group.append(item)
        return False

    def _decide(self, group: list[_Pending]) -> None:
        try:
            outcomes = self.ledger._retrying(lambda: self._decide_together(group))
        except Exception:
            # Whatever went wrong for the group, each trade gets its own attempt.
            for pending in group:
                self._settle_alone(pending)
            return
        for pending, outcome in zip(group, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                pending.future.set_exception(outcome)
            else:
                pending.future.set_result(outcome)

    def _settle_alone(self, pending: _Pending) -> None:
        try:
            reply = self.ledger.record_trade(pending.account_id, pending.body, pending.actor)
        except BaseException as error:
            pending.future.set_exception(error)
        else:
            pending.future.set_result(reply)

    def _decide_together(self, group: list[_Pending]) -> list[AccountReply | BaseException]:
        from ledger.app import AccountReply, _canonical_id

        ledger = self.ledger
        accounts: dict[str, TradingAccount] = {}
        to_save: list[TradingAccount] = []
        decided: list[Any] = []
        for pending in group:
            key = _canonical_id(pending.account_id)
            try:
                account = accounts.get(key)
                if account is None:
                    account = accounts[key] = ledger._command_account(pending.account_id)
                    to_save.append(account)
                trade = Trade.parse(pending.body, account.currency)
                outcome = account.close_trade(trade, pending.actor)
            except DomainError as refusal:
                decided.append(refusal)
                continue
            if outcome.opened is not None:
                to_save.append(outcome.opened)
            # As this trade left it; a duplicate is read back once the group is saved.
            decided.append(_Decided(copy.deepcopy(account), outcome.duplicate))
        position = ledger._save(*to_save)
        replies: list[AccountReply | BaseException] = []
        for pending, item in zip(group, decided, strict=True):
            if isinstance(item, BaseException):
                replies.append(item)
            elif item.duplicate:
                state = _as_stored(ledger, pending.account_id, item.account)
                replies.append(AccountReply(state, duplicate=True, position=None))
            else:
                replies.append(AccountReply(item.account, duplicate=False, position=position))
        return replies


@dataclass
class _Decided:
    account: TradingAccount
    duplicate: bool


def _as_stored(ledger: PropLedger, account_id: str, copy_now: TradingAccount) -> TradingAccount:
    """A duplicate's answer: the account as it stands in the store, read after this
    group's save (another process may have written since this one last loaded it). It must
    not fail the group, whose trades are saved: if the read fails, this process's copy
    (current as of the group) answers."""
    try:
        return ledger.account(account_id)
    except Exception:
        return copy_now
