"""Stripe webhook deliveries: the signature check and parse that come before the ledger.

One function serves the HTTP route (`POST /v1/webhooks/stripe`) and `propledger demo`,
so the demo's purchases, refunds and disputes pass the very check a real delivery does.
"""

from __future__ import annotations

import json
from typing import Any

import stripe

from api.errors import ApiError

# Stripe's own default: a signature older than this is refused as a replay (the stripe
# library checks only the past: a timestamp ahead of the clock needs the secret to sign).
STRIPE_TOLERANCE_SECONDS = 300


def verify_stripe_event(
    payload: bytes, header: str | None, secret: str, *, tolerance: int = STRIPE_TOLERANCE_SECONDS
) -> dict[str, Any]:
    """The event in `payload` once its `Stripe-Signature` header checks out with the
    stripe library over the raw bytes; ApiError 400 (nothing applied) otherwise."""
    try:
        stripe.WebhookSignature.verify_header(
            payload.decode("utf-8"), header, secret, tolerance=tolerance
        )
        event = json.loads(payload)
    except (stripe.SignatureVerificationError, UnicodeDecodeError) as error:
        raise ApiError(400, "invalid_signature", f"signature check failed: {error}") from None
    except (ValueError, RecursionError):
        raise ApiError(400, "malformed_json", "the webhook body is not JSON") from None
    if not isinstance(event, dict):
        raise ApiError(400, "invalid_event", "the webhook body is not a Stripe event")
    return event
