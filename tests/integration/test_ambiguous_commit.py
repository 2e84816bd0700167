"""A connection lost after COMMIT was sent, on a real PostgreSQL server.

The client cannot tell whether such a save happened; the event store tries the insert
again, and that attempt collides with the rows the first one wrote. The ledger must answer
what it did, exactly once: not decide the command again on the state its own save left
(a payout request refused `payout_pending` by itself, an approval refused as already
approved, a trade answered as a duplicate of itself).

DESIGN.md: "Concurrent writers to one aggregate are serialised by optimistic concurrency
and retried; no update is lost and none is applied twice"; the brief: "A fault
mid-command loses nothing and applies nothing twice."
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from typing import Any
from uuid import UUID

import pytest
from eventsourcing import persistence

from domain.account import TradingAccount
from domain.payout import Payout
from ledger.app import PropLedger
from ledger.audit import verify_chain
from ledger.migrate import migrate
from tests.support import program_body, purchase_body, trade_body

pytestmark = pytest.mark.postgres


@pytest.fixture(scope="module")
def ledger(postgres_url: str) -> Iterator[PropLedger]:
    migrate(postgres_url)
    app = PropLedger(postgres_url, group_writes=False)
    yield app
    app.close()


class DropAfterCommit:
    """Makes the next `times` saves commit and then fail as a lost connection does (the
    event store's own OperationalError, raised where the connection is handed back)."""

    def __init__(self, ledger: PropLedger, monkeypatch: pytest.MonkeyPatch) -> None:
        self.left = 0
        self.dropped = 0
        recorder: Any = ledger.recorder
        datastore = recorder.datastore
        real_connection = datastore.get_connection
        real_fetch = recorder._fetch_ids_after_insert_events
        inserted = [False]

        def fetch(curs: Any, stored_events: Any, **kwargs: Any) -> Any:
            inserted[0] = True
            return real_fetch(curs, stored_events, **kwargs)

        @contextmanager
        def connection() -> Iterator[Any]:
            inserted[0] = False
            with real_connection() as conn:
                yield conn
            if inserted[0] and self.left:  # the insert's transaction has committed
                self.left -= 1
                self.dropped += 1
                raise persistence.OperationalError("connection lost after COMMIT (injected)")

        monkeypatch.setattr(recorder, "_fetch_ids_after_insert_events", fetch)
        monkeypatch.setattr(datastore, "get_connection", connection)

    def arm(self, times: int = 1) -> None:
        self.left = times


@pytest.fixture
def drop(ledger: PropLedger, monkeypatch: pytest.MonkeyPatch) -> DropAfterCommit:
    return DropAfterCommit(ledger, monkeypatch)


def quick_program(ledger: PropLedger) -> str:
    body = program_body(
        day_timezone="UTC",
        phases=[
            {
                "name": "challenge",
                "profit_target_pct": "1",
                "max_daily_loss_pct": "5",
                "max_loss_pct": "10",
                "min_trading_days": 0,
            }
        ],
        funded={
            "max_daily_loss_pct": "5",
            "max_loss_pct": "10",
            "profit_split_pct": "80",
            "first_payout_after_days": 0,
            "payout_interval_days": 0,
            "min_payout": "50.00",
            "refund_fee_with_first_payout": True,
        },
    )
    ledger.define_program(body)
    return str(body["program_id"])


def funded_account(ledger: PropLedger) -> str:
    phase = ledger.purchase(purchase_body(quick_program(ledger))).account
    passed = ledger.record_trade(str(phase.id), trade_body(profit="1000.00")).account
    funded_id = str(passed.next_account_id)
    ledger.record_trade(funded_id, trade_body(profit="1000.00"))
    return funded_id


def events_of(ledger: PropLedger, aggregate_id: str) -> list[Any]:
    return list(ledger.events.get(UUID(aggregate_id)))


def test_a_trade_saved_before_the_connection_dropped_is_answered_created_once(
    ledger: PropLedger, drop: DropAfterCommit
) -> None:
    account_id = str(ledger.purchase(purchase_body(quick_program(ledger))).account.id)
    before = len(events_of(ledger, account_id))
    drop.arm()
    reply = ledger.record_trade(account_id, trade_body("T-ambiguous", profit="12.50"))
    assert drop.dropped == 1
    assert reply.duplicate is False  # it was this command's own save, not someone else's
    assert reply.position is not None
    trades = [e for e in events_of(ledger, account_id) if isinstance(e, TradingAccount.TradeClosed)]
    assert [event.trade["trade_id"] for event in trades] == ["T-ambiguous"]
    assert len(events_of(ledger, account_id)) == before + 1
    assert ledger.account(account_id).state.balance.amount == Decimal("100012.50")


def test_a_payout_request_approval_and_payment_each_answer_what_they_did(
    ledger: PropLedger, drop: DropAfterCommit, postgres_url: str
) -> None:
    account_id = funded_account(ledger)

    drop.arm()
    requested, _ = ledger.request_payout(account_id, "trader-desk")
    assert drop.dropped == 1
    assert requested.status == "requested"
    assert requested.breakdown.profit.amount == Decimal("1000.00")

    drop.arm()
    approved, _ = ledger.approve_payout(str(requested.id), "arthur")
    assert drop.dropped == 2
    assert approved.status == "approved"
    assert approved.approved_by == "arthur"

    drop.arm()
    paid, _ = ledger.mark_payout_paid(str(requested.id), "fiona", "WIRE-1")
    assert drop.dropped == 3
    assert paid.status == "paid"

    payout_events = [type(event).__name__ for event in events_of(ledger, str(requested.id))]
    assert payout_events == ["Requested", "Approved", "Paid"], payout_events
    account = ledger.account(account_id)
    assert account.state.balance.amount == Decimal("100000.00")  # withdrawn once
    assert isinstance(ledger.payout(str(requested.id)), Payout)
    assert verify_chain(postgres_url).ok


def test_a_collision_with_another_writers_rows_still_decides_again(
    ledger: PropLedger, postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only this save's own rows, byte for byte, count as its earlier attempt: when the
    first attempt failed before committing and another writer took the version meanwhile,
    the second attempt's collision is a real one, and the command is decided again on the
    store's state (both trades recorded, each once)."""
    account_id = str(ledger.purchase(purchase_body(quick_program(ledger))).account.id)
    recorder: Any = ledger.recorder
    real_hook = recorder._insert_events
    other = PropLedger(postgres_url, group_writes=False)
    armed = [True]

    def hook(curs: Any, stored_events: Any, **kwargs: Any) -> None:
        real_hook(curs, stored_events, **kwargs)
        if armed[0]:
            armed[0] = False
            other.record_trade(account_id, trade_body("T-other", profit="5.00"))
            raise persistence.OperationalError("connection lost before COMMIT (injected)")

    monkeypatch.setattr(recorder, "_insert_events", hook)
    try:
        reply = ledger.record_trade(account_id, trade_body("T-mine", profit="7.00"))
    finally:
        other.close()
    assert armed[0] is False
    assert reply.duplicate is False
    trades = [e for e in events_of(ledger, account_id) if isinstance(e, TradingAccount.TradeClosed)]
    assert sorted(event.trade["trade_id"] for event in trades) == ["T-mine", "T-other"]
    assert ledger.account(account_id).state.balance.amount == Decimal("100012.00")
    assert verify_chain(postgres_url).ok


class FlapAfterCommit:
    """The next save commits and loses its connection; then the store stays unreachable
    for the event store's nine remaining attempts, and is back for the read-back."""

    def __init__(self, ledger: PropLedger, monkeypatch: pytest.MonkeyPatch, down_for: int):
        recorder: Any = ledger.recorder
        datastore = recorder.datastore
        real_connection = datastore.get_connection
        self.down_for = down_for
        self.state = "armed"

        @contextmanager
        def connection() -> Iterator[Any]:
            if self.state == "down":
                if self.down_for == 0:
                    self.state = "back"
                else:
                    self.down_for -= 1
                    raise persistence.OperationalError("connection refused (injected)")
            with real_connection() as conn:
                yield conn
            if self.state == "armed":
                self.state = "down"
                raise persistence.OperationalError("connection lost after COMMIT (injected)")

        monkeypatch.setattr(datastore, "get_connection", connection)


@pytest.mark.parametrize("grouped", [False, True])
def test_a_save_whose_every_retry_met_a_dead_store_is_answered_by_what_it_committed(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch, grouped: bool
) -> None:
    """Found by a fault audit (connections killed every 0.2-0.8 s): a trade committed by an
    attempt whose connection then dropped, with every retry failing to connect, answered
    503 (or, grouped, was decided again alone and answered as a duplicate of itself). The
    store is asked once more after the last retry: it holds the save's rows, so the trade
    is answered created, once."""
    app = PropLedger(postgres_url, group_writes=grouped)
    try:
        account_id = str(app.purchase(purchase_body(quick_program(app))).account.id)
        before = app.position()
        flap = FlapAfterCommit(app, monkeypatch, down_for=9)
        reply = app.post_trade(account_id, trade_body("T-flap", profit="3.00"))
        assert flap.state == "back"
        assert reply.duplicate is False
        assert reply.position is not None
        assert reply.position > before
        trades = [
            e for e in events_of(app, account_id) if isinstance(e, TradingAccount.TradeClosed)
        ]
        assert [event.trade["trade_id"] for event in trades] == ["T-flap"]
        assert app.account(account_id).state.balance.amount == Decimal("100003.00")
    finally:
        app.close()


def test_a_save_that_never_reached_the_store_still_fails(
    ledger: PropLedger, monkeypatch: pytest.MonkeyPatch
) -> None:
    account_id = str(ledger.purchase(purchase_body(quick_program(ledger))).account.id)
    before = ledger.position()
    recorder: Any = ledger.recorder

    @contextmanager
    def refused() -> Iterator[Any]:
        raise persistence.OperationalError("connection refused (injected)")
        yield  # pragma: no cover

    monkeypatch.setattr(recorder.datastore, "get_connection", refused)
    with pytest.raises(persistence.OperationalError):
        ledger.record_trade(account_id, trade_body("T-never", profit="3.00"))
    monkeypatch.undo()
    assert ledger.position() == before
