"""The hash chain against tampering done behind the service's back (DESIGN.md, "Audit").

A history is built through the HTTP app (programs, purchases, trades with a breach and a
pass, an equity mark), the app is stopped, and then each test tampers with its own copy of
that store with plain SQL, the way someone with database access would, and checks that
`verify_chain` and `propledger audit verify` (run as a separate process) name the finding.
Every test runs on an SQLite file and on PostgreSQL.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit
from uuid import UUID, uuid4

import psycopg
import pytest
from fastapi.testclient import TestClient
from psycopg import sql

from ledger import audit
from ledger.audit import Finding, verify_chain
from ledger.chain import GENESIS, link, recorded_text
from ledger.config import database_url_to_env
from tests.support import (
    BACKENDS,
    SECRET,
    auth,
    backend_url,
    make_app,
    program_body,
    purchase_body,
    trade_body,
)

ADMIN = auth("admin", sub="admin-ann")
PLATFORM = auth("platform", sub="bridge-mt5")
AUDITOR = auth("auditor", sub="auditor-ada")


# Raw access to the store, as an intruder would have it --------------------------------


@dataclass(frozen=True)
class Row:
    position: int
    stream: str  # 32 hex digits
    version: int
    topic: str
    state: bytes


class RawStore:
    """Plain SQL on the event, chain and projection tables of either backend."""

    def __init__(self, url: str) -> None:
        self.url = url
        env = database_url_to_env(url)
        self.sqlite = env["PERSISTENCE_MODULE"].endswith("sqlite")
        self.path = env.get("SQLITE_DBNAME", "")
        self.events = "stored_events" if self.sqlite else "propledger_events"
        self.position = "rowid" if self.sqlite else "notification_id"

    def _connect(self) -> Any:
        if self.sqlite:
            return sqlite3.connect(self.path)
        return psycopg.connect(self.url)

    def run(self, text: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """One statement in its own committed transaction; the rows it returned."""
        connection = self._connect()
        try:
            cursor = connection.execute(text if self.sqlite else text.replace("?", "%s"), params)
            rows = list(cursor.fetchall()) if cursor.description else []
            connection.commit()
            return rows
        finally:
            connection.close()

    def rows(self) -> list[Row]:
        found = self.run(
            f"SELECT {self.position}, originator_id, originator_version, topic, state "
            f"FROM {self.events} ORDER BY {self.position}"
        )
        return [Row(int(p), UUID(str(s)).hex, int(v), str(t), bytes(b)) for p, s, v, t, b in found]

    def links(self) -> dict[int, tuple[str, int, str]]:
        found = self.run("SELECT position, stream_id, version, hash FROM event_chain")
        return {int(p): (str(s), int(v), str(h)) for p, s, v, h in found}

    def head(self) -> tuple[int, str] | None:
        found = self.run("SELECT position, hash FROM event_chain_head WHERE id = 1")
        return (int(found[0][0]), str(found[0][1])) if found else None

    def stream_value(self, stream: str) -> Any:
        return stream if self.sqlite else UUID(stream)

    def set_state(self, position: int, state: bytes) -> None:
        self.run(f"UPDATE {self.events} SET state = ? WHERE {self.position} = ?", (state, position))

    def delete_events(self, positions: list[int], *, with_links: bool) -> None:
        for position in positions:
            self.run(f"DELETE FROM {self.events} WHERE {self.position} = ?", (position,))
            if with_links:
                self.run("DELETE FROM event_chain WHERE position = ?", (position,))

    def stream_positions(self, stream: str) -> list[int]:
        return [row.position for row in self.rows() if row.stream == stream]


# The history and the copies tests tamper with --------------------------------------------


@dataclass(frozen=True)
class History:
    breached: str  # account breached by its second trade
    marked: str  # account with a trade and an equity mark, between others in the log
    passed: str  # one-phase account passed by one trade
    funded: str  # the funded account the pass opened


def one_phase_program() -> dict[str, Any]:
    body = program_body()
    body["phases"] = [
        {**body["phases"][0], "profit_target_pct": "1", "min_trading_days": 0},
    ]
    return body


def build_history(url: str) -> History:
    """Builds the history through the HTTP app, then stops it (leaves the TestClient)."""
    with TestClient(make_app(url)) as client:

        def post(path: str, body: dict[str, Any], headers: dict[str, str]) -> dict[str, Any]:
            response = client.post(path, json=body, headers=headers)
            assert response.status_code == 201, response.text
            reply: dict[str, Any] = response.json()
            return reply

        classic = program_body()
        one_phase = one_phase_program()
        post("/v1/programs", classic, ADMIN)
        post("/v1/programs", one_phase, ADMIN)
        breached = post("/v1/purchases", purchase_body(classic["program_id"]), ADMIN)["account_id"]
        marked = post("/v1/purchases", purchase_body(classic["program_id"]), ADMIN)["account_id"]
        passed = post("/v1/purchases", purchase_body(one_phase["program_id"]), ADMIN)["account_id"]
        post(f"/v1/accounts/{breached}/trades", trade_body(profit="100.00"), PLATFORM)
        post(f"/v1/accounts/{marked}/trades", trade_body(profit="200.00"), PLATFORM)
        mark = {"equity": "100150.00", "at": "2026-03-02T11:00:00Z"}
        post(f"/v1/accounts/{marked}/equity", mark, PLATFORM)
        state = post(
            f"/v1/accounts/{breached}/trades",
            trade_body(profit="-6000.00", closed="12:00:00"),
            PLATFORM,
        )
        assert state["status"] == "breached"
        assert state["breach"]["rule"] == "max_daily_loss"
        state = post(f"/v1/accounts/{passed}/trades", trade_body(profit="1000.00"), PLATFORM)
        assert state["status"] == "passed"
        funded = state["next_account_id"]
        post(f"/v1/accounts/{funded}/trades", trade_body(profit="300.00"), PLATFORM)
        post(f"/v1/accounts/{funded}/trades", trade_body(profit="-50.00"), PLATFORM)
        # A projection read waits until the in-process projections have caught up.
        caught_up = client.get("/v1/ledger/trial-balance", headers=AUDITOR)
        assert caught_up.status_code == 200, caught_up.text
    return History(
        breached=UUID(breached).hex,
        marked=UUID(marked).hex,
        passed=UUID(passed).hex,
        funded=UUID(funded).hex,
    )


@dataclass(frozen=True)
class Original:
    backend: str
    url: str
    history: History


@pytest.fixture(scope="module", params=BACKENDS)
def original(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Original:
    url = backend_url(request, tmp_path_factory)
    return Original(str(request.param), url, build_history(url))


def _named(url: str, dbname: str) -> str:
    """The same server URL naming another database."""
    return urlunsplit(urlsplit(url)._replace(path="/" + dbname))


@pytest.fixture
def store(request: pytest.FixtureRequest, original: Original, tmp_path: Path) -> Iterator[RawStore]:
    """This test's own copy of the original store (a backup of the file, or a PostgreSQL
    database made with the original as its template, dropped afterwards)."""
    if original.backend == "sqlite":
        source = database_url_to_env(original.url)["SQLITE_DBNAME"]
        target = tmp_path / "copy.db"
        # The backup API reads through the write-ahead log, which a file copy would miss.
        with sqlite3.connect(source) as read, sqlite3.connect(target) as write:
            read.backup(write)
        read.close()
        write.close()
        yield RawStore(f"sqlite:///{target}")
        return
    server: str = request.getfixturevalue("postgres_server")
    name = f"propledger_t_audit_copy_{uuid4().hex[:8]}"
    template = urlsplit(original.url).path.lstrip("/")
    with psycopg.connect(server, autocommit=True) as admin:
        admin.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                sql.Identifier(name), sql.Identifier(template)
            )
        )
    try:
        yield RawStore(_named(original.url, name))
    finally:
        with psycopg.connect(server, autocommit=True) as admin:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


# The command line ---------------------------------------------------------------------


def run_cli(url: str, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("PROPLEDGER_")}
    env.update({"PROPLEDGER_DATABASE_URL": url, "PROPLEDGER_JWT_SECRET": SECRET})
    return subprocess.run(
        [sys.executable, "-m", "api.cli", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def cli_verify(
    store: RawStore, cwd: Path, *extra: str
) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    done = run_cli(store.url, "audit", "verify", *extra, cwd=cwd)
    assert "Traceback" not in done.stderr, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return done, result


def expected_link(store: RawStore, row: Row, state: bytes) -> str:
    """The link an event at `row`'s place would have with content `state`."""
    links = store.links()
    before = [position for position in links if position < row.position]
    previous = links[max(before)][2] if before else GENESIS
    return link(previous, row.position, row.stream, row.version, row.topic, state)


# Tests ----------------------------------------------------------------------------------


def test_an_untouched_store_verifies_clean_including_every_projection(
    store: RawStore, tmp_path: Path
) -> None:
    rows = store.rows()
    report = verify_chain(store.url)
    assert report.ok
    assert report.findings == []
    assert report.events == len(rows)
    assert (report.head_position, report.head_hash) == store.head()
    assert report.head_position == rows[-1].position

    done, result = cli_verify(store, tmp_path)
    assert done.returncode == 0, done.stderr
    assert result["ok"] is True
    assert result["chain"]["ok"] is True
    assert result["chain"]["events"] == len(rows)
    assert result["chain"]["first_broken_link"] is None
    head = store.head()
    assert head is not None
    assert result["chain"]["head"] == {"position": head[0], "hash": head[1]}
    assert set(result["projections"]) == {
        "account_board",
        "journal",
        "payment_board",
        "payout_board",
    }
    for name, outcome in result["projections"].items():
        assert outcome["differences"] == [], name
        assert outcome["position"] == rows[-1].position, name
    assert f"OK: {len(rows)} events, chain head {head[0]}:{head[1]}" in done.stderr


def named(stream_hex: str) -> str:
    """A stream as findings name it: the aggregate id as the API spells it (a UUID with
    hyphens, an account's `account_id`), not the chain's hex form."""
    return str(UUID(stream_hex))


def test_an_edited_event_is_a_content_mismatch_naming_its_stream_and_version(
    original: Original, store: RawStore, tmp_path: Path
) -> None:
    marked = original.history.marked
    target = next(
        row for row in store.rows() if row.stream == marked and row.topic.endswith("TradeClosed")
    )
    needle = b'"_data_":"200.00"'
    assert needle in target.state  # the trade's profit
    edited = target.state.replace(needle, b'"_data_":"900.00"', 1)
    json.loads(edited)  # still valid JSON, same length, still bytes
    store.set_state(target.position, edited)
    assert next(r for r in store.rows() if r.position == target.position).state == edited

    link_hash = store.links()[target.position][2]
    report = verify_chain(store.url)
    assert not report.ok
    assert report.findings == [
        Finding(
            kind="content_mismatch",
            position=target.position,
            stream_id=named(marked),
            version=target.version,
            expected=expected_link(store, target, edited),
            found=link_hash,
            message=report.findings[0].message,
        )
    ]
    assert named(marked) in report.findings[0].message
    assert f"v{target.version}" in report.findings[0].message

    done, result = cli_verify(store, tmp_path)
    assert done.returncode == 1
    assert result["ok"] is False
    assert result["chain"]["ok"] is False
    first = result["chain"]["first_broken_link"]
    assert first["kind"] == "content_mismatch"
    assert (first["position"], first["stream_id"], first["version"]) == (
        target.position,
        named(marked),
        target.version,
    )
    assert first["found"] == link_hash
    assert first["expected"] == expected_link(store, target, edited)
    assert "FAIL chain:" in done.stderr
    assert named(marked) in done.stderr
    assert "FAILED" in done.stderr


def test_a_deleted_event_is_reported_missing_by_stream_version_and_position(
    original: Original, store: RawStore, tmp_path: Path
) -> None:
    breached = original.history.breached
    rows = store.rows()
    target = next(
        row for row in rows if row.stream == breached and row.topic.endswith("TradeClosed")
    )
    assert target.position < rows[-1].position - 3  # an event in the middle of the log
    store.delete_events([target.position], with_links=False)

    report = verify_chain(store.url)
    assert [(f.kind, f.position, f.stream_id, f.version) for f in report.findings] == [
        ("event_missing", target.position, named(breached), target.version)
    ]
    assert report.events == len(rows) - 1

    done, result = cli_verify(store, tmp_path)
    assert done.returncode == 1
    first = result["chain"]["first_broken_link"]
    assert first["kind"] == "event_missing"
    assert (first["position"], first["stream_id"], first["version"]) == (
        target.position,
        named(breached),
        target.version,
    )
    assert f"event {named(breached)} v{target.version} at position {target.position}" in done.stderr


def test_an_event_deleted_with_its_link_is_named_by_its_streams_missing_version(
    original: Original, store: RawStore
) -> None:
    """Event and link both gone: the chain alone only sees that the next link does not
    follow; the stream skipping a version names the event that is gone."""
    breached = original.history.breached
    rows = store.rows()
    target = next(
        row
        for row in rows
        if row.stream == breached and row.topic.endswith("TradeClosed") and row.version > 1
    )
    later = [row for row in rows if row.stream == breached and row.version > target.version]
    assert later, "the test needs a later event of the same stream"
    store.delete_events([target.position], with_links=True)

    report = verify_chain(store.url)
    missing = [f for f in report.findings if f.kind == "event_missing"]
    assert [(f.stream_id, f.version) for f in missing] == [(named(breached), target.version)]
    assert f"v{target.version} was deleted" in missing[0].message
    # The first event after the gap still fails its link, as before.
    after = next(row for row in rows if row.position > target.position)
    assert any(f.position == after.position for f in report.findings if f.kind != "event_missing")


def test_a_links_recorded_time_moved_to_another_period_is_found(
    original: Original, store: RawStore
) -> None:
    """`recorded_at` (what the audit report counts events in a period by) is not part of
    the link's hash; it is held to the event's own hashed timestamp instead."""
    assert verify_chain(store.url).ok
    target = store.rows()[len(store.rows()) // 2]
    store.run(
        "UPDATE event_chain SET recorded_at = ? WHERE position = ?",
        ("2020-01-01T00:00:00.000000Z", target.position),
    )
    report = verify_chain(store.url)
    assert [(f.kind, f.position, f.stream_id, f.version) for f in report.findings] == [
        ("recorded_at_mismatch", target.position, named(target.stream), target.version)
    ]
    assert "2020-01-01T00:00:00.000000Z" in report.findings[0].message


def test_a_links_recorded_time_blanked_or_respelt_is_found(
    original: Original, store: RawStore
) -> None:
    """Found by an audit: a link's recorded_at set to NULL (taken for a link from before
    the column existed) or spelt with another offset (the same instant, so within the
    tolerance, but the audit report compares the text: another period) verified clean."""
    rows = store.rows()
    blanked, respelt = rows[len(rows) // 3], rows[2 * len(rows) // 3]
    store.run("UPDATE event_chain SET recorded_at = NULL WHERE position = ?", (blanked.position,))
    ((recorded,),) = store.run(
        "SELECT recorded_at FROM event_chain WHERE position = ?", (respelt.position,)
    )
    other_offset = (
        datetime.fromisoformat(recorded).astimezone(timezone(timedelta(hours=23, minutes=59)))
    ).isoformat()
    store.run(
        "UPDATE event_chain SET recorded_at = ? WHERE position = ?",
        (other_offset, respelt.position),
    )
    report = verify_chain(store.url)
    assert [(f.kind, f.position, f.stream_id, f.version) for f in report.findings] == [
        ("recorded_at_mismatch", blanked.position, named(blanked.stream), blanked.version),
        ("recorded_at_mismatch", respelt.position, named(respelt.stream), respelt.version),
    ]
    assert "has no recorded time" in report.findings[0].message
    assert "not written as the ledger writes it" in report.findings[1].message


def test_every_links_recorded_time_blanked_is_found(original: Original, store: RawStore) -> None:
    """Blanked from the first link on, no dated link comes before: the events' own
    timestamps, later than the last build that wrote undated links, tell."""
    store.run("UPDATE event_chain SET recorded_at = NULL")
    report = verify_chain(store.url)
    assert {f.kind for f in report.findings} == {"recorded_at_mismatch"}
    assert len(report.findings) == len(store.rows())
    assert "after links were first dated" in report.findings[0].message


def test_a_whole_deleted_stream_breaks_the_link_of_the_first_event_after_each_gap(
    original: Original, store: RawStore, tmp_path: Path
) -> None:
    marked = original.history.marked
    rows = store.rows()
    gone = store.stream_positions(marked)
    assert len(gone) == 3  # opened, trade, equity mark
    store.delete_events(gone, with_links=True)
    survivors = [row for row in rows if row.position not in gone]
    # The first event left after each run of deleted positions.
    after_gaps, previous = [], 0
    for row in survivors:
        if any(previous < position < row.position for position in gone):
            after_gaps.append(row)
        previous = row.position
    assert after_gaps, "the deleted stream must not be the end of the log"
    first_after = next(row for row in survivors if row.position > gone[0])

    report = verify_chain(store.url)
    assert not report.ok
    assert {f.kind for f in report.findings} <= {"broken_link", "content_mismatch"}
    assert [(f.position, f.stream_id, f.version) for f in report.findings] == [
        (row.position, named(row.stream), row.version) for row in after_gaps
    ]
    assert report.findings[0].position == first_after.position
    assert report.events == len(survivors)

    done, result = cli_verify(store, tmp_path)
    assert done.returncode == 1
    first = result["chain"]["first_broken_link"]
    assert (first["position"], first["stream_id"], first["version"]) == (
        first_after.position,
        named(first_after.stream),
        first_after.version,
    )
    assert named(first_after.stream) in done.stderr
    assert f"at position {first_after.position}" in done.stderr


def test_cutting_off_the_newest_events_is_reported_as_truncated(
    store: RawStore, tmp_path: Path
) -> None:
    rows = store.rows()
    head = store.head()
    assert head is not None
    assert head[0] == rows[-1].position
    cut = [row.position for row in rows[-3:]]
    store.delete_events(cut, with_links=True)
    assert store.head() == head  # the intruder left the chain head alone

    report = verify_chain(store.url)
    assert [(f.kind, f.position) for f in report.findings] == [("truncated", head[0])]
    assert report.head_position == rows[-4].position
    assert "cut off" in report.findings[0].message

    done, result = cli_verify(store, tmp_path)
    assert done.returncode == 1
    assert result["chain"]["first_broken_link"]["kind"] == "truncated"
    assert result["chain"]["first_broken_link"]["position"] == head[0]
    assert "FAIL chain:" in done.stderr
    assert "cut off" in done.stderr


def test_an_edited_projection_row_is_a_projection_difference_while_the_chain_is_ok(
    original: Original, store: RawStore, tmp_path: Path
) -> None:
    account_id = str(UUID(original.history.funded))
    (before,) = store.run("SELECT balance FROM account_board WHERE account_id = ?", (account_id,))
    store.run(
        "UPDATE account_board SET balance = ? WHERE account_id = ?", ("999999.00", account_id)
    )
    assert verify_chain(store.url).ok

    done, result = cli_verify(store, tmp_path)
    assert done.returncode == 1
    assert result["ok"] is False
    assert result["chain"]["ok"] is True
    assert result["chain"]["findings"] == []
    differences = result["projections"]["account_board"]["differences"]
    assert len(differences) == 1
    difference = differences[0]
    assert difference["table"] == "account_board"
    assert difference["problem"] == "different"
    assert difference["key"] == [account_id]
    assert set(difference["columns"]) == {"balance"}
    assert difference["columns"]["balance"]["live"] == "999999.00"
    assert difference["columns"]["balance"]["rebuilt"] == str(before[0])
    for name in ("journal", "payment_board", "payout_board"):
        assert result["projections"][name]["differences"] == [], name
    assert "FAIL account_board: 1 differences" in done.stderr
    assert "FAIL chain" not in done.stderr

    # The same finding through the API, with the service started again.
    with TestClient(make_app(store.url)) as client:
        forbidden = client.post("/v1/audit/verify", headers=auth("finance"))
        assert forbidden.status_code == 403
        response = client.post("/v1/audit/verify", headers=AUDITOR)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["ok"] is False
    assert body["chain"]["ok"] is True
    assert body["projections"]["account_board"]["differences"] == differences


def test_an_anchor_must_be_on_the_chain(store: RawStore, tmp_path: Path) -> None:
    links = store.links()
    position = sorted(links)[len(links) // 2]
    right = links[position][2]
    wrong = ("0" if right[0] != "0" else "1") + right[1:]

    done, result = cli_verify(store, tmp_path, "--anchor", f"{position}:{right}")
    assert done.returncode == 0, done.stderr
    assert result["ok"] is True

    done, result = cli_verify(store, tmp_path, "--anchor", f"{position}:{wrong}")
    assert done.returncode == 1
    assert result["chain"]["findings"] == [
        {
            "kind": "anchor_mismatch",
            "position": position,
            "stream_id": None,
            "version": None,
            "expected": wrong,
            "found": right,
            "message": result["chain"]["findings"][0]["message"],
        }
    ]
    assert "anchor" in done.stderr
    assert str(position) in done.stderr

    beyond = max(links) + 10
    report = verify_chain(store.url, anchor=(beyond, right))
    assert [(f.kind, f.position, f.found) for f in report.findings] == [
        ("anchor_mismatch", beyond, None)
    ]

    for bad in ("12:abc", "garbage", f"12:{'z' * 64}"):
        malformed = run_cli(store.url, "audit", "verify", "--anchor", bad, cwd=tmp_path)
        assert malformed.returncode == 2  # a bad option, refused by the parser (README)
        assert "--anchor" in malformed.stderr
        assert "propledger audit verify" in malformed.stderr
        assert "Traceback" not in malformed.stderr


def test_a_rewritten_chain_passes_alone_and_is_caught_by_an_anchor_kept_outside(
    original: Original, store: RawStore
) -> None:
    """Someone who rewrites an event, every link after it and the head leaves a chain
    that verifies; only the head kept elsewhere (an anchor) shows it changed."""
    anchor = store.head()
    assert anchor is not None
    rows = store.rows()
    target = next(
        row
        for row in rows
        if row.stream == original.history.breached and row.topic.endswith("TradeClosed")
    )
    edited = target.state.replace(b'"_data_":"100.00"', b'"_data_":"900.00"', 1)
    assert edited != target.state
    store.set_state(target.position, edited)
    links = store.links()
    previous = links[max(p for p in links if p < target.position)][2]
    for row in rows:
        if row.position < target.position:
            continue
        state = edited if row.position == target.position else row.state
        previous = link(previous, row.position, row.stream, row.version, row.topic, state)
        store.run("UPDATE event_chain SET hash = ? WHERE position = ?", (previous, row.position))
    store.run("UPDATE event_chain_head SET hash = ? WHERE id = 1", (previous,))

    assert verify_chain(store.url).ok
    report = verify_chain(store.url, anchor=anchor)
    assert [(f.kind, f.position, f.expected, f.found) for f in report.findings] == [
        ("anchor_mismatch", anchor[0], anchor[1], previous)
    ]


def test_findings_are_the_same_when_the_log_is_read_in_many_small_pages(
    original: Original, store: RawStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = store.rows()
    middle = rows[len(rows) // 2]
    store.delete_events([middle.position], with_links=False)
    whole = verify_chain(store.url)
    monkeypatch.setattr(audit, "PAGE", 2)
    paged = verify_chain(store.url)
    assert paged.findings == whole.findings
    assert [f.kind for f in paged.findings] == ["event_missing"]
    assert (paged.events, paged.head_position, paged.head_hash) == (
        whole.events,
        whole.head_position,
        whole.head_hash,
    )


def test_an_event_edited_with_sql_string_functions_is_a_content_mismatch_too(
    original: Original, store: RawStore
) -> None:
    """An edit in SQL (SQLite's replace() even turns the bytes into text) is still found."""
    marked = original.history.marked
    target = next(
        row for row in store.rows() if row.stream == marked and row.topic.endswith("TradeClosed")
    )
    if store.sqlite:
        edit = 'replace(state, \'"_data_":"200.00"\', \'"_data_":"900.00"\')'
    else:
        edit = (
            "convert_to(replace(convert_from(state, 'UTF8'), "
            '\'"_data_":"200.00"\', \'"_data_":"900.00"\'), \'UTF8\')'
        )
    store.run(
        f"UPDATE {store.events} SET state = {edit} WHERE {store.position} = ?", (target.position,)
    )
    report = verify_chain(store.url)
    assert [(f.kind, f.position, f.stream_id, f.version) for f in report.findings] == [
        ("content_mismatch", target.position, named(marked), target.version)
    ]


def test_swapped_event_contents_break_both_links(store: RawStore) -> None:
    rows = store.rows()
    first, second = [row for row in rows if row.topic.endswith("Trader.Registered")][:2]
    store.set_state(first.position, second.state)
    store.set_state(second.position, first.state)
    report = verify_chain(store.url)
    assert [(f.kind, f.position) for f in report.findings] == [
        ("content_mismatch", first.position),
        ("content_mismatch", second.position),
    ]


def slip_in_an_event(store: RawStore) -> Row:
    """Inserts a copy of a trader's first event as a new stream, as raw SQL would."""
    rows = store.rows()
    model = next(row for row in rows if row.topic.endswith("Trader.Registered"))
    stream = uuid4().hex
    store.run(
        f"INSERT INTO {store.events} (originator_id, originator_version, topic, state) "
        "VALUES (?, ?, ?, ?)",
        (store.stream_value(stream), 1, model.topic, model.state),
    )
    (inserted,) = [row for row in store.rows() if row.stream == stream]
    assert inserted.position > rows[-1].position
    return inserted


def test_an_event_slipped_in_behind_the_service_has_no_link(
    store: RawStore, tmp_path: Path
) -> None:
    inserted = slip_in_an_event(store)

    report = verify_chain(store.url)
    assert (report.findings[0].kind, report.findings[0].position) == (
        "missing_link",
        inserted.position,
    )
    assert (report.findings[0].stream_id, report.findings[0].version) == (
        named(inserted.stream),
        1,
    )
    done, result = cli_verify(store, tmp_path)
    assert done.returncode == 1
    assert result["chain"]["first_broken_link"]["kind"] == "missing_link"
    assert f"position {inserted.position} has no link" in done.stderr


def test_an_event_slipped_in_at_the_end_is_only_a_missing_link(store: RawStore) -> None:
    head = store.head()
    inserted = slip_in_an_event(store)
    report = verify_chain(store.url)
    assert [(f.kind, f.position) for f in report.findings] == [("missing_link", inserted.position)]
    assert (report.head_position, report.head_hash) == head


def test_two_events_swapped_between_positions_are_reordered_not_deleted(store: RawStore) -> None:
    """Found by an audit: two events of different streams and versions swapped whole
    (positions exchanged) were headlined as a deletion ("v2-v14 was deleted"), because the
    stream versions were followed in the order the rows now stand. They are followed in
    the chain's order: the two positions are `reordered`, nothing is `event_missing`."""
    rows = store.rows()
    # The last event of a stream with several events, swapped with an event of another
    # stream that lies before that stream's second: the stream's middle versions are then
    # between the two positions, as its last one moves before them.
    streams = Counter(row.stream for row in rows)
    busy = max(streams, key=lambda stream: streams[stream])
    mine = [row for row in rows if row.stream == busy]
    assert len(mine) >= 3, "the test needs a stream with three events"
    second = mine[-1]
    first = next(
        row
        for row in rows
        if row.stream != busy and mine[0].position < row.position < mine[1].position
    )
    parked = -first.position
    store.run(
        f"UPDATE {store.events} SET {store.position} = ? WHERE {store.position} = ?",
        (parked, first.position),
    )
    store.run(
        f"UPDATE {store.events} SET {store.position} = ? WHERE {store.position} = ?",
        (first.position, second.position),
    )
    store.run(
        f"UPDATE {store.events} SET {store.position} = ? WHERE {store.position} = ?",
        (second.position, parked),
    )

    report = verify_chain(store.url)

    assert not report.ok
    assert [(f.kind, f.position) for f in report.findings] == [
        ("reordered", first.position),
        ("reordered", second.position),
    ]


# Findings an audit found misnamed (2026-12-07) ---------------------------------------------


def test_the_last_event_of_a_stream_deleted_with_its_link_is_named_by_its_position(
    store: RawStore,
) -> None:
    """No later event of its stream skips a version, so nothing names the stream; the next
    link blamed an intact event of another stream. The gap in the chain's positions names
    where the deleted event was."""
    rows = store.rows()
    last_of = {row.stream: row for row in rows}
    target = next(
        row for row in rows[:-1] if last_of[row.stream] is row and row.position > rows[0].position
    )
    after = next(row for row in rows if row.position > target.position)
    store.delete_events([target.position], with_links=True)

    report = verify_chain(store.url)
    assert [(f.kind, f.position) for f in report.findings] == [("content_mismatch", after.position)]
    assert f"what was at position {target.position} was deleted with its link" in (
        report.findings[0].message
    )


def test_a_links_stream_and_version_rewritten_is_a_link_mismatch_not_a_deletion(
    store: RawStore,
) -> None:
    """The link's hash covers its event's own stream and version: a link naming another
    stream was reported as that stream's versions "deleted with their link"."""
    rows = store.rows()
    streams = Counter(row.stream for row in rows)
    busy = max(streams, key=lambda stream: streams[stream])
    target = next(row for row in rows if row.stream != busy)
    store.run(
        "UPDATE event_chain SET stream_id = ?, version = ? WHERE position = ?",
        (busy, streams[busy] + 3, target.position),
    )
    report = verify_chain(store.url)
    assert [(f.kind, f.position, f.stream_id, f.version) for f in report.findings] == [
        ("link_mismatch", target.position, named(target.stream), target.version)
    ]
    assert f"names {named(busy)} v{streams[busy] + 3}" in report.findings[0].message


def test_a_links_hash_rewritten_is_named_once_without_blaming_the_next_event(
    store: RawStore,
) -> None:
    """The next link still follows the hash its event gives: only the edited link is
    named (the next, intact event was blamed too). It cannot be told from an edited event
    whose later links were all rewritten, so the finding claims neither."""
    rows = store.rows()
    target = rows[len(rows) // 2]
    kept = store.links()[target.position][2]
    store.run("UPDATE event_chain SET hash = ? WHERE position = ?", ("0" * 64, target.position))
    report = verify_chain(store.url)
    assert [(f.kind, f.position, f.stream_id, f.version) for f in report.findings] == [
        ("content_mismatch", target.position, named(target.stream), target.version)
    ]
    assert (report.findings[0].expected, report.findings[0].found) == (kept, "0" * 64)
    assert "the link's hash was edited, or the event was edited" in report.findings[0].message


def test_an_event_edited_with_every_later_link_rewritten_is_not_called_intact(
    store: RawStore, tmp_path: Path
) -> None:
    """A review found the forger's case named "the link was edited; the event is intact".
    The chain alone cannot tell it from an edited link; an anchor can."""
    rows = store.rows()
    head = store.head()
    assert head is not None
    target = rows[len(rows) // 2]
    forged = target.state + b" "  # any change to the stored bytes (JSON still)
    store.set_state(target.position, forged)
    # The forger rewrites every later link (and the head) to follow the edited event; the
    # event's own link is left, so the chain still meets its old hash there.
    previous = expected_link(store, target, forged)
    for row in rows:
        if row.position > target.position:
            previous = link(previous, row.position, row.stream, row.version, row.topic, row.state)
            store.run(
                "UPDATE event_chain SET hash = ? WHERE position = ?", (previous, row.position)
            )
    store.run("UPDATE event_chain_head SET hash = ? WHERE id = 1", (previous,))

    report = verify_chain(store.url)
    assert [(f.kind, f.position) for f in report.findings] == [
        ("content_mismatch", target.position)
    ]
    assert "intact" not in report.findings[0].message
    anchored = verify_chain(store.url, anchor=head)
    assert "anchor_mismatch" in [f.kind for f in anchored.findings]


def test_an_event_and_link_added_past_the_head_are_named(store: RawStore) -> None:
    """Linked correctly, but the head left where it was: the finding names the event."""
    head = store.head()
    assert head is not None
    inserted = slip_in_an_event(store)
    store.run(
        "INSERT INTO event_chain (position, stream_id, version, hash, recorded_at) "
        "VALUES (?, ?, ?, ?, ?)",
        (
            inserted.position,
            inserted.stream,
            1,
            link(head[1], inserted.position, inserted.stream, 1, inserted.topic, inserted.state),
            recorded_text(datetime.now(UTC)),  # a careful forger dates the link too
        ),
    )
    report = verify_chain(store.url)
    assert [(f.kind, f.position, f.stream_id, f.version) for f in report.findings] == [
        ("head_mismatch", inserted.position, named(inserted.stream), 1)
    ]
    assert f"past the chain head (position {head[0]})" in report.findings[0].message
