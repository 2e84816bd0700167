"""Aggregate ids derived from external keys (uuid5), so a duplicate collides instead of
repeating: the same purchase id always names the same account, the same program id the
same program."""

from __future__ import annotations

from uuid import NAMESPACE_URL, UUID, uuid5

NAMESPACE = uuid5(NAMESPACE_URL, "urn:propledger:ids")


def program_id_to_uuid(program_id: str) -> UUID:
    return uuid5(NAMESPACE, f"program/{program_id}")


def trader_id_to_uuid(trader_id: str) -> UUID:
    return uuid5(NAMESPACE, f"trader/{trader_id}")


def first_account_id(purchase_id: str) -> UUID:
    """The phase-1 account a purchase opens."""
    return uuid5(NAMESPACE, f"purchase/{purchase_id}/account")


def next_account_id(account_id: UUID) -> UUID:
    """The account opened when `account_id` passes its phase."""
    return uuid5(NAMESPACE, f"account/{account_id}/next")
