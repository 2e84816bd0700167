"""Shapes replies: aggregates and events to JSON-ready dicts (amounts as decimal strings)."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

from domain.account import TradingAccount
from domain.aggregates import Program, Trader
from domain.payout import Payout


def plain(value: Any) -> Any:
    """JSON-ready: Decimal and datetime become strings, never floats."""
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, dict):
        return {str(key): plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [plain(item) for item in value]
    return value


def account_state(account: TradingAccount) -> dict[str, Any]:
    state = {
        "account_id": str(account.id),
        "trader_id": account.trader_id,
        "program_id": account.program_id,
        "program_version": account.program_version,
        "stage": account.stage,
        "currency": account.currency,
        "initial_balance": account.state.initial_balance.amount,
        **account.board(),
        "opened_at": account.created_on,
        "version": account.version,
    }
    shaped: dict[str, Any] = plain(state)
    return shaped


def program_view(program: Program) -> dict[str, Any]:
    return {**program.definition.to_dict(), "version": program.version}


def event_view(event: Any, chain_link: dict[str, Any] | None = None) -> dict[str, Any]:
    data = {
        key: value
        for key, value in event.__dict__.items()
        if key not in ("originator_id", "originator_version", "timestamp", "originator_topic")
    }
    shaped: dict[str, Any] = plain(
        {
            "version": event.originator_version,
            "type": type(event).__name__,
            "recorded_at": event.timestamp,
            "position": None if chain_link is None else chain_link["position"],
            "hash": None if chain_link is None else chain_link["hash"],
            "actor": _actor(data),
            "data": data,
        }
    )
    return shaped


def trader_view(trader: Trader) -> dict[str, Any]:
    shaped: dict[str, Any] = plain(
        {
            "trader_id": trader.trader_id,
            "status": trader.status,
            # Balances that are not zero: a currency whose deposits were all refunded
            # showed 0.00 in some delivery orders and nothing in others.
            "wallet": [
                {"currency": currency, "balance": balance.amount}
                for currency in sorted(trader.wallet)
                if (balance := trader.wallet_balance(currency)).amount
            ],
            "disputes": dict(sorted(trader.disputes.items())),
            "first_account_ids": list(trader.account_ids),
        }
    )
    return shaped


def payout_view(payout: Payout) -> dict[str, Any]:
    split = payout.breakdown
    totals = split.totals
    shaped: dict[str, Any] = plain(
        {
            "payout_id": str(payout.id),
            "account_id": payout.account_id,
            "trader_id": payout.trader_id,
            "program_id": payout.program_id,
            "status": payout.status,
            **split.to_dict(),
            "total": totals[split.profit.currency].amount,
            "totals": [
                {"currency": currency, "amount": money.amount}
                for currency, money in sorted(totals.items())
            ],
            "requested_by": payout.requested_by,
            "requested_at": payout.requested_at,
            "approved_by": payout.approved_by,
            "approved_at": payout.approved_at,
            "rejected_by": payout.rejected_by,
            "rejection_reason": payout.rejection_reason,
            "paid_reference": payout.paid_reference,
            "paid_at": payout.paid_at,
            "version": payout.version,
        }
    )
    return shaped


_ACTOR_FIELDS = (
    "actor",
    "requested_by",
    "approved_by",
    "rejected_by",
    "paid_by",
    "allocated_by",
    "by",
)


def _actor(data: dict[str, Any]) -> str | None:
    for name in _ACTOR_FIELDS:
        value = data.get(name)
        if isinstance(value, str):
            return value
    return None
