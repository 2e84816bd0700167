"""Connections for read models: the same database as the event store, SQLite or PostgreSQL.

SQL is written once with `?` placeholders; PostgreSQL gets `%s`.
"""

from __future__ import annotations

import sqlite3
import threading
import time
import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Protocol
from urllib.parse import parse_qsl, unquote, urlsplit

import psycopg
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool

# A pooled connection idle longer than this is checked (one round trip) before use.
RECHECK_IDLE_SECONDS = 2.0


def _mark_returned(connection: psycopg.Connection[Any]) -> None:
    """The pool's reset hook: notes when the connection went back to the pool."""
    connection._propledger_returned_at = time.monotonic()  # type: ignore[attr-defined]


def _check_if_idle(connection: psycopg.Connection[Any]) -> None:
    """The pool's check before lending a connection: only for new connections and those
    idle longer than RECHECK_IDLE_SECONDS. Checking every loan cost a round trip per
    transaction, a sixth of a single trade post's CPU under load; a connection dropped
    while in steady use fails its transaction like one dropped mid-statement does (the
    request answers 5xx and changes nothing), and the pool replaces it."""
    returned = getattr(connection, "_propledger_returned_at", None)
    if returned is None or time.monotonic() - returned > RECHECK_IDLE_SECONDS:
        ConnectionPool.check_connection(connection)


class Cursor(Protocol):
    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]: ...
    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None: ...


class Database:
    """A small façade over sqlite3 and a psycopg pool with one placeholder style."""

    def __init__(self, url: str, *, pool_size: int = 4) -> None:
        parts = urlsplit(url)
        self.url = url
        if parts.scheme == "sqlite":
            path = unquote(parts.path)
            self.dialect = "sqlite"
            self._sqlite_path = path[1:] if path.startswith("/") else path
            self._local = threading.local()
            self._pool: ConnectionPool[Any] | None = None
        elif parts.scheme in ("postgresql", "postgres"):
            self.dialect = "postgres"
            conninfo = psycopg.conninfo.make_conninfo(
                dbname=unquote(parts.path.lstrip("/")),
                host=parts.hostname or dict(parse_qsl(parts.query)).get("host") or "127.0.0.1",
                port=parts.port or 5432,
                user=unquote(parts.username or "postgres"),
                password=unquote(parts.password) if parts.password else None,
                connect_timeout=10,
            )
            self._conninfo = conninfo
            self._pool = ConnectionPool(
                conninfo,
                min_size=1,
                max_size=pool_size,
                kwargs={"row_factory": dict_row, "autocommit": False},
                open=True,
                name="propledger-projections",
                # A connection the server dropped while it sat idle is replaced before use,
                # not failed on; one in steady use is not checked (see _check_if_idle).
                check=_check_if_idle,
                reset=_mark_returned,
            )
        else:
            raise ValueError(f"unsupported database URL {url!r}")

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
        elif getattr(self._local, "connection", None) is not None:
            self._local.connection.close()
            self._local.connection = None

    def _sqlite(self) -> sqlite3.Connection:
        connection: sqlite3.Connection | None = getattr(self._local, "connection", None)
        if connection is None:
            connection = sqlite3.connect(
                self._sqlite_path, isolation_level=None, timeout=30, check_same_thread=False
            )
            connection.row_factory = sqlite3.Row
            connection.execute("PRAGMA busy_timeout = 30000")
            self._local.connection = connection
        return connection

    @contextmanager
    def transaction(self, *, write: bool = True, timeout: float | None = None) -> Iterator[Cursor]:
        """One transaction: committed when the block ends, rolled back on an exception.
        `timeout`: how long to wait for a pooled connection (PostgreSQL; the pool's own
        30 s when None), raising psycopg_pool.PoolTimeout past it."""
        if self._pool is None:
            connection = self._sqlite()
            connection.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            try:
                yield _SQLiteCursor(connection)
            except BaseException:
                connection.execute("ROLLBACK")
                raise
            connection.execute("COMMIT")
            return
        with (
            self._pool.connection(timeout=timeout) as connection,
            connection.transaction(),
            connection.cursor() as cursor,
        ):
            yield _PostgresCursor(cursor)

    def execute_one(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        """One statement as its own transaction. On PostgreSQL it is sent in autocommit
        mode: one round trip instead of BEGIN, the statement and COMMIT (the statement is
        atomic on its own; the commit is as durable as any other)."""
        if self._pool is None:
            with self.transaction() as cursor:
                return cursor.execute(sql, params)
        with self._pool.connection() as connection:
            connection.autocommit = True
            try:
                with connection.cursor() as cursor:
                    return _PostgresCursor(cursor).execute(sql, params)
            finally:
                if not connection.closed:
                    connection.autocommit = False

    def query(
        self, sql: str, params: Sequence[Any] = (), *, timeout: float | None = None
    ) -> list[dict[str, Any]]:
        with self.transaction(write=False, timeout=timeout) as cursor:
            return cursor.execute(sql, params)

    def query_fresh(
        self, sql: str, params: Sequence[Any] = (), *, timeout: float = 3.0
    ) -> list[dict[str, Any]]:
        """`query` on a connection of its own, not the pool's. After an outage the pool
        retries its connections with a doubling delay (a minute's outage: the next try up
        to half a minute after the database is back); a probe of reachability asks the
        database itself."""
        if self._pool is None:
            return self.query(sql, params)
        with psycopg.connect(
            self._conninfo, connect_timeout=max(1, round(timeout)), row_factory=dict_row
        ) as connection:
            return _PostgresCursor(connection.cursor()).execute(sql, params)


class _SQLiteCursor:
    def __init__(self, connection: sqlite3.Connection) -> None:
        self._connection = connection

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        cursor = self._connection.execute(sql, tuple(params))
        return [dict(row) for row in cursor.fetchall()] if cursor.description else []

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        self._connection.executemany(sql, rows)


class _PostgresCursor:
    def __init__(self, cursor: psycopg.Cursor[Any]) -> None:
        self._cursor = cursor

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        self._cursor.execute(sql.replace("?", "%s").encode(), tuple(params))
        return list(self._cursor.fetchall()) if self._cursor.description else []

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        if rows:
            self._cursor.executemany(sql.replace("?", "%s").encode(), rows)

    def update_by_copy(
        self, table: str, key: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]
    ) -> None:
        """See `update_rows`. The temporary table is named after its columns, so a session
        that outlives a migration never applies an old shape."""
        names = [*columns, key]
        shape = zlib.crc32(",".join(names).encode())
        staging = f"_update_{table}_{shape:08x}"
        self._cursor.execute(
            f"CREATE TEMP TABLE IF NOT EXISTS {staging} ON COMMIT DELETE ROWS AS "
            f"SELECT {', '.join(names)} FROM {table} WITH NO DATA"
        )
        # Emptied at commit, and here too: a second call in one transaction must not see
        # the first one's rows (two staged rows for one target would apply either).
        self._cursor.execute(f"DELETE FROM {staging}")
        with self._cursor.copy(f"COPY {staging} ({', '.join(names)}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
        assignments = ", ".join(f"{column} = staged.{column}" for column in columns)
        self._cursor.execute(
            f"UPDATE {table} AS target SET {assignments} FROM {staging} AS staged "
            f"WHERE target.{key} = staged.{key}"
        )


def select_by_keys(
    cursor: Cursor, table: str, key: str, columns: Sequence[str], keys: Sequence[str]
) -> dict[str, dict[str, Any]]:
    """The rows of `table` whose `key` is one of `keys`, by key (in chunks of 500)."""
    rows: dict[str, dict[str, Any]] = {}
    for start in range(0, len(keys), 500):
        chunk = list(keys[start : start + 500])
        marks = ", ".join("?" for _ in chunk)
        for row in cursor.execute(
            f"SELECT {', '.join(columns)} FROM {table} WHERE {key} IN ({marks})", chunk
        ):
            rows[row[key]] = dict(row)
    return rows


def upsert(
    cursor: Cursor, table: str, columns: Sequence[str], rows: Sequence[dict[str, Any]]
) -> None:
    """Inserts rows, or updates them on a conflict of the first column (the key)."""
    if not rows:
        return
    placeholders = ", ".join("?" for _ in columns)
    assignments = ", ".join(f"{column} = excluded.{column}" for column in columns[1:])
    cursor.executemany(
        f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({placeholders}) "
        f"ON CONFLICT ({columns[0]}) DO UPDATE SET {assignments}",
        [[row[column] for column in columns] for row in rows],
    )


# From this many rows an update goes through COPY (PostgreSQL): measured on the board's
# 1,000-row pages, a pipelined executemany of UPDATEs took 9.3 ms of client CPU and 16 ms
# of wall time, COPY into a temporary table and one UPDATE ... FROM 1.5 ms and 9 ms. Below
# it, the temporary table is not worth its statements.
COPY_FROM_ROWS = 100


def update_rows(
    cursor: Cursor, table: str, key: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]
) -> None:
    """`UPDATE table SET columns WHERE key = ...` for each row (the columns' values, then
    the key's). Many rows on PostgreSQL: copied into a temporary table (this session's,
    emptied at commit) and applied by one UPDATE ... FROM, in the same transaction."""
    if not rows:
        return
    if isinstance(cursor, _PostgresCursor) and len(rows) >= COPY_FROM_ROWS:
        cursor.update_by_copy(table, key, columns, rows)
        return
    assignments = ", ".join(f"{column} = ?" for column in columns)
    cursor.executemany(f"UPDATE {table} SET {assignments} WHERE {key} = ?", rows)
