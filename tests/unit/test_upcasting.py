"""Events stored before `actor` existed (class_version 1) still read, through upcasting.

The old shape is made from a real event: the application's mapper transcodes a current
(version 2) event, and `actor` and `class_version` are taken out of the stored JSON, which
is what a version 1 event looked like. The mapper must read it back as the current class
with `actor` None, and the event must still apply to its aggregate.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any
from uuid import UUID

import pytest
from eventsourcing.persistence import Mapper, StoredEvent

from api.views import event_view
from domain.account import TradingAccount
from domain.aggregates import Program
from domain.money import Money
from domain.program import ProgramDefinition
from ledger.app import PropLedger
from tests.unit.builders import ACCOUNT_ID, parse_instant, program_dict, trade


@pytest.fixture(scope="module")
def mapper(tmp_path_factory: pytest.TempPathFactory) -> Mapper[UUID]:
    """The mapper of the application itself (constructing it opens no database)."""
    path = tmp_path_factory.mktemp("upcasting") / "propledger.db"
    ledger = PropLedger(f"sqlite:///{path}")
    return ledger.mapper


def as_version_1(mapper: Mapper[UUID], event: Any) -> StoredEvent:
    """The stored event as it was written before `actor` existed."""
    stored = mapper.to_stored_event(event)
    state = json.loads(stored.state)
    assert state.pop("class_version") == 2
    assert "actor" in state
    del state["actor"]
    return StoredEvent(
        originator_id=stored.originator_id,
        originator_version=stored.originator_version,
        topic=stored.topic,
        state=json.dumps(state, separators=(",", ":")).encode(),
    )


def without_actor(event: Any) -> dict[str, Any]:
    return {key: value for key, value in vars(event).items() if key != "actor"}


def account_with_history() -> tuple[TradingAccount, list[Any]]:
    program = ProgramDefinition.parse(program_dict())
    account = TradingAccount.open(
        account_id=ACCOUNT_ID,
        trader_id="trader-1",
        program=program,
        program_version=1,
        stage="phase-1",
        actor="admin-ann",
    )
    account.close_trade(trade("T-1", "2026-03-02T10:00:00Z", "250.00"), "bridge-mt5")
    account.mark_equity(Money.of("100400.00", "USD"), parse_instant("2026-03-02T11:00:00Z"), "mt5")
    account.close_trade(trade("T-2", "2026-03-02T12:00:00Z", "-6000.00"), "bridge-mt5")
    return account, list(account.collect_events())


def program_with_history() -> tuple[Program, list[Any]]:
    program = Program.define(ProgramDefinition.parse(program_dict()), "admin-ann")
    program.revise(ProgramDefinition.parse(program_dict(min_trading_days=3)), "admin-bob")
    return program, list(program.collect_events())


def rebuilt(events: list[Any]) -> Any:
    aggregate: Any = None
    for event in events:
        aggregate = event.mutate(aggregate)
    return aggregate


def test_an_old_trade_closed_event_reads_with_no_actor_and_applies_to_its_account(
    mapper: Mapper[UUID],
) -> None:
    _, events = account_with_history()
    opened, closed = events[0], events[1]
    assert isinstance(closed, TradingAccount.TradeClosed)
    assert closed.actor == "bridge-mt5"

    old = as_version_1(mapper, closed)
    assert b'"actor"' not in old.state
    assert b"class_version" not in old.state
    event = mapper.to_domain_event(old)

    assert type(event) is TradingAccount.TradeClosed
    assert event.actor is None
    assert without_actor(event) == without_actor(closed)

    account_after = event.mutate(
        mapper.to_domain_event(mapper.to_stored_event(opened)).mutate(None)
    )
    assert isinstance(account_after, TradingAccount)
    assert account_after.version == 2
    assert account_after.board() == closed.board
    assert str(account_after.state.balance.amount) == "100250.00"
    assert "T-1" in account_after.trades
    assert event_view(event)["actor"] is None


def test_an_old_program_defined_event_reads_with_no_actor_and_defines_the_program(
    mapper: Mapper[UUID],
) -> None:
    program, events = program_with_history()
    defined = events[0]
    assert isinstance(defined, Program.Defined)

    event = mapper.to_domain_event(as_version_1(mapper, defined))

    assert type(event) is Program.Defined
    assert event.actor is None
    assert without_actor(event) == without_actor(defined)
    aggregate = event.mutate(None)
    assert isinstance(aggregate, Program)
    assert aggregate.id == program.id
    assert aggregate.version == 1
    assert aggregate.definition.to_dict() == defined.definition


EventsOf = Callable[[], tuple[Any, list[Any]]]


@pytest.mark.parametrize(
    ("history", "event_type"),
    [
        (account_with_history, TradingAccount.Opened),
        (account_with_history, TradingAccount.TradeClosed),
        (account_with_history, TradingAccount.EquityMarked),
        (program_with_history, Program.Defined),
        (program_with_history, Program.Revised),
    ],
    ids=lambda value: getattr(value, "__qualname__", str(value)),
)
def test_a_whole_history_in_the_old_shape_rebuilds_the_same_aggregate(
    mapper: Mapper[UUID], history: EventsOf, event_type: type[Any]
) -> None:
    """Every event of the history stored in the old shape, the aggregate rebuilt from
    them equals the one rebuilt from the current shape."""
    aggregate, events = history()
    assert any(type(event) is event_type for event in events)
    current = [mapper.to_domain_event(mapper.to_stored_event(event)) for event in events]
    old = [
        mapper.to_domain_event(as_version_1(mapper, event))
        if hasattr(event, "actor")
        else mapper.to_domain_event(mapper.to_stored_event(event))
        for event in events
    ]
    for before, after in zip(current, old, strict=True):
        assert type(after) is type(before)
        assert without_actor(after) == without_actor(before)
        if type(after) is event_type:
            assert before.actor is not None
            assert after.actor is None
    from_current, from_old = rebuilt(current), rebuilt(old)
    assert from_old.version == from_current.version == aggregate.version
    if isinstance(aggregate, TradingAccount):
        assert from_old.board() == from_current.board() == aggregate.board()
        assert from_old.status == "breached"
    else:
        assert from_old.definition.to_dict() == aggregate.definition.to_dict()


def test_a_current_event_keeps_its_actor_through_the_mapper(mapper: Mapper[UUID]) -> None:
    _, events = account_with_history()
    for event in events:
        read = mapper.to_domain_event(mapper.to_stored_event(event))
        assert vars(read) == vars(event)


def test_the_old_shape_is_what_the_mapper_wrote_without_two_keys(mapper: Mapper[UUID]) -> None:
    """Guards the construction above: only `actor` and `class_version` differ."""
    _, events = account_with_history()
    closed = events[1]
    current = json.loads(mapper.to_stored_event(closed).state)
    old = json.loads(as_version_1(mapper, closed).state)
    assert set(current) - set(old) == {"actor", "class_version"}
    assert {key: current[key] for key in old} == old
