"""Row-by-row comparison of a projection's tables in two databases (live and a rebuild)."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from projections.runner import Projection
from projections.store import Cursor, Database

MAX_DIFFERENCES = 100


def _normal(value: Any) -> str | None:
    """One text form for a value whatever the backend stored it as (TEXT or NUMERIC)."""
    if value is None:
        return None
    if isinstance(value, bytes | memoryview):
        return bytes(value).hex()
    if isinstance(value, str):
        try:
            return str(Decimal(value)) if value[:1].isdigit() or value[:1] == "-" else value
        except InvalidOperation:
            return value
    return str(value)


Rows = dict[tuple[Any, ...], dict[str, Any]]


def _keyed(rows: list[dict[str, Any]], keys: tuple[str, ...]) -> Rows:
    return {
        tuple(_normal(row[key]) for key in keys): {
            column: _normal(value) for column, value in row.items()
        }
        for row in rows
    }


def _rows(database: Database, table: str, keys: tuple[str, ...]) -> Rows:
    return _keyed(database.query(f"SELECT * FROM {table}"), keys)


@dataclass(frozen=True)
class LiveView:
    """A projection's tables as one commit left them, and the log position it had
    reached in that commit: exactly what a replay of the log up to `position` must give."""

    position: int
    tables: dict[str, Rows]


def read_live(projection: Projection, database: Database) -> LiveView:
    """The projection's tracked position and all its rows, read in one snapshot.

    A runner writes a page's rows and the page's last position in one transaction, so in
    one snapshot they agree. Read apart, a page committed in between shows rows (new ones,
    or ones a later event updated) that a replay to the position read cannot have.
    PostgreSQL: a read-only REPEATABLE READ transaction (its first statement sets it);
    SQLite: one read transaction, a snapshot in WAL mode."""
    with database.transaction(write=False) as cursor:
        if database.dialect == "postgres":
            cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        return _read_live(projection, cursor)


def _read_live(projection: Projection, cursor: Cursor) -> LiveView:
    tracked = cursor.execute(
        "SELECT position FROM projection_tracking WHERE projection = ?", (projection.name,)
    )
    position = int(tracked[0]["position"]) if tracked else 0
    tables = {
        table: _keyed(cursor.execute(f"SELECT * FROM {table}"), keys)
        for table, keys in projection.tables
    }
    return LiveView(position, tables)


def compare(
    projection: Projection, live: Database | LiveView, rebuilt: Database
) -> list[dict[str, Any]]:
    """Every difference (up to a bound): rows missing, extra, or different in the live one.
    `live`: a database read now, or a `LiveView` read earlier (see `read_live`)."""
    differences: list[dict[str, Any]] = []
    for table, keys in projection.tables:
        live_rows = live.tables[table] if isinstance(live, LiveView) else _rows(live, table, keys)
        fresh_rows = _rows(rebuilt, table, keys)
        for key in sorted(live_rows.keys() | fresh_rows.keys(), key=str):
            if len(differences) >= MAX_DIFFERENCES:
                return differences
            live_row, fresh_row = live_rows.get(key), fresh_rows.get(key)
            if fresh_row is None:
                differences.append({"table": table, "key": key, "problem": "extra_in_live"})
            elif live_row is None:
                differences.append({"table": table, "key": key, "problem": "missing_in_live"})
            else:
                changed = {
                    column: {"live": live_row.get(column), "rebuilt": value}
                    for column, value in fresh_row.items()
                    if live_row.get(column) != value
                }
                if changed:
                    differences.append(
                        {"table": table, "key": key, "problem": "different", "columns": changed}
                    )
    return differences
