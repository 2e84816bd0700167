"""Stripe webhook payloads in Stripe's own shapes (API version 2024-06-20), and signing.

Every builder returns a plain dict exactly as Stripe would put it on the wire: an `event`
whose `data.object` is a `checkout.session`, `payment_intent`, `charge` or `dispute`.
Amounts are integers in the currency's minor unit and currencies are lowercase, as Stripe
sends them. Ids are fresh (uuid4 hex) unless given, so tests never collide.

Bodies are signed only with the stripe library's own scheme
(`stripe.WebhookSignature.generate_signature_header`) and must be posted as the very same
string that was signed.
"""

from __future__ import annotations

import json
import time
from typing import Any
from uuid import uuid4

import stripe

API_VERSION = "2024-06-20"
WEBHOOK_SECRET = "whsec_test_" + "s" * 32


def new_id(prefix: str) -> str:
    """A Stripe-looking id: `prefix` + 24 hex digits (e.g. `pi_3f...`)."""
    return f"{prefix}{uuid4().hex[:24]}"


def event(
    event_type: str,
    obj: dict[str, Any],
    *,
    event_id: str | None = None,
    created: int | None = None,
    previous_attributes: dict[str, Any] | None = None,
) -> dict[str, Any]:
    data: dict[str, Any] = {"object": obj}
    if previous_attributes is not None:
        data["previous_attributes"] = previous_attributes
    return {
        "id": event_id or new_id("evt_"),
        "object": "event",
        "api_version": API_VERSION,
        "created": created if created is not None else int(time.time()),
        "data": data,
        "livemode": False,
        "pending_webhooks": 1,
        "request": {"id": new_id("req_"), "idempotency_key": str(uuid4())},
        "type": event_type,
    }


def checkout_session(
    *,
    amount: int,
    currency: str = "usd",
    metadata: dict[str, str] | None = None,
    payment_intent: str | None = None,
    session_id: str | None = None,
    customer: str | None = None,
    payment_status: str = "paid",
) -> dict[str, Any]:
    """A completed one-off Checkout Session (mode `payment`)."""
    return {
        "id": session_id or new_id("cs_test_"),
        "object": "checkout.session",
        "amount_subtotal": amount,
        "amount_total": amount,
        "cancel_url": "https://example.com/cancel",
        "client_reference_id": None,
        "created": int(time.time()) - 60,
        "currency": currency,
        "customer": customer or new_id("cus_"),
        "customer_details": {"email": "trader@example.com", "name": "Test Trader"},
        "livemode": False,
        "metadata": dict(metadata or {}),
        "mode": "payment",
        "payment_intent": payment_intent or new_id("pi_"),
        "payment_method_types": ["card"],
        "payment_status": payment_status,
        "status": "complete",
        "success_url": "https://example.com/success",
        "total_details": {"amount_discount": 0, "amount_shipping": 0, "amount_tax": 0},
        "url": None,
    }


def payment_intent(
    *,
    amount: int,
    currency: str = "usd",
    metadata: dict[str, str] | None = None,
    intent_id: str | None = None,
    customer: str | None = None,
) -> dict[str, Any]:
    """A succeeded PaymentIntent."""
    intent = intent_id or new_id("pi_")
    return {
        "id": intent,
        "object": "payment_intent",
        "amount": amount,
        "amount_capturable": 0,
        "amount_received": amount,
        "capture_method": "automatic",
        "client_secret": f"{intent}_secret_{uuid4().hex[:16]}",
        "confirmation_method": "automatic",
        "created": int(time.time()) - 60,
        "currency": currency,
        "customer": customer or new_id("cus_"),
        "latest_charge": new_id("ch_"),
        "livemode": False,
        "metadata": dict(metadata or {}),
        "payment_method": new_id("pm_"),
        "payment_method_types": ["card"],
        "status": "succeeded",
    }


def refund(
    *, amount: int, charge: str, payment_intent: str, currency: str = "usd"
) -> dict[str, Any]:
    return {
        "id": new_id("re_"),
        "object": "refund",
        "amount": amount,
        "balance_transaction": new_id("txn_"),
        "charge": charge,
        "created": int(time.time()),
        "currency": currency,
        "metadata": {},
        "payment_intent": payment_intent,
        "reason": "requested_by_customer",
        "status": "succeeded",
    }


def charge(
    *,
    amount: int,
    payment_intent: str,
    currency: str = "usd",
    amount_refunded: int = 0,
    refund_amounts: list[int] | None = None,
    charge_id: str | None = None,
    metadata: dict[str, str] | None = None,
) -> dict[str, Any]:
    """A succeeded card Charge; `refund_amounts` are its individual refunds (newest first),
    which add up to the cumulative `amount_refunded` when given."""
    charge_ref = charge_id or new_id("ch_")
    amounts = (
        refund_amounts
        if refund_amounts is not None
        else ([amount_refunded] if amount_refunded else [])
    )
    refunds = [
        refund(amount=part, charge=charge_ref, payment_intent=payment_intent, currency=currency)
        for part in amounts
    ]
    return {
        "id": charge_ref,
        "object": "charge",
        "amount": amount,
        "amount_captured": amount,
        "amount_refunded": amount_refunded,
        "balance_transaction": new_id("txn_"),
        "captured": True,
        "created": int(time.time()) - 60,
        "currency": currency,
        "customer": new_id("cus_"),
        "disputed": False,
        "livemode": False,
        "metadata": dict(metadata or {}),
        "paid": True,
        "payment_intent": payment_intent,
        "payment_method": new_id("pm_"),
        "refunded": amount_refunded >= amount,
        "refunds": {
            "object": "list",
            "data": refunds,
            "has_more": False,
            "total_count": len(refunds),
            "url": f"/v1/charges/{charge_ref}/refunds",
        },
        "status": "succeeded",
    }


def balance_transaction(
    *, amount: int, fee: int, currency: str = "usd", description: str = "Chargeback withdrawal"
) -> dict[str, Any]:
    """A dispute's balance transaction: `amount` negative when funds are withdrawn."""
    return {
        "id": new_id("txn_"),
        "object": "balance_transaction",
        "amount": amount,
        "available_on": int(time.time()),
        "created": int(time.time()),
        "currency": currency,
        "description": description,
        "fee": fee,
        "fee_details": (
            [{"amount": fee, "application": None, "currency": currency,
              "description": "Dispute fee", "type": "stripe_fee"}]
            if fee
            else []
        ),
        "net": amount - fee,
        "reporting_category": "dispute",
        "source": None,
        "status": "available",
        "type": "adjustment",
    }  # fmt: skip


def dispute(
    *,
    amount: int,
    payment_intent: str,
    charge: str | None = None,
    currency: str = "usd",
    status: str = "needs_response",
    dispute_id: str | None = None,
    reason: str = "fraudulent",
    balance_transactions: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    return {
        "id": dispute_id or new_id("dp_"),
        "object": "dispute",
        "amount": amount,
        "balance_transactions": list(balance_transactions or []),
        "charge": charge or new_id("ch_"),
        "created": int(time.time()) - 30,
        "currency": currency,
        "evidence_details": {
            "due_by": int(time.time()) + 7 * 86400,
            "has_evidence": False,
            "past_due": False,
            "submission_count": 0,
        },
        "is_charge_refundable": False,
        "livemode": False,
        "metadata": {},
        "payment_intent": payment_intent,
        "reason": reason,
        "status": status,
    }


class StripePayment:
    """One payment at Stripe (a PaymentIntent and its Charge) and the events about it."""

    def __init__(self, amount: int, currency: str = "usd", metadata: dict[str, str] | None = None):
        self.amount = amount
        self.currency = currency
        self.metadata = dict(metadata or {})
        self.intent = new_id("pi_")
        self.charge_id = new_id("ch_")
        self.refunds: list[int] = []

    def checkout_completed(self, **fields: Any) -> dict[str, Any]:
        session = checkout_session(
            amount=self.amount,
            currency=self.currency,
            metadata=self.metadata,
            payment_intent=self.intent,
        )
        session.update(fields)
        return event("checkout.session.completed", session)

    def intent_succeeded(self, metadata: dict[str, str] | None = None) -> dict[str, Any]:
        """`payment_intent.succeeded`, with the payment's metadata or `metadata` (Checkout
        keeps the session's and the intent's apart)."""
        return event(
            "payment_intent.succeeded",
            payment_intent(
                amount=self.amount,
                currency=self.currency,
                metadata=self.metadata if metadata is None else metadata,
                intent_id=self.intent,
            ),
        )

    def refunded(self, cumulative: int, parts: list[int] | None = None) -> dict[str, Any]:
        """`charge.refunded` with the cumulative `amount_refunded` Stripe reports."""
        return event(
            "charge.refunded",
            charge(
                amount=self.amount,
                currency=self.currency,
                payment_intent=self.intent,
                amount_refunded=cumulative,
                refund_amounts=parts,
                charge_id=self.charge_id,
            ),
        )

    def dispute_event(
        self,
        event_type: str,
        dispute_id: str,
        *,
        status: str = "needs_response",
        fee: int = 1500,
        amount: int | None = None,
    ) -> dict[str, Any]:
        disputed = self.amount if amount is None else amount
        transactions: list[dict[str, Any]] = []
        if event_type == "charge.dispute.funds_withdrawn":
            transactions = [balance_transaction(amount=-disputed, fee=fee, currency=self.currency)]
        elif event_type == "charge.dispute.funds_reinstated":
            transactions = [
                balance_transaction(amount=-disputed, fee=fee, currency=self.currency),
                balance_transaction(
                    amount=disputed,
                    fee=0,
                    currency=self.currency,
                    description="Chargeback reversal",
                ),
            ]
        return event(
            event_type,
            dispute(
                amount=disputed,
                currency=self.currency,
                payment_intent=self.intent,
                charge=self.charge_id,
                status=status,
                dispute_id=dispute_id,
                balance_transactions=transactions,
            ),
        )


def body_of(payload: dict[str, Any]) -> str:
    """The exact text posted (and signed): compact JSON, like Stripe's own bodies."""
    return json.dumps(payload, separators=(",", ":"))


def signature(body: str, secret: str = WEBHOOK_SECRET, *, timestamp: int | None = None) -> str:
    """The `Stripe-Signature` header for `body`, made by the stripe library itself."""
    return str(
        stripe.WebhookSignature.generate_signature_header(
            body, secret, timestamp=timestamp if timestamp is not None else int(time.time())
        )
    )
