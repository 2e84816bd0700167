"""Payments as finance sees them: purpose, amounts, refunds, disputes. The list of
unallocated payments (money that matched no trader or program) reads this."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

from domain.money import Money
from domain.payment import UNALLOCATED, Payment
from projections.journal import instant_text
from projections.store import Cursor, Database, select_by_keys, upsert

_TOPIC_PREFIX = f"{Payment.__module__}:{Payment.__qualname__}."
COLUMNS = (
    "payment_id", "processor", "payment_ref", "purpose", "trader_id", "program_id",
    "currency", "amount_minor", "refunded_minor", "disputes", "account_id", "received_at",
    "updated_at", "charged_back_minor",
)  # fmt: skip


class PaymentBoard:
    name = "payment_board"
    tables: tuple[tuple[str, tuple[str, ...]], ...] = (("payment_board", ("payment_id",)),)

    def handles(self, topic: str) -> bool:
        return topic.startswith(_TOPIC_PREFIX)

    def reset(self, cursor: Cursor) -> None:
        cursor.execute("DELETE FROM payment_board")

    def apply(self, cursor: Cursor, events: list[tuple[int, Any]]) -> None:
        if not events:
            return
        ids = sorted({str(event.originator_id) for _, event in events})
        rows = select_by_keys(cursor, "payment_board", "payment_id", COLUMNS, ids)
        for _, event in events:
            payment_id = str(event.originator_id)
            row = rows.setdefault(payment_id, {column: None for column in COLUMNS})
            _patch(row, event)
        upsert(cursor, "payment_board", COLUMNS, list(rows.values()))


def _patch(row: dict[str, Any], event: Any) -> None:
    row["updated_at"] = instant_text(event.timestamp)
    if isinstance(event, Payment.Opened):
        row.update(
            payment_id=str(event.originator_id),
            processor=event.processor,
            payment_ref=event.payment_ref,
            refunded_minor=row["refunded_minor"] or 0,
            disputes=row["disputes"] or "{}",
            charged_back_minor=row["charged_back_minor"] or 0,
        )
    elif isinstance(event, Payment.Received):
        row.update(
            purpose=event.purpose,
            trader_id=event.trader_id,
            program_id=event.program_id,
            currency=event.currency,
            amount_minor=Money(event.amount, event.currency).minor_units,
            received_at=instant_text(event.timestamp),
        )
    elif isinstance(event, Payment.RefundBooked):
        row["refunded_minor"] = (
            int(row["refunded_minor"] or 0)
            + Money(Decimal(event.amount), event.currency).minor_units
        )
    elif isinstance(event, Payment.DisputeFundsMoved):
        if row["currency"] is None or row["currency"] == event.currency:
            moved = Money(Decimal(event.amount), event.currency).minor_units
            sign = 1 if event.direction == "withdrawn" else -1
            row["charged_back_minor"] = int(row["charged_back_minor"] or 0) + sign * moved
    elif isinstance(event, Payment.DisputeChanged):
        disputes = json.loads(row["disputes"] or "{}")
        disputes[event.dispute_id] = event.status
        row["disputes"] = json.dumps(disputes, sort_keys=True)
    elif isinstance(event, Payment.Identified):
        row.update(purpose="deposit", trader_id=event.trader_id)
    elif isinstance(event, Payment.Allocated):
        row.update(purpose="challenge", trader_id=event.trader_id, program_id=event.program_id)
        row["account_id"] = event.account_id


def _shape(row: dict[str, Any]) -> dict[str, Any]:
    currency = row["currency"]
    amount = row["amount_minor"]
    return {
        "payment_id": row["payment_ref"],
        "processor": row["processor"],
        "purpose": row["purpose"],
        "trader_id": row["trader_id"],
        "program_id": row["program_id"],
        "currency": currency,
        "amount": None
        if amount is None
        else str(Money.from_minor_units(int(amount), currency).amount),
        "refunded": None
        if currency is None
        else str(Money.from_minor_units(int(row["refunded_minor"]), currency).amount),
        "charged_back": None
        if currency is None
        else str(Money.from_minor_units(int(row["charged_back_minor"] or 0), currency).amount),
        "disputes": json.loads(row["disputes"] or "{}"),
        "account_id": row["account_id"],
        "received_at": row["received_at"],
    }


def unallocated(database: Database, *, limit: int = 200) -> list[dict[str, Any]]:
    rows = database.query(
        f"SELECT {', '.join(COLUMNS)} FROM payment_board "
        "WHERE purpose = ? AND amount_minor > refunded_minor "
        "ORDER BY received_at, payment_id LIMIT ?",
        (UNALLOCATED, limit),
    )
    return [_shape(row) for row in rows]
