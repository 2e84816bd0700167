"""The account board: one row per trading account with its state fields.

Each account event carries the account's public numbers after it (`board`), so a page of
events becomes at most one write per account.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from functools import cache
from typing import Any

from eventsourcing.utils import resolve_topic

from domain.account import TradingAccount
from domain.money import Money
from projections.store import Cursor, Database, update_rows, upsert

_TOPIC_PREFIX = f"{TradingAccount.__module__}:{TradingAccount.__qualname__}."
_OPENED_TOPIC = f"{_TOPIC_PREFIX}{TradingAccount.Opened.__name__}"

STATIC_COLUMNS = (
    "account_id", "trader_id", "program_id", "program_version", "stage", "currency",
    "initial_balance", "opened_at",
)  # fmt: skip
DYNAMIC_COLUMNS = (
    "status", "balance", "equity", "high_water_mark", "day_start_balance",
    "daily_loss_floor", "max_loss_floor", "trading_days", "profit", "current_day",
    "breach", "passed_at", "next_account_id", "updated_at", "version",
)  # fmt: skip
AMOUNT_COLUMNS = frozenset(
    {
        "initial_balance", "balance", "equity", "high_water_mark", "day_start_balance",
        "daily_loss_floor", "max_loss_floor", "profit",
    }
)  # fmt: skip
COLUMNS = STATIC_COLUMNS + DYNAMIC_COLUMNS


_AMOUNTS_AND_TIMES = (
    "balance", "equity", "high_water_mark", "day_start_balance", "daily_loss_floor",
    "max_loss_floor", "profit", "passed_at",
)  # fmt: skip
# The library's JSON transcoder's typed values whose stored text is the board's text.
_TEXT_TYPES = frozenset({"decimal_str", "datetime_iso"})


@dataclass(frozen=True)
class BoardUpdate:
    """An account event as the board needs it: the row's changing columns."""

    originator_id: Any
    dynamic: dict[str, Any]


@cache
def _account_event_class(topic: str) -> type | None:
    if not topic.startswith(_TOPIC_PREFIX):
        return None
    try:
        event_class: type = resolve_topic(topic)
    except Exception:
        return None
    return event_class


def _stored_text(value: Any) -> Any:
    """A stored value as the board writes it: plain JSON values as they are, a Decimal
    or datetime as its stored text; anything else raises ValueError (long way)."""
    if not isinstance(value, dict):
        return value
    if value.get("_type_") in _TEXT_TYPES and isinstance(value.get("_data_"), str):
        return value["_data_"]
    raise ValueError("a stored value of another type")


def _stored_instant(value: Any) -> str:
    """A stored datetime's text; anything else raises ValueError (long way)."""
    if not isinstance(value, dict) or value.get("_type_") != "datetime_iso":
        raise ValueError("a datetime was expected")
    return str(_stored_text(value))


def _text(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    return value


def _breach_text(breach: dict[str, Any] | None) -> str | None:
    if breach is None:
        return None
    return json.dumps({key: _text(value) for key, value in breach.items()}, sort_keys=True)


class AccountBoard:
    name = "account_board"
    tables: tuple[tuple[str, tuple[str, ...]], ...] = (("account_board", ("account_id",)),)

    def handles(self, topic: str) -> bool:
        return topic.startswith(_TOPIC_PREFIX)

    def reset(self, cursor: Cursor) -> None:
        cursor.execute("DELETE FROM account_board")

    @staticmethod
    def needs(notifications: Sequence[Any]) -> list[Any]:
        """A row is the account after its newest event, so of a page only each account's
        newest event is needed, and its `Opened` (the row's static columns), in log
        order. The others are never decoded: on a replay that is most of the work."""
        newest: dict[Any, Any] = {}
        opened = []
        for notification in notifications:
            newest[notification.originator_id] = notification
            if notification.topic == _OPENED_TOPIC:
                opened.append(notification)
        chosen = {id(n): n for n in opened}
        chosen.update((id(n), n) for n in newest.values())
        return sorted(chosen.values(), key=lambda notification: notification.id)

    @staticmethod
    def decode(notification: Any) -> BoardUpdate | None:
        """A stored account event (other than `Opened`) read straight into the row's
        columns: its JSON parsed without the library's per-value hooks and domain event
        objects (a third of projecting a page). The stored forms are exactly the board's
        text forms (a Decimal is stored as `str(d)`, a datetime as `isoformat()`). None
        when the event is anything else: an `Opened`, a version its class has upcasters
        for, a compressed or encrypted state, a value of another type; the runner then
        decodes it the long way."""
        if notification.topic == _OPENED_TOPIC:
            return None
        event_class = _account_event_class(notification.topic)
        state = notification.state
        if event_class is None or state[:1] != b"{":
            return None
        try:
            data = json.loads(state)
            if data.get("class_version", 1) != getattr(event_class, "class_version", 1):
                return None
            board = data["board"]
            breach = board["breach"]
            dynamic = {
                "status": board["status"],
                **{column: _stored_text(board[column]) for column in _AMOUNTS_AND_TIMES},
                "trading_days": board["trading_days"],
                "current_day": board["current_day"],
                "breach": None
                if breach is None
                else json.dumps(
                    {key: _stored_text(value) for key, value in breach.items()}, sort_keys=True
                ),
                "next_account_id": board["next_account_id"],
                "updated_at": _stored_instant(data["timestamp"]),
                "version": notification.originator_version,
            }
        except (ValueError, KeyError, TypeError, AttributeError):
            return None
        return BoardUpdate(notification.originator_id, dynamic)

    def apply(self, cursor: Cursor, events: list[tuple[int, Any]]) -> None:
        new_rows: dict[str, dict[str, Any]] = {}
        updates: dict[str, dict[str, Any]] = {}
        for _, event in events:
            account_id = str(event.originator_id)
            if isinstance(event, BoardUpdate):
                if account_id in new_rows:
                    new_rows[account_id].update(event.dynamic)
                else:
                    updates[account_id] = event.dynamic
                continue
            dynamic = self._dynamic(event)
            if isinstance(event, TradingAccount.Opened):
                program = event.program
                new_rows[account_id] = {
                    "account_id": account_id,
                    "trader_id": event.trader_id,
                    "program_id": program["program_id"],
                    "program_version": event.program_version,
                    "stage": event.stage,
                    "currency": program["currency"],
                    "initial_balance": program["initial_balance"],
                    "opened_at": event.timestamp.isoformat(),
                    **dynamic,
                }
            elif account_id in new_rows:
                new_rows[account_id].update(dynamic)
            else:
                updates[account_id] = dynamic
        upsert(cursor, "account_board", COLUMNS, list(new_rows.values()))
        update_rows(
            cursor,
            "account_board",
            "account_id",
            DYNAMIC_COLUMNS,
            [
                [row[column] for column in DYNAMIC_COLUMNS] + [account_id]
                for account_id, row in updates.items()
            ],
        )

    @staticmethod
    def _dynamic(event: Any) -> dict[str, Any]:
        board = event.board
        return {
            "status": board["status"],
            "balance": _text(board["balance"]),
            "equity": _text(board["equity"]),
            "high_water_mark": _text(board["high_water_mark"]),
            "day_start_balance": _text(board["day_start_balance"]),
            "daily_loss_floor": _text(board["daily_loss_floor"]),
            "max_loss_floor": _text(board["max_loss_floor"]),
            "trading_days": board["trading_days"],
            "profit": _text(board["profit"]),
            "current_day": board["current_day"],
            "breach": _breach_text(board["breach"]),
            "passed_at": _text(board["passed_at"]),
            "next_account_id": board["next_account_id"],
            "updated_at": event.timestamp.isoformat(),
            "version": event.originator_version,
        }


def row_to_state(row: dict[str, Any]) -> dict[str, Any]:
    """A board row as the API's account state (amounts as exact decimal strings)."""
    currency = row["currency"]
    state = {column: row[column] for column in COLUMNS}
    for column in AMOUNT_COLUMNS:
        state[column] = str(Money(Decimal(str(row[column])), currency).amount)
    state["breach"] = json.loads(row["breach"]) if row["breach"] else None
    return state


def trader_accounts(database: Database, trader_id: str) -> list[dict[str, Any]]:
    """Every account of the trader, oldest first (DESIGN: the trader's accounts; until
    2026-12-07 the first 200 only, silently)."""
    rows = database.query(
        f"SELECT {', '.join(COLUMNS)} FROM account_board WHERE trader_id = ? "
        "ORDER BY opened_at, account_id",
        (trader_id,),
    )
    return [row_to_state(row) for row in rows]


def all_rows(database: Database) -> list[dict[str, Any]]:
    rows = database.query(f"SELECT {', '.join(COLUMNS)} FROM account_board ORDER BY account_id")
    return [row_to_state(row) for row in rows]
