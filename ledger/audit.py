"""Auditing the event log: chain verification, export to JSON Lines, replay into a new store.

All three read or write the log in pages, in constant memory, whatever its size.
"""

from __future__ import annotations

import base64
import binascii
import json
import sqlite3
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import IO, Any, Protocol
from uuid import UUID

import psycopg

from ledger.chain import GENESIS, link, recorded_text
from ledger.config import database_url_to_env, postgres_connect_args

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
        with psycopg.connect(**postgres_connect_args(env)) as connection:
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
            ).fetchall()
        )

    def links(self, connection: Any, after: int, until: int | None) -> list[tuple[Any, ...]]:
        clause = "" if until is None else " AND position <= ?"
        params: tuple[Any, ...] = (after,) if until is None else (after, until)
        return list(
            connection.execute(
                self.sql(
                    "SELECT position, stream_id, version, hash, recorded_at FROM event_chain "
                    f"WHERE position > ?{clause} ORDER BY position LIMIT {PAGE}"
                ),
                params,
            ).fetchall()
        )

    def count(self, connection: Any) -> int:
        row = connection.execute(f"SELECT COUNT(*) FROM {self.events_table}").fetchone()
        return int(row[0])

    def head(self, connection: Any) -> tuple[int, str] | None:
        row = connection.execute(
            "SELECT position, hash FROM event_chain_head WHERE id = 1"
        ).fetchone()
        return None if row is None else (int(row[0]), str(row[1]))

    def holds_anything(self, connection: Any, read_models: Iterable[str]) -> str | None:
        """What makes the store not empty, or None: events, links, snapshots, a
        projection's progress, rows in `read_models` (a replay beside old read models or
        snapshots would build a firm that is not the export's)."""
        if self.count(connection) or self.head(connection) is not None:
            return "it holds events"
        snapshots = "stored_snapshots" if self.sqlite else "propledger_snapshots"
        checks = [
            ("SELECT 1 FROM event_chain LIMIT 1", "event links"),
            (f"SELECT 1 FROM {snapshots} LIMIT 1", "snapshots"),
            ("SELECT 1 FROM projection_tracking WHERE position > 0", "projection progress"),
            *((f"SELECT 1 FROM {table} LIMIT 1", f"{table} rows") for table in read_models),
        ]
        for query, what in checks:
            if connection.execute(query).fetchone() is not None:
                return f"it holds {what}"
        return None


@contextmanager
def _snapshot(store: _Store) -> Iterator[Any]:
    """A connection that reads one consistent state of the log for as long as it is open:
    the events, their links and the chain head as one commit left them, however many
    statements read them and whatever writers commit meanwhile (PostgreSQL: a read-only
    REPEATABLE READ transaction; SQLite: one read transaction, a snapshot in WAL mode)."""
    with store.connect() as connection:
        if store.sqlite:
            connection.execute("BEGIN")
        else:
            connection.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
            connection.read_only = True
        try:
            yield connection
        finally:
            connection.rollback()


def stream_name(value: Any) -> str:
    """A stream as the API names it: an account's (or any aggregate's) id as a UUID with
    hyphens, the form of `account_id`; the chain and the export keep the hex form."""
    if isinstance(value, UUID):
        return str(value)
    text = str(value)
    try:
        return str(UUID(text))
    except ValueError:
        return text


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
    """Checks every link against its event and the link before it, then the head.

    Everything is read in one snapshot (`_snapshot`): a store being written to verifies as
    the log stood at one commit, its head being the last link of that commit. Read in
    separate statements, a writer committing between them made a sound log look tampered
    with (links read after their events' page, a head older than the last link)."""
    store = _Store(database_url)
    report = ChainReport()
    with _snapshot(store) as connection:
        total = store.count(connection)
        head = store.head(connection)
        previous_hash = GENESIS
        last_link_position = 0
        last_link_hash = GENESIS
        # The hash the last link should have held, when it held another: if the next link
        # follows that one, the next event is not blamed (the link's hash was edited, or
        # its event and every later link were: `_link_hash_edited`).
        recomputed: tuple[Finding, str] | None = None
        beyond_head: tuple[int, Any] | None = None  # the first link past the head
        versions = _StreamVersions()
        dated = False  # a link with a recorded time seen: every later one must have one
        for position, event, chain_link in _merged(store, connection):
            finding = _check(position, event, chain_link, previous_hash, last_link_position)
            if finding is not None and recomputed is not None and event is not None:
                edited, hash_it_should_hold = recomputed
                if finding.kind == "content_mismatch" and _expected(
                    hash_it_should_hold, event
                ) == str(chain_link[3]):
                    report.findings[report.findings.index(edited)] = _link_hash_edited(edited)
                    finding = None
            recomputed = None
            if event is not None:
                report.events += 1
                if progress and report.events % PAGE == 0:
                    progress(report.events, total)
                # Versions are followed as the chain orders them: an event moved to
                # another position is found there by its link ("reordered"), and must
                # not also look like a stream skipping versions (a swap was named a
                # deletion). An event its link vouches for is followed as itself, so a
                # link naming another stream is not taken for a deletion there.
                vouched = finding is None or finding.kind == "link_mismatch"
                linked = event if chain_link is None or vouched else (position, *chain_link[1:3])
                report.findings.extend(versions.check(position, linked))
            if finding is not None:
                report.findings.append(finding)
                if finding.kind == "event_missing":
                    versions.named(finding)
                elif finding.kind == "content_mismatch" and finding.expected is not None:
                    recomputed = (finding, finding.expected)
            elif event is not None and chain_link is not None:
                moved = _check_recorded_at(position, event, chain_link[4], dated_before=dated)
                if moved is not None:
                    report.findings.append(moved)
            if chain_link is not None and chain_link[4] is not None:
                dated = True
            if chain_link is not None:
                if head is not None and position > head[0] and beyond_head is None:
                    beyond_head = (position, chain_link)
                previous_hash = chain_link[3]
                last_link_position = position
                last_link_hash = previous_hash
            elif event is not None:
                # Unlinked: carry on as if the link had been right.
                previous_hash = _expected(previous_hash, event)
        report.head_position = last_link_position or None
        report.head_hash = last_link_hash if last_link_position else None
        _check_head(report, head, last_link_position, last_link_hash, beyond_head)
        if anchor is not None:
            _check_anchor(report, store, connection, anchor)
    if progress:
        progress(report.events, total)
    return report


def _link_hash_edited(finding: Finding) -> Finding:
    """A content mismatch whose next link follows the hash the event gives now. The chain
    cannot tell which of two things happened: this link's hash was edited (the event as
    chained), or the event was edited and every link after it rewritten to follow it. An
    anchor kept elsewhere tells them apart; the next event is not blamed either way."""
    return Finding(
        "content_mismatch",
        finding.position,
        finding.stream_id,
        finding.version,
        finding.expected,
        finding.found,
        f"event {finding.stream_id} v{finding.version} at position {finding.position} does "
        "not match its link, and the next link follows the event as it is now: the link's "
        "hash was edited, or the event was edited and the links after it rewritten (verify "
        "against an anchor kept elsewhere to tell which)",
    )


class _StreamVersions:
    """Every stream's versions run 1, 2, 3... in log order. An event deleted together
    with its link leaves no trace in the chain at its own position (the next link only
    fails to follow), but its stream skips a version: that names the event that is gone,
    stream and version, which the chain alone cannot."""

    def __init__(self) -> None:
        self.last: dict[str, int] = {}
        self.reported: set[tuple[str, int]] = set()

    def named(self, finding: Finding) -> None:
        """An event the chain already named as deleted (its link is still there)."""
        if finding.stream_id is not None and finding.version is not None:
            self.reported.add((_stream(finding.stream_id), finding.version))

    def check(self, position: int, event: Any) -> list[Finding]:
        stream, version = _stream(event[1]), int(event[2])
        last = self.last.get(stream, 0)
        self.last[stream] = max(last, version)
        if version == last + 1:
            return []
        name = stream_name(event[1])
        if version <= last:
            return [
                Finding(
                    "reordered",
                    position,
                    name,
                    version,
                    None,
                    None,
                    f"event {name} v{version} at position {position} comes after v{last} "
                    "of its stream",
                )
            ]
        gone = [v for v in range(last + 1, version) if (stream, v) not in self.reported]
        if not gone:
            return []
        which = f"v{gone[0]}" if len(gone) == 1 else f"v{gone[0]}-v{gone[-1]}"
        return [
            Finding(
                "event_missing",
                None,
                name,
                gone[0],
                None,
                None,
                f"event {name} {which} was deleted with its link (the stream goes from "
                f"v{last} to v{version}, at position {position})",
            )
        ]


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


def _check(
    position: int, event: Any, chain_link: Any, previous_hash: str, previous_position: int
) -> Finding | None:
    if chain_link is None:
        return Finding(
            "missing_link",
            position,
            stream_name(event[1]),
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
            stream_name(stream),
            version,
            found,
            None,
            f"event {stream_name(stream)} v{version} at position {position} was deleted",
        )
    expected = _expected(previous_hash, event)
    same_event = _stream(event[1]) == stream and int(event[2]) == version
    if expected == found:
        if same_event:
            return None
        # The hash covers the event's own stream and version: the link's were rewritten.
        return Finding(
            "link_mismatch",
            position,
            stream_name(event[1]),
            int(event[2]),
            None,
            None,
            f"the link at position {position} names {stream_name(stream)} v{version}, but "
            f"its hash is that of the event there, {stream_name(event[1])} v{int(event[2])} "
            "(the link's stream or version was edited)",
        )
    if not same_event:
        kind, what = "reordered", "holds another event than the one linked"
    elif position > previous_position + 1:
        kind = "content_mismatch"
        gone = (
            f"position {previous_position + 1}"
            if position == previous_position + 2
            else f"positions {previous_position + 1}-{position - 1}"
        )
        what = (
            f"does not follow the link before it, at position {previous_position}: what "
            f"was at {gone} was deleted with its link (no stream follows it to name it), "
            "or this event was edited"
        )
    else:
        kind, what = (
            "content_mismatch",
            "does not match its link (edited, or an event before it is gone)",
        )
    return Finding(
        kind,
        position,
        stream_name(event[1]),
        int(event[2]),
        expected,
        found,
        f"event {stream_name(event[1])} v{int(event[2])} at position {position} {what}",
    )


# A link's `recorded_at` is written when its event is inserted, the event's own
# `timestamp` (inside the hashed state) when the command saved it: the two are seconds
# apart, minutes at most (a save waiting out the store's retries). `recorded_at` is not
# hashed (it came after the chain's formula), so it is held to the hashed timestamp.
RECORDED_AT_TOLERANCE = timedelta(minutes=15)
_TIMESTAMP_MARK = b'"timestamp":{"_type_":"datetime_iso","_data_":"'


# Links were first written without `recorded_at` before this day (migration 0007 added
# the column); no build has written an undated link since.
UNDATED_LINKS_BEFORE = datetime(2026, 11, 23, tzinfo=UTC)


def _written_by_the_ledger(text: str) -> bool:
    """`recorded_at` exactly as `ledger.chain.recorded_text` writes its instant: the audit
    report compares it as text, so the same instant spelt otherwise (another offset, other
    digits) would land in another period while verifying as the same time."""
    try:
        return recorded_text(datetime.fromisoformat(text)) == text
    except ValueError:
        return False


def _check_recorded_at(
    position: int, event: Any, recorded_at: Any, *, dated_before: bool = False
) -> Finding | None:
    """A finding when the link's `recorded_at` is far from the event's own (hashed)
    timestamp, is spelt otherwise than the ledger writes it, or is missing where a link
    must have one (after a dated link, or for an event stamped after undated links
    ended): the audit report counts events in a period by it."""
    state = event[4]
    data = state.encode() if isinstance(state, str) else bytes(state)
    start = data.find(_TIMESTAMP_MARK)
    stamped: datetime | None = None
    stamped_text = "?"
    if start >= 0:
        start += len(_TIMESTAMP_MARK)
        stamped_text = data[start : data.find(b'"', start)].decode(errors="replace")
        try:
            stamped = datetime.fromisoformat(stamped_text)
        except ValueError:
            stamped = None
        if stamped is not None and stamped.tzinfo is None:
            stamped = stamped.replace(tzinfo=UTC)  # the library writes UTC
    name = stream_name(event[1])
    where = f"event {name} v{int(event[2])} at position {position}"
    if recorded_at is None:
        if dated_before:
            problem = "its link has no recorded time, though a link before it has one"
        elif stamped is not None and stamped >= UNDATED_LINKS_BEFORE:
            problem = (
                f"its link has no recorded time, though the event was stamped {stamped_text}, "
                "after links were first dated"
            )
        else:
            return None  # a link from before recorded_at existed
    elif not _written_by_the_ledger(str(recorded_at)):
        problem = (
            f"its link's recorded time {recorded_at} is not written as the ledger writes it "
            "(YYYY-MM-DDTHH:MM:SS.ffffffZ; the audit report compares it as text)"
        )
    elif stamped is None:
        return None  # an encrypted or compressed state: nothing to compare with
    else:
        try:
            recorded = datetime.fromisoformat(str(recorded_at))
            off = abs(recorded - stamped) > RECORDED_AT_TOLERANCE
        except (ValueError, TypeError):
            off = True  # not a time at all
        if not off:
            return None
        problem = (
            f"its link says it was recorded at {recorded_at}, the event itself at {stamped_text}"
        )
    return Finding(
        "recorded_at_mismatch",
        position,
        name,
        int(event[2]),
        None,
        None if recorded_at is None else str(recorded_at),
        f"{where}: {problem}",
    )


def _expected(previous_hash: str, event: Any) -> str:
    position, stream, version, topic, state = event
    # An edit made with SQL text functions can turn the stored bytes into text.
    data = state.encode() if isinstance(state, str) else bytes(state)
    return link(previous_hash, int(position), stream, int(version), str(topic), data)


def _check_head(
    report: ChainReport,
    head: tuple[int, str] | None,
    last_position: int,
    last_hash: str,
    beyond_head: tuple[int, Any] | None = None,
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
    elif beyond_head is not None:
        # Nothing is written after the head but with it (one transaction): links past it
        # were added behind the service's back, or the head was moved back.
        added, chain_link = beyond_head
        name = stream_name(chain_link[1])
        report.findings.append(
            Finding(
                "head_mismatch",
                added,
                name,
                int(chain_link[2]),
                found,
                last_hash,
                f"the log goes on past the chain head (position {position}): event {name} "
                f"v{int(chain_link[2])} at position {added}"
                + (
                    f" and the links up to position {last_position}"
                    if last_position > added
                    else ""
                )
                + " were added after it, or the head was moved back",
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


# Snapshots ---------------------------------------------------------------------------


@dataclass
class SnapshotReport:
    checked: int = 0
    findings: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.findings


class _Replayable(Protocol):
    """What the snapshot check needs of the application (kept structural so this module
    does not import the application, which the ledger's own modules import)."""

    events: Any
    snapshots: Any


def verify_snapshots(
    app: _Replayable, database_url: str, *, progress: Progress | None = None
) -> SnapshotReport:
    """Each stored snapshot against a replay of its stream's events from the first one.

    Snapshots are a cache outside the chain, yet loads start from them: an edited snapshot
    would change what the ledger decides without touching a chained event. So every
    snapshot is decoded, turned back into its aggregate, and compared with the aggregate
    the events alone give at the same version (each stream is read once, in order)."""
    report = SnapshotReport()
    if app.snapshots is None:
        return report
    store = _Store(database_url)
    table = "stored_snapshots" if store.sqlite else "propledger_snapshots"
    with store.connect() as connection:
        streams = [
            row[0]
            for row in connection.execute(
                f"SELECT DISTINCT originator_id FROM {table} ORDER BY originator_id"
            )
        ]
    for number, raw in enumerate(streams, start=1):
        stream = UUID(_stream(raw))
        report.checked += _check_stream_snapshots(app, stream, report.findings)
        if progress and number % 100 == 0:
            progress(number, len(streams))
    if progress and streams:
        progress(len(streams), len(streams))
    return report


def _check_stream_snapshots(app: _Replayable, stream: UUID, findings: list[Finding]) -> int:
    def finding(version: int | None, message: str) -> None:
        findings.append(
            Finding("snapshot_mismatch", None, str(stream), version, None, None, message)
        )

    try:
        snapshots = list(app.snapshots.get(stream))
    except Exception as error:  # an edited snapshot may no longer decode at all
        finding(None, f"a snapshot of stream {stream} does not decode: {error}")
        return 0
    if not snapshots:
        return 0
    wanted = {snapshot.originator_version: snapshot for snapshot in snapshots}
    last = max(wanted)
    aggregate: Any = None
    checked = 0
    for event in app.events.get(stream, lte=last):
        aggregate = event.mutate(aggregate)
        snapshot = wanted.pop(event.originator_version, None)
        if snapshot is None:
            continue
        checked += 1
        try:
            from_snapshot = snapshot.mutate(None).snapshot_state()
        except Exception as error:
            finding(snapshot.originator_version, f"the snapshot does not load: {error}")
            continue
        replayed = aggregate.snapshot_state()
        differing = sorted(
            key
            for key in set(from_snapshot) | set(replayed)
            if from_snapshot.get(key) != replayed.get(key)
        )
        if differing:
            finding(
                snapshot.originator_version,
                f"the snapshot of stream {stream} at version "
                f"{snapshot.originator_version} differs from a replay of its events in: "
                f"{', '.join(differing)}",
            )
    for version in sorted(wanted):
        finding(version, f"a snapshot at version {version} has no event at that version")
    return checked


# Export and replay -------------------------------------------------------------------


def export_log(database_url: str, out: IO[str], *, progress: Progress | None = None) -> int:
    """Writes the whole log as JSON Lines: a header, then one event a line with its link."""
    store = _Store(database_url)
    count = 0
    with _snapshot(store) as connection:
        total = store.count(connection)
        head = store.head(connection)
        header = {
            "format": EXPORT_FORMAT,
            "events": total,
            "head": None if head is None else {"position": head[0], "hash": head[1]},
        }
        out.write(json.dumps(header) + "\n")
        for position, event, chain_link in _merged(store, connection):
            if event is None:
                continue
            _, stream, version, topic, state = event
            data = state.encode() if isinstance(state, str) else state
            out.write(
                export_line(
                    position,
                    _stream(stream),
                    int(version),
                    str(topic),
                    base64.b64encode(data).decode("ascii"),
                    None if chain_link is None else str(chain_link[3]),
                    None if chain_link is None else chain_link[4],
                )
            )
            count += 1
            if progress and count % PAGE == 0:
                progress(count, total)
    if progress:
        progress(count, total)
    return count


_json_text = json.encoder.encode_basestring_ascii


def _json_or_null(value: Any) -> str:
    if value is None:
        return "null"
    return _json_text(value) if isinstance(value, str) else json.dumps(value)


def export_line(
    position: int,
    stream_id: str,
    version: int,
    topic: str,
    state: str,
    chain_hash: str | None,
    recorded_at: Any,
) -> str:
    """One event's export line: byte for byte what `json.dumps` of the record with
    separators (",", ":") gives, composed directly (the generic encoder was a third of
    an export's time)."""
    return (
        f'{{"position":{position:d},"stream_id":{_json_text(stream_id)},'
        f'"version":{version:d},"topic":{_json_text(topic)},"state":"{state}",'
        f'"hash":{_json_or_null(chain_hash)},"recorded_at":{_json_or_null(recorded_at)}}}\n'
    )


class ReplayError(Exception):
    pass


def replay_log(
    database_url: str,
    source: IO[str],
    *,
    read_models: Iterable[str] = (),
    progress: Progress | None = None,
) -> int:
    """Loads an export into an empty store, recomputing every link and checking it against
    the exported one; any difference aborts the replay and leaves the store empty.
    `read_models`: the projections' tables (projections/registry.py, which this layer
    cannot import), which must be empty too."""
    store = _Store(database_url)
    header = json.loads(source.readline() or "{}")
    if header.get("format") != EXPORT_FORMAT:
        raise ReplayError(f"not a propledger export (format {header.get('format')!r})")
    total = header.get("events")
    if isinstance(total, bool) or not isinstance(total, int) or total < 0:
        raise ReplayError(f"the export's header has no event count (events {total!r})")
    with store.connect() as connection:
        if store.sqlite:
            connection.execute("BEGIN IMMEDIATE")
        held = store.holds_anything(connection, read_models)
        if held is not None:
            connection.rollback()
            raise ReplayError(f"the target store is not empty: {held}")
        try:
            count, last = _replay_lines(store, connection, source, total, progress)
            if count != total:
                raise ReplayError(
                    f"the export's header counts {total} events, its lines hold {count}"
                )
            _finish_replay(store, connection, header, last)
        except BaseException:
            connection.rollback()
            raise
        connection.commit()
    return count


def _replay_lines(
    store: _Store, connection: Any, source: IO[str], total: int, progress: Progress | None
) -> tuple[int, tuple[int, str] | None]:
    previous = GENESIS
    batch_events: list[tuple[Any, ...]] = []
    batch_links: list[tuple[Any, ...]] = []
    count = 0
    last: tuple[int, str] | None = None
    dated = False  # as verify: after a dated link, every link has a recorded time
    for line_number, line in enumerate(source, start=2):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            position = int(record["position"])
            stream = UUID(record["stream_id"])
            version = int(record["version"])
            topic = str(record["topic"])
            state = base64.b64decode(record["state"], validate=True)
        except (ValueError, KeyError, TypeError, binascii.Error) as error:
            raise ReplayError(f"line {line_number}: not an exported event ({error!r})") from None
        previous = link(previous, position, stream, version, topic, state)
        if record.get("hash") is None:
            # Every event of a sound store has its link; without it nothing would check
            # the line (an edited amount would replay, and verify clean).
            raise ReplayError(
                f"line {line_number}: position {position} carries no link hash (an export "
                "of a store whose chain is broken, or an edited file)"
            )
        if record["hash"] != previous:
            raise ReplayError(
                f"line {line_number}: the link of position {position} does not match its "
                f"event (export {record['hash']}, recomputed {previous})"
            )
        off = _check_recorded_at(
            position,
            (position, stream, version, topic, state),
            record.get("recorded_at"),
            dated_before=dated,
        )
        if off is not None:
            raise ReplayError(f"line {line_number}: {off.message}")
        dated = dated or record.get("recorded_at") is not None
        stream_value = stream.hex if store.sqlite else stream
        batch_events.append((position, stream_value, version, topic, state))
        batch_links.append((position, stream.hex, version, previous, record.get("recorded_at")))
        last = (position, previous)
        count += 1
        if len(batch_events) >= 1000:
            _write_batch(store, connection, batch_events, batch_links)
            batch_events, batch_links = [], []
            if progress:
                progress(count, total)
    _write_batch(store, connection, batch_events, batch_links)
    if progress:
        progress(count, total)
    return count, last


def _write_batch(
    store: _Store, connection: Any, events: list[tuple[Any, ...]], links: list[tuple[Any, ...]]
) -> None:
    if not events:
        return
    cursor = connection.cursor()
    cursor.executemany(
        store.sql(
            f"INSERT INTO {store.events_table} ({store.position_column}, originator_id, "
            "originator_version, topic, state) VALUES (?, ?, ?, ?, ?)"
        ),
        events,
    )
    cursor.executemany(
        store.sql(
            "INSERT INTO event_chain (position, stream_id, version, hash, recorded_at) "
            "VALUES (?, ?, ?, ?, ?)"
        ),
        links,
    )


def _finish_replay(
    store: _Store, connection: Any, header: dict[str, Any], last: tuple[int, str] | None
) -> None:
    expected_head = header.get("head")
    if last is None:
        if expected_head:
            raise ReplayError("the export names a chain head but holds no events")
        return
    if not isinstance(expected_head, dict):
        raise ReplayError("the export's header names no chain head for its events")
    if (expected_head.get("position"), expected_head.get("hash")) != last:
        raise ReplayError(
            f"the export's chain head {expected_head} does not match its last event {last}"
        )
    connection.execute(
        store.sql("INSERT INTO event_chain_head (id, position, hash) VALUES (1, ?, ?)"), last
    )
    if not store.sqlite:
        connection.execute(
            "SELECT setval(pg_get_serial_sequence('propledger_events', 'notification_id'), %s)",
            (last[0],),
        )
