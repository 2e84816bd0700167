"""Row-by-row comparison of a projection's tables in two databases (live and a rebuild)."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

from projections.runner import Projection
from projections.store import Database

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


def _rows(database: Database, table: str, keys: tuple[str, ...]) -> dict[tuple[Any, ...], Any]:
    rows = database.query(f"SELECT * FROM {table}")
    return {
        tuple(_normal(row[key]) for key in keys): {
            column: _normal(value) for column, value in row.items()
        }
        for row in rows
    }


def compare(projection: Projection, live: Database, rebuilt: Database) -> list[dict[str, Any]]:
    """Every difference (up to a bound): rows missing, extra, or different in the live one."""
    differences: list[dict[str, Any]] = []
    for table, keys in projection.tables:
        live_rows = _rows(live, table, keys)
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
