"""The tamper-evident hash chain over the event log.

Every stored event gets a link, written in the same transaction as the event itself:

    hash(n) = SHA-256( hash(n-1) | position | stream id | version | topic | SHA-256(state) )

where `position` is the event's notification id, `hash(0)` is 64 zeros, and `|` is a
newline. The chain is global, in log order, because the store already serialises every
writer (PostgreSQL's recorder takes a table lock, SQLite has one writer): the link is
computed after the insert, under that same lock, so it adds no serialisation of its own.

What each tampering breaks:
- an edited event: its own link no longer matches its content;
- a deleted event or a whole deleted stream: the link after the gap no longer follows the
  link before it (and the deleted events' links point at missing events);
- a reorder: links follow content, so swapped content breaks both links;
- the newest events cut off: the chain head (`event_chain_head`, one row updated with each
  link) names a position the log no longer reaches.
Someone who rewrites events, links and head together can only be caught by an anchor kept
outside the database: the chain head that `GET /v1/reports/audit` and every export show.
`propledger audit verify --anchor POSITION:HASH` checks the chain still passes through it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import psycopg
from eventsourcing.persistence import (
    IntegrityError,
    InterfaceError,
    OperationalError,
    StoredEvent,
)
from eventsourcing.postgres import PostgresApplicationRecorder
from eventsourcing.sqlite import SQLiteApplicationRecorder
from psycopg.sql import SQL, Composed, Identifier

GENESIS = "0" * 64


def link(
    previous: str, position: int, stream_id: Any, version: int, topic: str, state: bytes
) -> str:
    stream = stream_id.hex if isinstance(stream_id, UUID) else str(stream_id)
    digest = hashlib.sha256(state).hexdigest()
    text = "\n".join([previous, str(position), stream, str(version), topic, digest])
    return hashlib.sha256(text.encode()).hexdigest()


# The instant links are recorded at when a ledger stamps its own times (a demo store's
# simulated business time, `PropLedger(stamp_events=True)`); None: the wall clock.
_recorded_at: ContextVar[str | None] = ContextVar("chain_recorded_at", default=None)
# Attempts of the insert under way in this context (see `insert_events`).
_attempts: ContextVar[list[int] | None] = ContextVar("insert_attempts", default=None)


def recorded_text(instant: datetime) -> str:
    return instant.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@contextmanager
def recording_at(instant: datetime) -> Iterator[None]:
    """Links written inside carry `instant` (the save's events' time) as `recorded_at`."""
    token = _recorded_at.set(recorded_text(instant))
    try:
        yield
    finally:
        _recorded_at.reset(token)


def recorded_now() -> str:
    return _recorded_at.get() or recorded_text(datetime.now(UTC))


def chain_links(
    previous: str, positions: Sequence[int], events: Sequence[StoredEvent]
) -> list[tuple[int, str, int, str, str]]:
    """(position, stream id, version, hash, recorded at) for each new event."""
    recorded_at = recorded_now()
    links = []
    for position, event in zip(positions, events, strict=True):
        previous = link(
            previous,
            position,
            event.originator_id,
            event.originator_version,
            event.topic,
            event.state,
        )
        stream = (
            event.originator_id.hex
            if isinstance(event.originator_id, UUID)
            else str(event.originator_id)
        )
        links.append((position, stream, event.originator_version, previous, recorded_at))
    return links


class ChainedSQLiteApplicationRecorder(SQLiteApplicationRecorder):
    """Writes each batch's links and the new head in the inserting transaction."""

    def _insert_events(
        self, c: Any, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        positions = super()._insert_events(c, stored_events, **kwargs)
        if not stored_events:
            return positions
        assert positions is not None
        c.execute("SELECT hash FROM event_chain_head WHERE id = 1")
        row = c.fetchone()
        links = chain_links(row[0] if row else GENESIS, positions, stored_events)
        c.executemany(
            "INSERT INTO event_chain (position, stream_id, version, hash, recorded_at) "
            "VALUES (?, ?, ?, ?, ?)",
            links,
        )
        c.execute(
            "INSERT INTO event_chain_head (id, position, hash) VALUES (1, ?, ?) "
            "ON CONFLICT (id) DO UPDATE SET position = excluded.position, hash = excluded.hash",
            (links[-1][0], links[-1][3]),
        )
        return positions


class ChainedPostgresApplicationRecorder(PostgresApplicationRecorder):
    """Writes each batch's links and the new head while the table lock is held.

    A save's events and its links each go in as one INSERT: of a few arrays sent in
    binary (`unnest`) for a large save, of plain VALUES rows for a small one; not the
    library's array of composite values dumped as text nor one statement per link (a
    1,000-event save spent ~100 ms more in psycopg's dumpers). The table lock and NOTIFY
    statements are composed once, not on every save."""

    SMALL_SAVE = 8  # events: up to this many go in as VALUES rows

    def __init__(self, datastore: Any, **kwargs: Any) -> None:
        super().__init__(datastore, **kwargs)
        table = SQL("{schema}.{table}").format(
            schema=Identifier(self.datastore.schema), table=Identifier(self.events_table_name)
        )
        columns = SQL("(originator_id, originator_version, topic, state)")
        self._insert_arrays_statement = SQL(
            "INSERT INTO {table} {columns} "
            "SELECT * FROM unnest(%b::{id_type}[], %b::bigint[], %b::text[], %b::bytea[]) "
            "RETURNING notification_id"
        ).format(
            table=table, columns=columns, id_type=Identifier(self.datastore.originator_id_type)
        )
        self._insert_rows_statements = [
            SQL("INSERT INTO {table} {columns} VALUES {rows} RETURNING notification_id").format(
                table=table,
                columns=columns,
                rows=SQL(", ").join([SQL("(%s, %s, %s, %b)")] * count),
            )
            for count in range(1, self.SMALL_SAVE + 1)
        ]
        self._before_insert: list[bytes] | None = None  # lock and NOTIFY, as sent
        self._select_committed_statement = SQL(
            "SELECT e.notification_id, e.topic, e.state FROM unnest(%b::{id_type}[], "
            "%b::bigint[]) WITH ORDINALITY AS k(originator_id, originator_version, n) "
            "LEFT JOIN {table} e ON e.originator_id = k.originator_id "
            "AND e.originator_version = k.originator_version ORDER BY k.n"
        ).format(table=table, id_type=Identifier(self.datastore.originator_id_type))

    def insert_events(
        self, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        """The library's insert (which tries again, up to ten times, when the connection
        fails), recognising its own earlier attempt: a connection lost after COMMIT was
        sent leaves the caller not knowing whether the save happened, and the next attempt
        collides with the very rows it wrote. When an attempt failed that way and the store
        holds this save's events byte for byte, the save happened: its positions are
        returned, so the command answers what it did instead of deciding again (a payout
        refused as `payout_pending` by its own request). A collision with anything else
        still raises, and the command is retried on the store's state."""
        attempts = [0]
        token = _attempts.set(attempts)
        try:
            positions: Sequence[int] | None = super().insert_events(stored_events, **kwargs)
            return positions
        except IntegrityError:
            if attempts[0] < 2 or not stored_events:
                raise
            earlier = self._committed_earlier(stored_events)
            if earlier is None:
                raise
            return earlier
        except (InterfaceError, OperationalError) as failure:
            # Every attempt failed on the connection; one of them may still have
            # committed (the connection lost after COMMIT, then never back in time for
            # the next attempt to collide with its rows). Asked once more: when the store
            # holds this save's events, the save happened and is answered as such, not as
            # a failure the client would resend into a `duplicate` of itself.
            if not stored_events or attempts[0] < 1:
                raise
            try:
                earlier = self._committed_earlier(stored_events)
            except (InterfaceError, OperationalError, psycopg.Error):
                raise failure from None
            if earlier is None:
                raise
            return earlier
        finally:
            _attempts.reset(token)

    def _insert_events(
        self, curs: Any, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> None:
        attempts = _attempts.get()
        if attempts is not None:
            attempts[0] += 1  # the library calls this first in every attempt
        super()._insert_events(curs, stored_events, **kwargs)

    def _committed_earlier(self, stored_events: Sequence[StoredEvent]) -> list[int] | None:
        """The positions of `stored_events` when the store holds exactly them, else None."""
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(
                self._select_committed_statement,
                (
                    [event.originator_id for event in stored_events],
                    [event.originator_version for event in stored_events],
                ),
            )
            rows = curs.fetchall()
        positions = []
        for event, row in zip(stored_events, rows, strict=True):
            if row["notification_id"] is None or row["topic"] != event.topic:
                return None
            if bytes(row["state"]) != bytes(event.state):
                return None
            positions.append(int(row["notification_id"]))
        return positions

    def _insert_stored_events(
        self, curs: Any, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> None:
        if self._before_insert is None:
            statements = [
                *self.lock_table_statements,
                SQL("NOTIFY {0}").format(Identifier(self.channel_name)),
            ]
            self._before_insert = [
                statement.as_bytes(curs)
                if isinstance(statement, SQL | Composed)
                else str(statement).encode()
                for statement in statements
            ]
        for statement in self._before_insert:
            curs.execute(statement, prepare=True)
        count = len(stored_events)
        if count <= self.SMALL_SAVE:
            curs.execute(
                self._insert_rows_statements[count - 1],
                [
                    value
                    for event in stored_events
                    for value in (
                        event.originator_id,
                        event.originator_version,
                        event.topic,
                        event.state,
                    )
                ],
            )
            return
        curs.execute(
            self._insert_arrays_statement,
            (
                [event.originator_id for event in stored_events],
                [event.originator_version for event in stored_events],
                [event.topic for event in stored_events],
                [event.state for event in stored_events],
            ),
        )

    def _fetch_ids_after_insert_events(
        self, curs: Any, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        positions = super()._fetch_ids_after_insert_events(curs, stored_events, **kwargs)
        if not stored_events:
            return positions
        assert positions is not None
        curs.execute("SELECT hash FROM event_chain_head WHERE id = 1")
        row = curs.fetchone()
        links = chain_links(row["hash"] if row else GENESIS, positions, stored_events)
        if len(links) <= self.SMALL_SAVE:
            curs.execute(
                "INSERT INTO event_chain (position, stream_id, version, hash, recorded_at) "
                "VALUES " + ", ".join(["(%s, %s, %s, %s, %s)"] * len(links)),
                [value for link_row in links for value in link_row],
            )
        else:
            curs.execute(
                "INSERT INTO event_chain (position, stream_id, version, hash, recorded_at) "
                "SELECT * FROM unnest(%b::bigint[], %b::text[], %b::integer[], %b::text[], "
                "%b::text[])",
                [list(column) for column in zip(*links, strict=True)],
            )
        curs.execute(
            "INSERT INTO event_chain_head (id, position, hash) VALUES (1, %s, %s) "
            "ON CONFLICT (id) DO UPDATE SET position = excluded.position, hash = excluded.hash",
            (links[-1][0], links[-1][3]),
        )
        return positions
