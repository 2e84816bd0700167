"""Events of the old shape (before `actor`, class_version 1) in a real store, SQLite file
and PostgreSQL: written by the chained recorder, loaded through the repository, chained,
shown by the audit endpoints, projected, and extended by new events of the current shape."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any
from uuid import uuid4

import pytest
from eventsourcing.persistence import StoredEvent
from fastapi.testclient import TestClient

from domain.account import TradingAccount
from domain.aggregates import Program
from domain.money import Money
from domain.program import ProgramDefinition
from domain.trade import Trade
from ledger.app import PropLedger
from ledger.audit import verify_chain
from ledger.migrate import migrate
from tests.support import BACKENDS, auth, backend_url, make_app, program_body, trade_body, uid

AUDITOR = auth("auditor", sub="auditor-ada")
PLATFORM = auth("platform", sub="bridge-new")


@pytest.fixture(scope="module", params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    url = backend_url(request, tmp_path_factory)
    migrate(url)
    return url


@pytest.fixture
def ledger(database_url: str) -> Iterator[PropLedger]:
    app = PropLedger(database_url)
    yield app
    app.close()


def old_shape(ledger: PropLedger, event: Any) -> StoredEvent:
    """The stored event as version 1 wrote it: no `actor`, no `class_version`."""
    stored = ledger.mapper.to_stored_event(event)
    state = json.loads(stored.state)
    if state.pop("class_version", None) == 2:
        del state["actor"]
    return StoredEvent(
        originator_id=stored.originator_id,
        originator_version=stored.originator_version,
        topic=stored.topic,
        state=json.dumps(state, separators=(",", ":")).encode(),
    )


def write_old_history(ledger: PropLedger) -> tuple[Program, TradingAccount]:
    """A program and an account with a trade and an equity mark, stored in the old shape
    by the application's own (chained) recorder."""
    definition = ProgramDefinition.parse(program_body())
    program = Program.define(definition, "admin-old")
    account = TradingAccount.open(
        account_id=uuid4(),
        trader_id=uid("trader-"),
        program=definition,
        program_version=1,
        stage=definition.first_stage,
        actor="admin-old",
    )
    account.close_trade(Trade.parse(trade_body(profit="250.00"), "USD"), "bridge-old")
    at = Trade.parse(trade_body(), "USD").closed_at
    account.mark_equity(Money.of("100300.00", "USD"), at, "bridge-old")
    events = [*program.collect_events(), *account.collect_events()]
    ledger.recorder.insert_events([old_shape(ledger, event) for event in events])
    return program, account


def test_old_shape_events_in_the_store_load_through_the_repository(
    database_url: str, ledger: PropLedger
) -> None:
    program, account = write_old_history(ledger)

    loaded = ledger.account(str(account.id))
    assert loaded.version == 3
    assert loaded.board() == account.board()
    assert str(loaded.state.balance.amount) == "100250.00"
    assert ledger.program(program.definition.program_id).definition.to_dict() == (
        program.definition.to_dict()
    )
    for event in ledger.events.get(account.id):
        assert getattr(event, "actor", None) is None  # read as unknown, not lost

    stored = [
        item for item in ledger.recorder.select_events(account.id) if item.originator_version == 2
    ]
    assert b'"actor"' not in stored[0].state  # the store holds the old shape itself
    assert verify_chain(database_url).ok


def test_old_shape_events_are_chained_shown_projected_and_extended(
    database_url: str, ledger: PropLedger
) -> None:
    _, account = write_old_history(ledger)
    ledger.close()
    report = verify_chain(database_url)
    assert report.ok, report.findings

    with TestClient(make_app(database_url)) as client:
        response = client.get(f"/v1/accounts/{account.id}/events", headers=AUDITOR)
        assert response.status_code == 200, response.text
        events = response.json()["events"]
        assert [event["type"] for event in events] == ["Opened", "TradeClosed", "EquityMarked"]
        for event in events:
            assert event["actor"] is None
            assert "actor" in event["data"]
            assert event["data"]["actor"] is None
            assert isinstance(event["hash"], str)
            assert len(event["hash"]) == 64
            assert isinstance(event["position"], int)

        # A new trade on the old account is of the current shape and names its actor.
        posted = client.post(
            f"/v1/accounts/{account.id}/trades",
            json=trade_body(profit="50.00", closed="13:00:00"),
            headers=PLATFORM,
        )
        assert posted.status_code == 201, posted.text
        assert posted.json()["balance"] == "100300.00"
        response = client.get(
            f"/v1/accounts/{account.id}/events", params={"after_version": 3}, headers=AUDITOR
        )
        assert [event["actor"] for event in response.json()["events"]] == ["bridge-new"]

        verified = client.post("/v1/audit/verify", headers=AUDITOR)
        assert verified.status_code == 200, verified.text
        assert verified.json()["ok"] is True, verified.json()
