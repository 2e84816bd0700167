"""Snapshots of long accounts: loading from one gives exactly what a full replay gives."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any
from uuid import UUID

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


def _snapshot_table(url: str) -> tuple[str, str]:
    """(table, placeholder) of the snapshot store for the URL's backend."""
    if url.startswith("postgres"):
        return "propledger_snapshots", "%s"
    return "stored_snapshots", "?"


def _connect(url: str) -> Any:
    """A plain DB-API connection to the store behind the service's back."""
    import sqlite3

    import psycopg

    from ledger.config import sqlite_path

    path = sqlite_path(url)
    return sqlite3.connect(path) if path else psycopg.connect(url)


def _edit_snapshot(url: str, account_id: str, edit: Any) -> None:
    """Rewrites the account's newest snapshot's stored bytes behind the service's back."""
    table, mark = _snapshot_table(url)
    select = f"SELECT originator_id, originator_version, state FROM {table} "
    select += "ORDER BY originator_version DESC"
    update = f"UPDATE {table} SET state = {mark} "
    update += f"WHERE originator_id = {mark} AND originator_version = {mark}"
    connection = _connect(url)
    try:
        stream, version, state = next(
            row
            for row in connection.execute(select).fetchall()
            if UUID(str(row[0])) == UUID(account_id)
        )
        connection.execute(update, (edit(bytes(state)), stream, version))
        connection.commit()
    finally:
        connection.close()


def _long_account(url: str) -> tuple[PropLedger, str]:
    migrate(url)
    ledger = PropLedger(url)
    program = program_body(uid("snapcheck-"))
    ledger.define_program(program)
    account_id = str(ledger.purchase(purchase_body(program["program_id"])).account.id)
    items = []
    for number in range(SNAPSHOT_EVERY + 10):
        body = trade_body(f"T-{number}", profit="3.10" if number % 2 else "-1.05")
        stamp = f"2026-03-02T10:{number // 60 % 60:02d}:{number % 60:02d}Z"
        items.append(body | {"account_id": account_id, "opened_at": stamp, "closed_at": stamp})
    results, _ = ledger.record_trades_batch(items)
    assert {result.result for result in results} == {"created"}
    assert ledger.snapshots is not None
    assert list(ledger.snapshots.get(UUID(account_id))), "the test needs a stored snapshot"
    return ledger, account_id


def test_verify_checks_each_snapshot_against_a_replay_and_names_an_edited_one(url: str) -> None:
    from ledger.audit import verify_snapshots

    ledger, account_id = _long_account(url)
    try:
        clean = verify_snapshots(ledger, url)
        assert clean.ok
        assert clean.checked >= 1

        # Someone raises the balance inside the stored snapshot: the chain cannot see it
        # (snapshots are not chained), a fresh load would start from it.
        def richer(state: bytes) -> bytes:
            data = json.loads(state)
            # The snapshot's state, the account's numbers, the transcoded Decimal.
            balance = data["state"]["state"]["balance"]
            assert balance["_type_"] == "decimal_str"
            balance["_data_"] = str(Decimal(balance["_data_"]) + 1000)
            return json.dumps(data).encode()

        _edit_snapshot(url, account_id, richer)
        found = verify_snapshots(PropLedger(url), url)
        assert not found.ok
        [finding] = found.findings
        assert finding.kind == "snapshot_mismatch"
        assert finding.stream_id == str(UUID(account_id))
        assert "state" in finding.message

        # Someone drops a trade id from the snapshot: a retry of that trade would be
        # recorded twice by a process loading from it.
        def forgetful(state: bytes) -> bytes:
            data = json.loads(state)
            data["state"]["trade_log"] = data["state"]["trade_log"].split("\n", 1)[1]
            return json.dumps(data).encode()

        _edit_snapshot(url, account_id, forgetful)
        forgot = verify_snapshots(PropLedger(url), url)
        assert [f.kind for f in forgot.findings] == ["snapshot_mismatch"]
        assert "trade_log" in forgot.findings[0].message

        _edit_snapshot(url, account_id, lambda _: b"not json")
        broken = verify_snapshots(PropLedger(url), url)
        assert [f.kind for f in broken.findings] == ["snapshot_mismatch"]
        assert "does not decode" in broken.findings[0].message
    finally:
        ledger.close()


def test_the_rules_change_of_migration_8_drops_snapshots_taken_before_it(url: str) -> None:
    """Snapshots cache what the rules derive from the events; 0008 drops the ones taken
    under the old rules (and without the new state field) so none is loaded again."""
    from ledger.audit import verify_snapshots

    ledger, account_id = _long_account(url)
    try:
        # A snapshot as the old code wrote it: no day_start_equity_at.
        def older(state: bytes) -> bytes:
            data = json.loads(state)
            del data["state"]["state"]["day_start_equity_at"]
            return json.dumps(data).encode()

        _edit_snapshot(url, account_id, older)
        assert ledger.snapshots is not None
        assert list(ledger.snapshots.get(UUID(account_id)))
        _forget_migration(url, 8)
        assert migrate(url) == ["0008_retake_snapshots"]
        assert list(ledger.snapshots.get(UUID(account_id))) == []
        assert verify_snapshots(PropLedger(url), url).ok
        fresh = PropLedger(url)
        try:
            assert (
                fresh.account(account_id).board() == full_replay(ledger, UUID(account_id)).board()
            )
        finally:
            fresh.close()
    finally:
        ledger.close()


@pytest.mark.parametrize(
    ("version", "missing", "name"),
    [
        # 0009: snapshots keep every equity mark (`mark_log`), so a mark sent again is
        # found; one taken before would load an account that forgot its marks.
        (9, "mark_log", "0009_snapshots_remember_marks"),
        # 0011: snapshots keep the account's clock when it passed (`passed_activity_at`);
        # one taken before would open the next account's first payout days at the passing
        # trade, not at the clock.
        (11, "passed_activity_at", "0011_snapshots_remember_the_pass_clock"),
    ],
)
def test_a_migration_drops_snapshots_taken_without_what_accounts_now_keep(
    url: str, version: int, missing: str, name: str
) -> None:
    ledger, account_id = _long_account(url)
    try:

        def older(state: bytes) -> bytes:
            data = json.loads(state)
            del data["state"][missing]
            return json.dumps(data).encode()

        _edit_snapshot(url, account_id, older)
        assert ledger.snapshots is not None
        assert list(ledger.snapshots.get(UUID(account_id)))
        _forget_migration(url, version)
        assert migrate(url) == [name]
        assert list(ledger.snapshots.get(UUID(account_id))) == []
    finally:
        ledger.close()


def _forget_migration(url: str, version: int) -> None:
    """Marks `version` as not applied, as a store from before it would be."""
    import sqlite3

    import psycopg

    from ledger.config import sqlite_path

    path = sqlite_path(url)
    connection: Any = sqlite3.connect(path) if path else psycopg.connect(url)
    try:
        mark = "?" if path else "%s"
        connection.execute(f"DELETE FROM schema_migrations WHERE version = {mark}", (version,))
        connection.commit()
    finally:
        connection.close()


def _run(url: str, text: str) -> None:
    connection = _connect(url)
    try:
        connection.execute(text)
        connection.commit()
    finally:
        connection.close()


@pytest.mark.parametrize("how", ["single", "batch"])
def test_a_snapshot_the_store_fails_to_take_after_the_commit_does_not_fail_the_command(
    url: str, how: str
) -> None:
    """Found by an audit: the trade that makes an account's 200th event was committed,
    then taking the snapshot met a store error (a connection dropped) and the command
    answered 503; its retry said duplicate. The events are what was asked for: a snapshot
    is a cache, taken again at the next interval."""
    migrate(url)
    ledger = PropLedger(url)
    table, _ = _snapshot_table(url)
    try:
        program = program_body(uid("snapfail-"))
        ledger.define_program(program)
        account_id = str(ledger.purchase(purchase_body(program["program_id"])).account.id)
        items = [
            trade_body(f"T-{n}", profit="1.00")
            | {"account_id": account_id, "closed_at": f"2026-03-02T10:{n // 60:02d}:{n % 60:02d}Z"}
            for n in range(SNAPSHOT_EVERY - 2)
        ]
        ledger.record_trades_batch(items)
        assert ledger.account(account_id).version == SNAPSHOT_EVERY - 1
        last = trade_body("T-last", profit="1.00") | {"closed_at": "2026-03-02T12:00:00Z"}
        _run(url, f"ALTER TABLE {table} RENAME TO {table}_away")  # the store refuses
        try:
            if how == "single":
                reply = ledger.record_trade(account_id, last)
                assert not reply.duplicate
                assert reply.account.version == SNAPSHOT_EVERY
            else:
                results, position = ledger.record_trades_batch([last | {"account_id": account_id}])
                assert [result.result for result in results] == ["created"]
                assert position
        finally:
            _run(url, f"ALTER TABLE {table}_away RENAME TO {table}")
        fresh = PropLedger(url)
        try:
            account = fresh.account(account_id)
            assert account.version == SNAPSHOT_EVERY
            assert account.state.balance.amount == Decimal("100000.00") + SNAPSHOT_EVERY - 1
            assert fresh.snapshots is not None
            assert list(fresh.snapshots.get(UUID(account_id))) == []  # none taken
            assert fresh.record_trade(account_id, last).duplicate
        finally:
            fresh.close()
    finally:
        ledger.close()
