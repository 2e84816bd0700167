"""Every read model the service keeps, in one list for the workers and for rebuilds."""

from __future__ import annotations

from projections.board import AccountBoard
from projections.journal import Journal
from projections.payments import PaymentBoard
from projections.payouts import PayoutBoard
from projections.runner import Projection


def default_projections() -> list[Projection]:
    return [AccountBoard(), Journal(), PaymentBoard(), PayoutBoard()]
