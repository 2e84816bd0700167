"""Stripe webhook events, read into the facts the ledger acts on.

Only the fields named here are read; amounts are integers in the currency's minor unit
as Stripe counts it (JPY has none, KWD three), which is ISO 4217's except for two
currencies: Stripe counts MGA in whole ariary (ISO: two places) and ISK in hundredths
(ISO: none; Stripe's amounts for ISK are always whole hundreds).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from domain import journal
from domain.errors import InvalidInput
from domain.money import Money, check_currency
from domain.payment import CHALLENGE, DEPOSIT, DISPUTE_LOST, DISPUTE_OPEN, DISPUTE_WON, UNALLOCATED

PROCESSOR = "stripe"

RECEIVED = "received"
REFUND = "refund"
DISPUTE = "dispute"
DISPUTE_FUNDS = "dispute_funds"
RECORD_ONLY = "record_only"


@dataclass(frozen=True)
class StripeFact:
    event_id: str
    event_type: str
    object_id: str | None
    kind: str
    payment_ref: str | None = None
    purpose: str | None = None
    trader_id: str | None = None
    program_id: str | None = None
    amount: Money | None = None
    fee: Money | None = None
    # A dispute withdrawal's fee in currencies other than the dispute's (the account's
    # settlement currency): booked as lines of their own, one per currency.
    other_fees: tuple[Money, ...] = ()
    dispute_id: str | None = None
    dispute_status: str | None = None
    direction: str | None = None


# https://docs.stripe.com/currencies: the zero-decimal and three-decimal currencies;
# every other one, ISK, HUF and TWD included, is sent with two decimal places.
_STRIPE_ZERO_DECIMAL = frozenset({
    "BIF", "CLP", "DJF", "GNF", "JPY", "KMF", "KRW", "MGA",
    "PYG", "RWF", "UGX", "VND", "VUV", "XAF", "XOF", "XPF",
})  # fmt: skip
_STRIPE_THREE_DECIMAL = frozenset({"BHD", "JOD", "KWD", "OMR", "TND"})


def stripe_exponent(currency: str) -> int:
    """Decimal places of a Stripe amount in `currency` (an integer count of these)."""
    if currency in _STRIPE_ZERO_DECIMAL:
        return 0
    if currency in _STRIPE_THREE_DECIMAL:
        return 3
    return 2


# Stripe's own limit is eight digits of the minor unit (99,999,999); a thousand times
# that is still far below what could overflow the journal's 64-bit sums of minor units.
MAX_STRIPE_AMOUNT = 10**11


def _money(amount: Any, currency: Any) -> Money:
    if isinstance(amount, bool) or not isinstance(amount, int) or amount < 0:
        raise InvalidInput("a Stripe amount must be a non-negative integer", code="invalid_event")
    if amount > MAX_STRIPE_AMOUNT:
        # Refused before anything is recorded: a stored amount the journal cannot sum
        # would stop its projection for good.
        raise InvalidInput(
            f"a Stripe amount of {amount} is out of range (at most {MAX_STRIPE_AMOUNT})",
            code="invalid_event",
        )
    if not isinstance(currency, str):
        raise InvalidInput("a Stripe amount needs a currency", code="invalid_event")
    code = check_currency(currency.upper())
    # Exact: a Stripe amount finer than the ledger's minor unit (ISK 10050) is refused.
    return Money(Decimal(amount).scaleb(-stripe_exponent(code)), code)


def _text(value: Any) -> str | None:
    # Text the stores can hold: PostgreSQL refuses NUL, and control characters are no id.
    return value if isinstance(value, str) and value.strip() and value.isprintable() else None


def _ref(value: Any) -> str | None:
    """An id field that Stripe sends either as a string or as an expanded object."""
    if isinstance(value, dict):
        return _text(value.get("id"))
    return _text(value)


def parse(event: dict[str, Any]) -> StripeFact:
    event_id = _text(event.get("id"))
    event_type = _text(event.get("type"))
    data = event.get("data")
    obj = data.get("object") if isinstance(data, dict) else None
    if event_id is None or event_type is None or not isinstance(obj, dict):
        raise InvalidInput(
            "not a Stripe event: needs id, type and data.object", code="invalid_event"
        )
    base: dict[str, Any] = {
        "event_id": event_id,
        "event_type": event_type,
        "object_id": _text(obj.get("id")),
    }
    reader = _READERS.get(event_type)
    if reader is None:
        return StripeFact(kind=RECORD_ONLY, **base)
    return reader(obj, base)


def _metadata(obj: dict[str, Any]) -> dict[str, Any]:
    metadata = obj.get("metadata")
    return metadata if isinstance(metadata, dict) else {}


def _trader_id(metadata: dict[str, Any]) -> str | None:
    """The trader a payment names, if it can be one (`journal.is_trader_id`); a payment
    naming none that can is booked unallocated, never dropped."""
    trader_id = _text(metadata.get("trader_id"))
    if trader_id is None or len(trader_id) > 128 or not journal.is_trader_id(trader_id):
        return None
    return trader_id


def _checkout_completed(obj: dict[str, Any], base: dict[str, Any]) -> StripeFact:
    if obj.get("payment_status") == "unpaid":
        # An asynchronous payment method has not paid yet; its success arrives later.
        # (A session without the field is taken as completed means: paid.)
        return StripeFact(kind=RECORD_ONLY, **base)
    if obj.get("mode") == "setup" or (
        obj.get("payment_status") == "no_payment_required" and obj.get("amount_total") is None
    ):
        # A session that saved a payment method and took no money (no amount, no
        # currency): recorded, never refused (Stripe would retry it for days). A
        # payment session discounted to 0 has an amount_total of 0 and books as usual.
        return StripeFact(kind=RECORD_ONLY, **base)
    metadata = _metadata(obj)
    trader_id = _trader_id(metadata)
    program_id = _text(metadata.get("program_id"))
    if metadata.get("purpose") == "wallet_deposit" and trader_id:
        purpose = DEPOSIT
    elif trader_id and program_id:
        purpose = CHALLENGE
    else:
        purpose = UNALLOCATED
    return StripeFact(
        kind=RECEIVED,
        payment_ref=_ref(obj.get("payment_intent")) or _text(obj.get("id")),
        purpose=purpose,
        trader_id=trader_id,
        program_id=program_id,
        amount=_money(obj.get("amount_total"), obj.get("currency")),
        **base,
    )


def _payment_intent_succeeded(obj: dict[str, Any], base: dict[str, Any]) -> StripeFact:
    metadata = _metadata(obj)
    if metadata.get("purpose") != "wallet_deposit":
        # Challenge purchases are booked from their checkout session (Stripe puts the
        # session's metadata on the session, not on its intent).
        return StripeFact(kind=RECORD_ONLY, **base)
    # A deposit: to the trader's wallet, or, naming no trader it can be, to
    # liabilities:unallocated (DESIGN: never dropped). A session naming the trader later
    # moves it to the wallet (Payment.Identified), so the order of the two does not matter.
    trader_id = _trader_id(metadata)
    amount = obj.get("amount_received", obj.get("amount"))
    return StripeFact(
        kind=RECEIVED,
        payment_ref=_text(obj.get("id")),
        purpose=DEPOSIT if trader_id else UNALLOCATED,
        trader_id=trader_id,
        amount=_money(amount, obj.get("currency")),
        **base,
    )


def _charge_refunded(obj: dict[str, Any], base: dict[str, Any]) -> StripeFact:
    return StripeFact(
        kind=REFUND,
        payment_ref=_ref(obj.get("payment_intent")) or _text(obj.get("id")),
        amount=_money(obj.get("amount_refunded"), obj.get("currency")),
        **base,
    )


def _dispute_ref(obj: dict[str, Any]) -> str | None:
    return _ref(obj.get("payment_intent")) or _ref(obj.get("charge"))


def _dispute_id(obj: dict[str, Any]) -> str:
    dispute_id = _text(obj.get("id"))
    if dispute_id is None:
        raise InvalidInput(
            "a Stripe dispute event needs the dispute's id (data.object.id)",
            code="invalid_event",
        )
    return dispute_id


def _dispute_created(obj: dict[str, Any], base: dict[str, Any]) -> StripeFact:
    return StripeFact(
        kind=DISPUTE,
        payment_ref=_dispute_ref(obj),
        dispute_id=_dispute_id(obj),
        dispute_status=DISPUTE_OPEN,
        **base,
    )


# A closed dispute's `status`: only a lost dispute keeps the trader suspended; won, an
# inquiry closed with a warning, one prevented, or one ended by refunding the charge all
# reinstate. Anything else (missing, a status of a dispute still open, a word Stripe does
# not send) is refused: read as "won", it lifted a fraud suspension.
_CLOSED_NOT_LOST = frozenset({"won", "warning_closed", "prevented", "charge_refunded"})


def _dispute_closed(obj: dict[str, Any], base: dict[str, Any]) -> StripeFact:
    raw = obj.get("status")
    if raw == "lost":
        status = DISPUTE_LOST
    elif raw in _CLOSED_NOT_LOST:
        status = DISPUTE_WON
    else:
        raise InvalidInput(
            f"a closed dispute's status must be 'lost' or one of "
            f"{', '.join(sorted(_CLOSED_NOT_LOST))}, got {raw!r}",
            code="invalid_event",
            details={"field": "data.object.status"},
        )
    return StripeFact(
        kind=DISPUTE,
        payment_ref=_dispute_ref(obj),
        dispute_id=_dispute_id(obj),
        dispute_status=status,
        **base,
    )


Reader = Callable[[dict[str, Any], dict[str, Any]], StripeFact]


def _dispute_funds(direction: str) -> Reader:
    def read(obj: dict[str, Any], base: dict[str, Any]) -> StripeFact:
        dispute_id = _dispute_id(obj)
        amount = _money(obj.get("amount"), obj.get("currency"))
        fee = Money.zero(amount.currency)
        other_fees: dict[str, Money] = {}
        if direction == "withdrawn":
            transactions = [
                bt for bt in obj.get("balance_transactions") or [] if isinstance(bt, dict)
            ]
            withdrawals = [
                bt for bt in transactions if isinstance(bt.get("amount"), int) and bt["amount"] < 0
            ]
            for transaction in withdrawals or transactions:
                currency = transaction.get("currency") or amount.currency
                fee_part = _money(transaction.get("fee", 0), currency)
                if fee_part.currency == fee.currency:
                    fee = fee + fee_part
                elif fee_part.amount:
                    held = other_fees.get(fee_part.currency, Money.zero(fee_part.currency))
                    other_fees[fee_part.currency] = held + fee_part
        return StripeFact(
            kind=DISPUTE_FUNDS,
            payment_ref=_dispute_ref(obj),
            dispute_id=dispute_id,
            direction=direction,
            amount=amount,
            fee=fee,
            other_fees=tuple(other_fees[code] for code in sorted(other_fees)),
            **base,
        )

    return read


_READERS: dict[str, Reader] = {
    "checkout.session.completed": _checkout_completed,
    # A checkout paid by an asynchronous method (a bank debit) completes unpaid; its money
    # arrives with this event, on the same session and payment.
    "checkout.session.async_payment_succeeded": _checkout_completed,
    "payment_intent.succeeded": _payment_intent_succeeded,
    "charge.refunded": _charge_refunded,
    "charge.dispute.created": _dispute_created,
    "charge.dispute.closed": _dispute_closed,
    "charge.dispute.funds_withdrawn": _dispute_funds("withdrawn"),
    "charge.dispute.funds_reinstated": _dispute_funds("reinstated"),
}
