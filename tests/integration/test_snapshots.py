"""Snapshots of long accounts: loading from one gives exactly what a full replay gives."""

from __future__ import annotations

from typing import Any

import pytest

from ledger.app import SNAPSHOT_EVERY, PropLedger
from ledger.migrate import migrate
from tests.support import program_body, purchase_body, trade_body, uid


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def url(request: pytest.FixtureRequest, sqlite_url: str) -> str:
    if request.param == "postgres":
        return str(request.getfixturevalue("postgres_url"))
    return sqlite_url


def full_replay(ledger: PropLedger, account_id: Any) -> Any:
    account = None
    for event in ledger.events.get(account_id):
        account = event.mutate(account)
    return account


def test_an_account_loaded_from_its_snapshot_equals_a_full_replay(url: str) -> None:
    migrate(url)
    ledger = PropLedger(url)
    try:
        program = program_body(uid("snap-"))
        ledger.define_program(program)
        reply = ledger.purchase(purchase_body(program["program_id"]))
        account_id = str(reply.account.id)
        # Enough trades for two snapshots and a tail, with an equity mark on the way.
        count = 2 * SNAPSHOT_EVERY + 37
        for number in range(count):
            profit = "12.34" if number % 3 else "-7.01"
            minute = number % 60
            hour = 9 + (number // 60) % 8
            day = 2 + number // 480
            body = trade_body(f"T-{number}", profit=profit)
            body["opened_at"] = f"2026-03-{day:02d}T{hour:02d}:{minute:02d}:00Z"
            body["closed_at"] = f"2026-03-{day:02d}T{hour:02d}:{minute:02d}:30Z"
            ledger.record_trade(account_id, body)
        ledger.record_equity(account_id, {"equity": "101000.00", "at": "2026-03-02T18:00:00Z"})

        snapshots = list(ledger.snapshots.get(reply.account.id)) if ledger.snapshots else []
        assert [s.originator_version for s in snapshots] == [SNAPSHOT_EVERY, 2 * SNAPSHOT_EVERY]

        fresh = PropLedger(url)  # no cache: loads from the latest snapshot
        try:
            loaded = fresh.account(account_id)
        finally:
            fresh.close()
        replayed = full_replay(ledger, reply.account.id)
        assert loaded.version == replayed.version == count + 2
        assert loaded.board() == replayed.board()
        assert loaded.state == replayed.state
        assert loaded.trades == replayed.trades
        assert loaded.snapshot_state() == replayed.snapshot_state()
        # A duplicate found through the snapshot's trade ids is still a duplicate.
        again = fresh_duplicate(url, account_id)
        assert again.duplicate
    finally:
        ledger.close()


def fresh_duplicate(url: str, account_id: str) -> Any:
    ledger = PropLedger(url)
    try:
        return ledger.record_trade(
            account_id,
            trade_body("T-5", profit="12.34")
            | {
                "opened_at": "2026-03-02T09:05:00Z",
                "closed_at": "2026-03-02T09:05:30Z",
            },
        )
    finally:
        ledger.close()
