"""Auditing the event log: chain verification, export to JSON Lines, replay into a new store.

All three read or write the log in pages, in constant memory, whatever its size.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

import psycopg

from ledger.chain import GENESIS, link
from ledger.config import database_url_to_env

PAGE = 5000
EXPORT_FORMAT = "propledger-export/1"

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class Finding:
    kind: str  # content_mismatch | broken_link | missing_link | event_missing | truncated ...
    position: int | None
    stream_id: str | None
    version: int | None
    expected: str | None
    found: str | None
    message: str

    def to_dict(self) -> dict[str, Any]:
        return self.__dict__.copy()


@dataclass
class ChainReport:
    events: int = 0
    head_position: int | None = None
    head_hash: str | None = None
    findings: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.findings


class _Store:
    """Plain SQL access to the event tables, for either backend."""

    def __init__(self, database_url: str) -> None:
        env = database_url_to_env(database_url)
        self.sqlite = env["PERSISTENCE_MODULE"].endswith("sqlite")
        self.env = env
        self.events_table = "stored_events" if self.sqlite else "propledger_events"
        self.position_column = "rowid" if self.sqlite else "notification_id"

    @contextmanager
    def connect(self) -> Iterator[Any]:
        if self.sqlite:
            lite = sqlite3.connect(self.env["SQLITE_DBNAME"], timeout=30)
            try:
                yield lite
            finally:
                lite.close()
            return
        env = self.env
        with psycopg.connect(
            dbname=env["POSTGRES_DBNAME"],
            host=env["POSTGRES_HOST"],
            port=env["POSTGRES_PORT"],
            user=env["POSTGRES_USER"],
            password=env["POSTGRES_PASSWORD"] or None,
            connect_timeout=10,
        ) as connection:
            yield connection

    def sql(self, text: str) -> str:
        return text if self.sqlite else text.replace("?", "%s")

    def events(self, connection: Any, after: int) -> list[tuple[Any, ...]]:
        return list(
            connection.execute(
                self.sql(
                    f"SELECT {self.position_column}, originator_id, originator_version, topic, "
                    f"state FROM {self.events_table} WHERE {self.position_column} > ? "
                    f"ORDER BY {self.position_column} LIMIT ?"
                ),
                (after, PAGE),
            )
        )

    def links(self, connection: Any, after: int, until: int | None) -> list[tuple[Any, ...]]:
        clause = "" if until is None else " AND position <= ?"
        params: tuple[Any, ...] = (after,) if until is None else (after, until)
        return list(
            connection.execute(
                self.sql(
                    "SELECT position, stream_id, version, hash FROM event_chain "
                    f"WHERE position > ?{clause} ORDER BY position LIMIT {PAGE}"
                ),
                params,
            )
        )

    def count(self, connection: Any) -> int:
        row = connection.execute(f"SELECT COUNT(*) FROM {self.events_table}").fetchone()
        return int(row[0])

    def head(self, connection: Any) -> tuple[int, str] | None:
        row = connection.execute(
            "SELECT position, hash FROM event_chain_head WHERE id = 1"
        ).fetchone()
        return None if row is None else (int(row[0]), str(row[1]))


def _stream(value: Any) -> str:
    if isinstance(value, UUID):
        return value.hex
    text = str(value)
    try:
        return UUID(text).hex
    except ValueError:
        return text


def verify_chain(
    database_url: str,
    *,
    anchor: tuple[int, str] | None = None,
    progress: Progress | None = None,
) -> ChainReport:
    """Checks every link against its event and the link before it, then the head."""
    store = _Store(database_url)
    report = ChainReport()
    with store.connect() as connection:
        total = store.count(connection)
        head = store.head(connection)
        previous_hash = GENESIS
        last_link_position = 0
        for position, event, chain_link in _merged(store, connection):
            if event is not None:
                report.events += 1
                if progress and report.events % PAGE == 0:
                    progress(report.events, total)
            finding = _check(position, event, chain_link, previous_hash)
            if finding is not None:
                report.findings.append(finding)
            if chain_link is not None:
                previous_hash = chain_link[3]
                last_link_position = position
            elif event is not None:
                # Unlinked: carry on as if the link had been right.
                previous_hash = _expected(previous_hash, event)
        report.head_position = last_link_position or None
        report.head_hash = previous_hash if last_link_position else None
        _check_head(report, head, last_link_position, previous_hash)
        if anchor is not None:
            _check_anchor(report, store, connection, anchor)
    if progress:
        progress(report.events, total)
    return report


def _paged(fetch: Callable[[int], list[tuple[Any, ...]]]) -> Iterator[tuple[Any, ...]]:
    after = 0
    while True:
        rows = fetch(after)
        yield from rows
        if len(rows) < PAGE:
            return
        after = int(rows[-1][0])


def _merged(store: _Store, connection: Any) -> Iterator[tuple[int, Any, Any]]:
    """Events and links side by side by position (either may be missing): a merge join of
    two ordered, paged reads."""
    events = _paged(lambda after: store.events(connection, after))
    links = _paged(lambda after: store.links(connection, after, None))
    event = next(events, None)
    chain_link = next(links, None)
    while event is not None or chain_link is not None:
        event_position = int(event[0]) if event is not None else None
        link_position = int(chain_link[0]) if chain_link is not None else None
        if link_position is None or (event_position is not None and event_position < link_position):
            assert event_position is not None
            yield event_position, event, None
            event = next(events, None)
        elif event_position is None or link_position < event_position:
            yield link_position, None, chain_link
            chain_link = next(links, None)
        else:
            yield event_position, event, chain_link
            event = next(events, None)
            chain_link = next(links, None)


def _check(position: int, event: Any, chain_link: Any, previous_hash: str) -> Finding | None:
    if chain_link is None:
        return Finding(
            "missing_link",
            position,
            _stream(event[1]),
            int(event[2]),
            None,
            None,
            f"event at position {position} has no link in the chain",
        )
    stream, version, found = str(chain_link[1]), int(chain_link[2]), str(chain_link[3])
    if event is None:
        return Finding(
            "event_missing",
            position,
            stream,
            version,
            found,
            None,
            f"event {stream} v{version} at position {position} was deleted",
        )
    expected = _expected(previous_hash, event)
    if expected == found:
        return None
    if _stream(event[1]) != stream or int(event[2]) != version:
        kind, what = "reordered", "holds another event than the one linked"
    else:
        kind, what = (
            "content_mismatch",
            "does not match its link (edited, or an event before it is gone)",
        )
    return Finding(
        kind,
        position,
        _stream(event[1]),
        int(event[2]),
        expected,
        found,
        f"event {_stream(event[1])} v{int(event[2])} at position {position} {what}",
    )


def _expected(previous_hash: str, event: Any) -> str:
    position, stream, version, topic, state = event
    # An edit made with SQL text functions can turn the stored bytes into text.
    data = state.encode() if isinstance(state, str) else bytes(state)
    return link(previous_hash, int(position), stream, int(version), str(topic), data)


def _check_head(
    report: ChainReport, head: tuple[int, str] | None, last_position: int, last_hash: str
) -> None:
    if head is None:
        if last_position:
            report.findings.append(
                Finding("head_missing", None, None, None, None, None, "the chain head is missing")
            )
        return
    position, found = head
    if position > last_position:
        report.findings.append(
            Finding(
                "truncated",
                position,
                None,
                None,
                found,
                None,
                f"the chain head is at position {position} but the log ends at {last_position}: "
                "the newest events were cut off",
            )
        )
    elif position != last_position or found != last_hash:
        report.findings.append(
            Finding(
                "head_mismatch",
                position,
                None,
                None,
                last_hash,
                found,
                "the chain head does not match the last link",
            )
        )


def _check_anchor(
    report: ChainReport, store: _Store, connection: Any, anchor: tuple[int, str]
) -> None:
    position, expected = anchor
    rows = store.links(connection, position - 1, position)
    found = str(rows[0][3]) if rows and int(rows[0][0]) == position else None
    if found != expected:
        report.findings.append(
            Finding(
                "anchor_mismatch",
                position,
                None,
                None,
                expected,
                found,
                f"the chain no longer passes through the anchor at position {position}",
            )
        )
