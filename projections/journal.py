"""The journal: every money-moving event's entry, as lines in integer minor units.

Events that move money carry their entry (`journal` lines, balanced by the domain before
they were saved); this projection writes them with their header, and the store refuses an
unbalanced entry again. The trial balance and the entries listing are queries over it.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime
from decimal import Decimal
from functools import cache
from typing import Any

from eventsourcing.utils import resolve_topic

from domain.money import Money
from projections.store import Cursor, Database

TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"
_MAX_POSITION = 2**63 - 1  # the largest bigint / SQLite INTEGER


def instant_text(moment: datetime) -> str:
    """A fixed-width UTC text form, so instants compare correctly as strings."""
    return moment.astimezone(UTC).strftime(TIME_FORMAT)


@cache
def _books(topic: str) -> bool:
    try:
        event_class = resolve_topic(topic)
    except Exception:
        return False
    annotations: dict[str, Any] = {}
    for klass in reversed(event_class.__mro__):
        annotations.update(getattr(klass, "__annotations__", {}))
    return "journal" in annotations


class Journal:
    name = "journal"
    tables: tuple[tuple[str, tuple[str, ...]], ...] = (
        ("journal_entries", ("entry_id",)),
        ("journal_lines", ("entry_id", "line_no")),
    )

    def handles(self, topic: str) -> bool:
        return _books(topic)

    def reset(self, cursor: Cursor) -> None:
        cursor.execute("DELETE FROM journal_entries")
        cursor.execute("DELETE FROM journal_lines")

    def apply(self, cursor: Cursor, events: list[tuple[int, Any]]) -> None:
        lines: list[tuple[Any, ...]] = []
        headers: list[tuple[Any, ...]] = []
        for position, event in events:
            if not event.journal:
                continue
            entry_id = f"{event.originator_id}:{event.originator_version}"
            for number, line in enumerate(event.journal, start=1):
                currency = line["currency"]
                lines.append(
                    (
                        entry_id,
                        number,
                        line["account"],
                        currency,
                        Money(Decimal(line["debit"]), currency).minor_units,
                        Money(Decimal(line["credit"]), currency).minor_units,
                    )
                )
            headers.append(
                (
                    entry_id,
                    position,
                    instant_text(event.timestamp),
                    type(event).__qualname__,
                    str(event.originator_id),
                    event.originator_version,
                )
            )
        if not headers:
            return
        cursor.executemany(
            "INSERT INTO journal_lines (entry_id, line_no, account, currency, debit_minor, "
            "credit_minor) VALUES (?, ?, ?, ?, ?, ?)",
            lines,
        )
        cursor.executemany(
            "INSERT INTO journal_entries (entry_id, position, booked_at, event_type, stream_id, "
            "stream_version) VALUES (?, ?, ?, ?, ?, ?)",
            headers,
        )


def _money(minor: int, currency: str) -> str:
    return str(Money.from_minor_units(int(minor), currency).amount)


# SQLite's SUM of INTEGERs fails past 2^63 ("integer overflow"; PostgreSQL's SUM of bigint
# is numeric): an account's lines are summed as two parts, the amount's billions and the
# rest (integer division truncates alike on both stores), each far from
# overflowing, and joined exactly in Python.
_SPLIT = 10**9


def _split_sum(column: str, name: str) -> str:
    high = f"{column} / {_SPLIT}"
    return f"SUM({high}) AS {name}_high, SUM({column} - {high} * {_SPLIT}) AS {name}_low"


def _joined_sum(row: dict[str, Any], name: str) -> int:
    return int(row[f"{name}_high"]) * _SPLIT + int(row[f"{name}_low"])


def trial_balance(
    database: Database, as_of: datetime | None = None, *, until_position: int | None = None
) -> dict[str, Any]:
    """The balances of every account code: of the entries booked by `as_of`, and/or of
    the events up to log position `until_position` (what was recorded when a request
    arrived: entries committed while it waited are not in the balance it labels with
    its arrival)."""
    clauses, params = [], list[Any]()
    if as_of is not None:
        clauses.append("e.booked_at <= ?")
        params.append(instant_text(as_of))
    if until_position is not None:
        clauses.append("e.position <= ?")
        params.append(until_position)
    where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
    rows = database.query(
        f"SELECT l.account, l.currency, {_split_sum('l.debit_minor', 'debit')}, "
        f"{_split_sum('l.credit_minor', 'credit')} "
        "FROM journal_lines l JOIN journal_entries e ON e.entry_id = l.entry_id "
        f"{where} GROUP BY l.account, l.currency ORDER BY l.account, l.currency",
        params,
    )
    totals: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    shaped = []
    for row in rows:
        debit, credit = _joined_sum(row, "debit"), _joined_sum(row, "credit")
        currency = row["currency"]
        totals[currency][0] += debit
        totals[currency][1] += credit
        shaped.append(
            {
                "account": row["account"],
                "currency": currency,
                "debit": _money(debit, currency),
                "credit": _money(credit, currency),
                "balance": _money(debit - credit, currency),
            }
        )
    return {
        "rows": shaped,
        "totals": [
            {"currency": currency, "debit": _money(d, currency), "credit": _money(c, currency)}
            for currency, (d, c) in sorted(totals.items())
        ],
    }


# Codes followed by a trader id (`liabilities:trader_wallet:{trader_id}`...).
_PER_TRADER = tuple(
    f"{parent}:" for parent in ("liabilities:trader_wallet", "liabilities:trader_payable")
)


def entry_lines(
    database: Database, *, account: str | None, after: str | None, limit: int
) -> list[dict[str, Any]]:
    """Journal lines in log order, optionally of one account code and the codes under it
    ('liabilities:trader_wallet' and 'liabilities:trader_wallet:' both give every
    trader's wallet; 'assets:bank' gives that account). Paged by the opaque `after`
    cursor (position and line number of the last line seen)."""
    clauses: list[str] = []
    params: list[Any] = []
    if account:
        code = account.rstrip(":")
        if code.startswith(_PER_TRADER) and not account.endswith(":"):
            # A trader's own code is a leaf: a trader id may hold ':' ("mt5:1001"), and
            # 'liabilities:trader_wallet:T1' must not reach 'T1:x's lines. Its children
            # only when asked for with a trailing ':'.
            clauses.append("l.account = ?")
            params.append(code)
        else:
            under = code.replace("%", r"\%").replace("_", r"\_") + ":%"
            # LIKE narrows (it can use an index) but ignores ASCII case on SQLite, not on
            # PostgreSQL: the exact prefix decides, so both stores answer alike.
            clauses.append(
                "(l.account = ? OR (l.account LIKE ? ESCAPE '\\' AND substr(l.account, 1, ?) = ?))"
            )
            params.extend([code, under, len(code) + 1, f"{code}:"])
    if after:
        position, _, line_no = after.partition(".")
        # Past the largest position a store can hold is past the end: an empty page, not
        # an integer the database cannot take.
        at, line = min(int(position), _MAX_POSITION), min(int(line_no or 0), _MAX_POSITION)
        clauses.append("(e.position > ? OR (e.position = ? AND l.line_no > ?))")
        params.extend([at, at, line])
    where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
    rows = database.query(
        "SELECT e.entry_id, e.position, e.booked_at, e.event_type, e.stream_id, "
        "l.line_no, l.account, l.currency, l.debit_minor, l.credit_minor "
        "FROM journal_lines l JOIN journal_entries e ON e.entry_id = l.entry_id "
        f"{where} ORDER BY e.position, l.line_no LIMIT ?",
        [*params, limit],
    )
    return [
        {
            "entry_id": row["entry_id"],
            "position": int(row["position"]),
            "line": int(row["line_no"]),
            "booked_at": row["booked_at"],
            "event_type": row["event_type"],
            "account": row["account"],
            "currency": row["currency"],
            "debit": _money(row["debit_minor"], row["currency"]),
            "credit": _money(row["credit_minor"], row["currency"]),
            "cursor": f"{int(row['position'])}.{int(row['line_no'])}",
        }
        for row in rows
    ]
