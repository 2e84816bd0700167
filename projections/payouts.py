"""Payouts as finance sees them, and the reports over them.

A payout counts in a period by its approval time: that is when its money moved and its
journal entry was booked, so a report's totals equal the journal's movements on
`expenses:profit_share` and `liabilities:trader_payable:*` for the same period.
"""

from __future__ import annotations

import csv
import io
import re
from collections import defaultdict
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from domain.errors import InvalidInput
from domain.money import Money, minor_unit_exponent
from domain.payout import Payout
from projections.journal import TIME_FORMAT, instant_text
from projections.store import Cursor, Database, select_by_keys, upsert

_TOPIC_PREFIX = f"{Payout.__module__}:{Payout.__qualname__}."
COLUMNS = (
    "payout_id", "account_id", "trader_id", "program_id", "status", "currency",
    "profit_minor", "profit_split_pct", "trader_share_minor", "firm_share_minor",
    "fee_refund_minor", "fee_refund_currency", "requested_by", "requested_at", "approved_by",
    "approved_at", "rejected_by", "rejection_reason", "paid_reference", "paid_at", "version",
)  # fmt: skip
REPORT_FIELDS = (
    "payout_id", "account_id", "trader_id", "program_id", "status", "currency", "profit",
    "profit_split_pct", "trader_share", "firm_share", "fee_refund", "fee_refund_currency",
    "total", "requested_by", "requested_at", "approved_by", "approved_at", "paid_reference",
    "paid_at",
)  # fmt: skip


class PayoutBoard:
    name = "payout_board"
    tables: tuple[tuple[str, tuple[str, ...]], ...] = (("payout_board", ("payout_id",)),)

    def handles(self, topic: str) -> bool:
        return topic.startswith(_TOPIC_PREFIX)

    def reset(self, cursor: Cursor) -> None:
        cursor.execute("DELETE FROM payout_board")

    def apply(self, cursor: Cursor, events: list[tuple[int, Any]]) -> None:
        if not events:
            return
        ids = sorted({str(event.originator_id) for _, event in events})
        rows = select_by_keys(cursor, "payout_board", "payout_id", COLUMNS, ids)
        for _, event in events:
            _patch(rows, event)
        upsert(cursor, "payout_board", COLUMNS, list(rows.values()))


def _minor(amount: Any, currency: str) -> int:
    return Money(Decimal(amount), currency).minor_units


def _patch(rows: dict[str, dict[str, Any]], event: Any) -> None:
    payout_id = str(event.originator_id)
    if isinstance(event, Payout.Requested):
        split = event.breakdown
        currency = split["currency"]
        rows[payout_id] = {
            "payout_id": payout_id,
            "account_id": event.account_id,
            "trader_id": event.trader_id,
            "program_id": event.program_id,
            "status": "requested",
            "currency": currency,
            "profit_minor": _minor(split["profit"], currency),
            "profit_split_pct": str(split["profit_split_pct"]),
            "trader_share_minor": _minor(split["trader_share"], currency),
            "firm_share_minor": _minor(split["firm_share"], currency),
            "fee_refund_minor": _minor(split["fee_refund"], split["fee_refund_currency"]),
            "fee_refund_currency": split["fee_refund_currency"],
            "requested_by": event.requested_by,
            "requested_at": instant_text(event.requested_at),
            "approved_by": None,
            "approved_at": None,
            "rejected_by": None,
            "rejection_reason": None,
            "paid_reference": None,
            "paid_at": None,
            "version": event.originator_version,
        }
        return
    row = rows[payout_id]
    row["version"] = event.originator_version
    if isinstance(event, Payout.Approved):
        row.update(status="approved", approved_by=event.approved_by)
        row["approved_at"] = instant_text(event.approved_at)
    elif isinstance(event, Payout.Rejected):
        row.update(status="rejected", rejected_by=event.rejected_by)
        row["rejection_reason"] = event.reason
    elif isinstance(event, Payout.Paid):
        row.update(status="paid", paid_reference=event.reference)
        row["paid_at"] = instant_text(event.paid_at)


def _money(minor: Any, currency: str) -> Money:
    return Money.from_minor_units(int(minor), currency)


def _text(minor: Any, currency: str) -> str:
    """Minor units as a decimal string at the currency's scale (Money's text, without
    building a Money or a Decimal: a report shapes hundreds of thousands of them)."""
    return minor_text(int(minor), minor_unit_exponent(currency))


def minor_text(minor: int, exponent: int) -> str:
    """`str(Decimal(minor).scaleb(-exponent))` for an exponent of 0 to 3, with integer
    operations only: 12345, 2 -> "123.45"; -5, 2 -> "-0.05"; 7, 0 -> "7"."""
    if exponent == 0:
        return str(minor)
    digits = str(-minor if minor < 0 else minor).rjust(exponent + 1, "0")
    sign = "-" if minor < 0 else ""
    return f"{sign}{digits[:-exponent]}.{digits[-exponent:]}"


def _instant(text: str | None) -> str | None:
    """A stored instant (fixed-width UTC text, for ordering) as the API writes instants
    everywhere else (`datetime.isoformat`), so a payout's times read the same in its own
    reply, in the list and in the reports."""
    if text is None:
        return None
    return datetime.strptime(text, TIME_FORMAT).replace(tzinfo=UTC).isoformat()


def shape(row: dict[str, Any]) -> dict[str, Any]:
    """A payout row with the payout fields of DESIGN.md (amounts as decimal strings)."""
    currency = row["currency"]
    fee_currency = row["fee_refund_currency"]
    trader_minor = int(row["trader_share_minor"])
    fee_minor = int(row["fee_refund_minor"])
    totals_minor = {currency: trader_minor}
    if fee_minor:
        totals_minor[fee_currency] = totals_minor.get(fee_currency, 0) + fee_minor
    totals = {c: _text(minor, c) for c, minor in totals_minor.items()}
    return {
        "payout_id": row["payout_id"],
        "account_id": row["account_id"],
        "trader_id": row["trader_id"],
        "program_id": row["program_id"],
        "status": row["status"],
        "currency": currency,
        "profit": _text(row["profit_minor"], currency),
        "profit_split_pct": row["profit_split_pct"],
        "trader_share": _text(trader_minor, currency),
        "firm_share": _text(row["firm_share_minor"], currency),
        "fee_refund": _text(fee_minor, fee_currency),
        "fee_refund_currency": fee_currency,
        "total": totals[currency],
        "totals": [{"currency": c, "amount": amount} for c, amount in sorted(totals.items())],
        "requested_by": row["requested_by"],
        "requested_at": _instant(row["requested_at"]),
        "approved_by": row["approved_by"],
        "approved_at": _instant(row["approved_at"]),
        "rejected_by": row["rejected_by"],
        "rejection_reason": row["rejection_reason"],
        "paid_reference": row["paid_reference"],
        "paid_at": _instant(row["paid_at"]),
    }


def payouts_cursor(row: dict[str, Any]) -> str:
    """The `after` of the page following `row` (opaque: its request time in the stored,
    fixed-width UTC form, which needs no URL encoding, and its id)."""
    requested = datetime.fromisoformat(row["requested_at"])
    return f"{instant_text(requested)}|{row['payout_id']}"


def list_payouts(
    database: Database,
    *,
    status: str | None,
    requested_from: datetime | None,
    requested_to: datetime | None,
    after: str | None,
    limit: int,
) -> list[dict[str, Any]]:
    """Payouts by request time, filtered, paged by the last (requested_at, payout_id)."""
    clauses: list[str] = []
    params: list[Any] = []
    if status:
        clauses.append("status = ?")
        params.append(status)
    if requested_from:
        clauses.append("requested_at >= ?")
        params.append(instant_text(requested_from))
    if requested_to:
        clauses.append("requested_at < ?")
        params.append(instant_text(requested_to))
    if after:
        at, _, payout_id = after.partition("|")
        try:  # the stored form, as payouts_cursor writes it (it has no '+' to lose)
            stored = instant_text(datetime.strptime(at, TIME_FORMAT).replace(tzinfo=UTC))
        except ValueError:
            raise InvalidInput(
                "after must be the next_after of a previous page", code="invalid_cursor"
            ) from None
        clauses.append("(requested_at > ? OR (requested_at = ? AND payout_id > ?))")
        params.extend([stored, stored, payout_id])
    where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
    rows = database.query(
        f"SELECT {', '.join(COLUMNS)} FROM payout_board {where} "
        "ORDER BY requested_at, payout_id LIMIT ?",
        [*params, limit],
    )
    return [shape(row) for row in rows]


def _approved_in(
    database: Database, start: datetime | None, end: datetime | None, as_of: datetime | None
) -> list[dict[str, Any]]:
    clauses = ["approved_at IS NOT NULL"]
    params: list[Any] = []
    if as_of:
        clauses.append("approved_at <= ?")
        params.append(instant_text(as_of))
    if start:
        clauses.append("approved_at >= ?")
        params.append(instant_text(start))
    if end:
        clauses.append("approved_at < ?")
        params.append(instant_text(end))
    rows = database.query(
        f"SELECT {', '.join(COLUMNS)} FROM payout_board WHERE {' AND '.join(clauses)} "
        "ORDER BY approved_at, payout_id",
        params,
    )
    if as_of is None:
        return rows
    # As the ledger knew it then: a payout paid later was still only approved.
    cutoff = instant_text(as_of)
    for row in rows:
        if row["paid_at"] is not None and row["paid_at"] > cutoff:
            row.update(status="approved", paid_at=None, paid_reference=None)
    return rows


def payout_report(
    database: Database,
    start: datetime | None,
    end: datetime | None,
    as_of: datetime | None = None,
) -> dict[str, Any]:
    """Payouts approved in [start, end), with totals per currency; with `as_of`, as the
    ledger knew them at that instant."""
    # Exact sums per currency in integer minor units, each currency's own; Money (with
    # its checks) only for the totals.
    sums: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    counts: dict[str, int] = defaultdict(int)
    rows = []
    for raw in _approved_in(database, start, end, as_of):
        currency = raw["currency"]
        fee_currency = raw["fee_refund_currency"]
        trader_minor = int(raw["trader_share_minor"])
        fee_minor = int(raw["fee_refund_minor"])
        bucket = sums[currency]
        counts[currency] += 1
        bucket["profit"] += int(raw["profit_minor"])
        bucket["trader_share"] += trader_minor
        bucket["firm_share"] += int(raw["firm_share_minor"])
        bucket["total"] += trader_minor
        if fee_minor:  # a fee currency nothing was refunded in gets no totals line
            fees = sums[fee_currency]
            fees["fee_refund"] += fee_minor
            fees["total"] += fee_minor
        rows.append(shape(raw))
    fields = ("profit", "trader_share", "firm_share", "fee_refund", "total")
    totals = [
        {"currency": currency, "count": counts[currency]}
        | {field: str(_money(sums[currency][field], currency).amount) for field in fields}
        for currency in sorted(sums)
    ]
    return {"rows": rows, "totals": totals}


# A cell a spreadsheet would read as a formula (OWASP "CSV injection"): text from outside
# (a trader id from Stripe metadata, a token's sub, a bank reference) can start so.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_NUMBER = re.compile(r"[+-]?[0-9]+(\.[0-9]+)?\Z")


def _cell(value: Any) -> Any:
    """`value` as a CSV cell a spreadsheet shows as text: one starting like a formula gets
    a leading apostrophe, numbers ("-5.00") excepted."""
    if not isinstance(value, str) or not value.startswith(_FORMULA_START):
        return value
    if _NUMBER.match(value):
        return value
    return "'" + value


def report_csv(report: dict[str, Any]) -> str:
    """CSV a spreadsheet opens cleanly: a header, one row a payout, then `total` lines.
    Text that would start a formula is written with a leading apostrophe (`_cell`)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(REPORT_FIELDS)
    for row in report["rows"]:
        writer.writerow(
            [_cell(row[field]) if row[field] is not None else "" for field in REPORT_FIELDS]
        )
    for total in report["totals"]:
        writer.writerow(
            [
                "total",
                f"count={total['count']}",
                "",
                "",
                "",
                total["currency"],
                total["profit"],
                "",
                total["trader_share"],
                total["firm_share"],
                total["fee_refund"],
                total["currency"],
                total["total"],
            ]
            + [""] * (len(REPORT_FIELDS) - 13)
        )
    return out.getvalue()


def profit_splits(
    database: Database,
    start: datetime | None,
    end: datetime | None,
    as_of: datetime | None = None,
) -> list[dict[str, Any]]:
    """Per trader and program: approved payouts, profit, and each side's share."""
    groups: dict[tuple[str, str, str], dict[str, Any]] = {}
    for row in _approved_in(database, start, end, as_of):
        key = (row["trader_id"], row["program_id"], row["currency"])
        group = groups.setdefault(
            key,
            {"payouts": 0, "profit": 0, "trader_share": 0, "firm_share": 0},
        )
        group["payouts"] += 1
        group["profit"] += int(row["profit_minor"])
        group["trader_share"] += int(row["trader_share_minor"])
        group["firm_share"] += int(row["firm_share_minor"])
    return [
        {
            "trader_id": trader_id,
            "program_id": program_id,
            "currency": currency,
            "payouts": group["payouts"],
            "profit": str(_money(group["profit"], currency).amount),
            "trader_share": str(_money(group["trader_share"], currency).amount),
            "firm_share": str(_money(group["firm_share"], currency).amount),
        }
        for (trader_id, program_id, currency), group in sorted(groups.items())
    ]


PROFIT_SPLIT_FIELDS = (
    "trader_id", "program_id", "currency", "payouts", "profit", "trader_share", "firm_share",
)  # fmt: skip


def profit_splits_csv(rows: list[dict[str, Any]]) -> str:
    """The profit-split report as CSV: a header and one row per trader, program and
    currency (no total lines: each row is a total already)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(PROFIT_SPLIT_FIELDS)
    for row in rows:
        writer.writerow([_cell(row[field]) for field in PROFIT_SPLIT_FIELDS])
    return out.getvalue()
