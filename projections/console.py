"""Read queries of the staff console (`/console`) over the board projections.

The risk board ranks active accounts by their headroom to the nearest floor in SQL, so a
firm with thousands of accounts is ranked by the database, not by loading aggregates.
Amounts are exact on both backends: PostgreSQL stores them as NUMERIC; SQLite stores them
as decimal text quantised to the currency's minor unit, so removing the decimal point
gives the exact integer number of minor units (every amount of one account has the same
scale), and the ranking is integer arithmetic. Values shown are computed again in Python
with Decimal from the stored text.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from domain.money import Money
from projections.board import COLUMNS as BOARD_COLUMNS
from projections.board import row_to_state
from projections.payouts import COLUMNS as PAYOUT_COLUMNS
from projections.payouts import shape
from projections.store import Database

# Ranking precision of the SQLite headroom ratio: millionths of the initial balance.
_RATIO_SCALE = 1_000_000
_HUNDRED = Decimal(100)
_PERCENT_PLACES = Decimal("0.01")
MAX_LIMIT = 500


def _minor(column: str) -> str:
    """SQLite: a quantised decimal text column as its exact integer of minor units."""
    return f"CAST(REPLACE({column}, '.', '') AS INTEGER)"


def _headroom_sql(dialect: str) -> tuple[str, str]:
    """(the headroom expression, the ranking expression) for the dialect."""
    if dialect == "postgres":
        headroom = "(balance - GREATEST(daily_loss_floor, max_loss_floor))"
        return headroom, f"{headroom} / initial_balance"
    floors = f"MAX({_minor('daily_loss_floor')}, {_minor('max_loss_floor')})"
    headroom = f"({_minor('balance')} - {floors})"
    return headroom, f"{headroom} * {_RATIO_SCALE} / {_minor('initial_balance')}"


def _instant_sql(dialect: str, expression: str) -> str:
    """An ISO 8601 text with any offset as a comparable instant."""
    if dialect == "postgres":
        return f"CAST({expression} AS timestamptz)"
    return f"julianday({expression})"


def _param_instant_sql(dialect: str) -> str:
    return "CAST(? AS timestamptz)" if dialect == "postgres" else "julianday(?)"


def _breach_at_sql(dialect: str) -> str:
    if dialect == "postgres":
        return _instant_sql(dialect, "CAST(breach AS jsonb) ->> 'at'")
    return _instant_sql(dialect, "json_extract(breach, '$.at')")


def _bounded(limit: int) -> int:
    if not 1 <= limit <= MAX_LIMIT:
        raise ValueError(f"limit must be between 1 and {MAX_LIMIT}, got {limit}")
    return limit


def headroom_of(state: dict[str, Any]) -> dict[str, Any]:
    """Headroom to the nearest floor (the higher one), exactly, from an account state."""
    currency = state["currency"]
    balance = Decimal(state["balance"])
    daily = Decimal(state["daily_loss_floor"])
    maximum = Decimal(state["max_loss_floor"])
    initial = Decimal(state["initial_balance"])
    # On equal floors the breach would name max_loss (DESIGN.md), so that one is nearest.
    nearest = "max_daily_loss" if daily > maximum else "max_loss"
    headroom = balance - max(daily, maximum)
    percent = (headroom * _HUNDRED / initial).quantize(_PERCENT_PLACES) if initial else None
    return {
        "headroom": str(Money(headroom, currency).amount),
        "headroom_pct": None if percent is None else str(percent),
        "nearest_floor": nearest,
    }


def risk_board(database: Database, *, limit: int, offset: int) -> tuple[list[dict[str, Any]], int]:
    """Active accounts, least headroom (as a share of the initial balance) first; and how
    many active accounts there are."""
    _, ranking = _headroom_sql(database.dialect)
    rows = database.query(
        f"SELECT {', '.join(BOARD_COLUMNS)} FROM account_board WHERE status = 'active' "
        f"ORDER BY {ranking}, account_id LIMIT ? OFFSET ?",
        (_bounded(limit), max(0, offset)),
    )
    total = database.query("SELECT COUNT(*) AS n FROM account_board WHERE status = 'active'")
    ranked = []
    for row in rows:
        state = row_to_state(row)
        ranked.append({**state, **headroom_of(state)})
    return ranked, int(total[0]["n"])


def breaches_between(
    database: Database, start: datetime, end: datetime, *, limit: int = 200
) -> list[dict[str, Any]]:
    """Accounts whose breach happened in [start, end), newest first."""
    at = _breach_at_sql(database.dialect)
    bound = _param_instant_sql(database.dialect)
    rows = database.query(
        f"SELECT {', '.join(BOARD_COLUMNS)} FROM account_board "
        f"WHERE breach IS NOT NULL AND {at} >= {bound} AND {at} < {bound} "
        f"ORDER BY {at} DESC, account_id LIMIT ?",
        (_iso(start), _iso(end), _bounded(limit)),
    )
    return [row_to_state(row) for row in rows]


def recent_passes(database: Database, *, limit: int = 20) -> list[dict[str, Any]]:
    """Accounts that passed their phase, most recent pass first."""
    at = _instant_sql(database.dialect, "passed_at")
    rows = database.query(
        f"SELECT {', '.join(BOARD_COLUMNS)} FROM account_board WHERE passed_at IS NOT NULL "
        f"ORDER BY {at} DESC, account_id LIMIT ?",
        (_bounded(limit),),
    )
    return [row_to_state(row) for row in rows]


def payout_candidates(database: Database, *, limit: int = 100) -> list[dict[str, Any]]:
    """Funded, active accounts with a profit: the ones a payout eligibility check may pass
    (the check itself needs the aggregate: timing, consistency, a pending payout)."""
    profit = "profit" if database.dialect == "postgres" else _minor("profit")
    rows = database.query(
        f"SELECT {', '.join(BOARD_COLUMNS)} FROM account_board "
        f"WHERE stage = 'funded' AND status = 'active' AND {profit} > 0 "
        "ORDER BY opened_at, account_id LIMIT ?",
        (_bounded(limit),),
    )
    return [row_to_state(row) for row in rows]


def recent_paid(database: Database, *, limit: int = 20) -> list[dict[str, Any]]:
    """Paid payouts, most recently paid first (`paid_at` is fixed-width UTC text)."""
    rows = database.query(
        f"SELECT {', '.join(PAYOUT_COLUMNS)} FROM payout_board WHERE status = 'paid' "
        "ORDER BY paid_at DESC, payout_id LIMIT ?",
        (_bounded(limit),),
    )
    return [shape(row) for row in rows]


def find_accounts(database: Database, query: str, *, limit: int = 50) -> list[dict[str, Any]]:
    """Accounts whose id starts with `query` or whose trader id is `query` (or starts with
    it); without a query, the most recently updated accounts."""
    columns = ", ".join(BOARD_COLUMNS)
    text = query.strip()
    if not text:
        rows = database.query(
            f"SELECT {columns} FROM account_board ORDER BY updated_at DESC, account_id LIMIT ?",
            (_bounded(limit),),
        )
        return [row_to_state(row) for row in rows]
    prefix = _like_prefix(text)
    rows = database.query(
        f"SELECT {columns} FROM account_board "
        "WHERE account_id LIKE ? ESCAPE '\\' OR trader_id LIKE ? ESCAPE '\\' "
        "ORDER BY trader_id, opened_at, account_id LIMIT ?",
        (prefix, prefix, _bounded(limit)),
    )
    return [row_to_state(row) for row in rows]


def _like_prefix(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"{escaped}%"


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat()
