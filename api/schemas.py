"""Request bodies. Strict: money and timestamps are strings, unknown fields are refused.
The domain then checks what the values mean (decimal places, offsets, currencies)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt, StrictStr

_STRICT = ConfigDict(extra="forbid", strict=True)


class PurchaseCreate(BaseModel):
    model_config = _STRICT

    purchase_id: StrictStr = Field(min_length=1, max_length=128)
    trader_id: StrictStr = Field(min_length=1, max_length=128)
    program_id: StrictStr = Field(min_length=1, max_length=64)
    method: Literal["manual", "wallet"]
    amount: StrictStr = Field(max_length=40, examples=["540.00"])
    currency: StrictStr = Field(min_length=3, max_length=3, examples=["USD"])


class TradeCreate(BaseModel):
    model_config = _STRICT

    # A platform's ticket number may come as a JSON integer: the same id as its text.
    trade_id: StrictStr | StrictInt = Field(examples=["T-1001"])
    symbol: StrictStr = Field(min_length=1, max_length=32, examples=["EURUSD"])
    # "buy" or "sell" in any case, or "long" / "short" (the domain reads them).
    side: StrictStr = Field(max_length=8, examples=["buy"])
    volume: StrictStr | StrictInt | StrictFloat = Field(examples=["1.5"])
    opened_at: StrictStr = Field(max_length=40, examples=["2026-03-02T09:30:00Z"])
    closed_at: StrictStr = Field(max_length=40, examples=["2026-03-02T11:05:00+01:00"])
    profit: StrictStr = Field(max_length=40, examples=["-120.50"])
    commission: StrictStr = Field(default="0", max_length=40, examples=["-3.50"])
    swap: StrictStr = Field(default="0", max_length=40, examples=["0.00"])


class TradeBatch(BaseModel):
    """Items are checked one by one: a bad trade is `rejected` in the results, not the batch."""

    model_config = _STRICT

    trades: list[dict[str, Any]] = Field(max_length=1000)


class EquityMark(BaseModel):
    model_config = _STRICT

    equity: StrictStr = Field(max_length=40, examples=["99850.00"])
    at: StrictStr = Field(max_length=40, examples=["2026-03-02T11:05:00Z"])


class Allocation(BaseModel):
    model_config = _STRICT

    trader_id: StrictStr = Field(min_length=1, max_length=128)
    program_id: StrictStr = Field(min_length=1, max_length=64)


class Rejection(BaseModel):
    model_config = _STRICT

    # Something to read: a blank reason is refused (the console's form refuses it too).
    reason: StrictStr = Field(min_length=1, max_length=500, pattern=r"\S")


class PaidMark(BaseModel):
    model_config = _STRICT

    reference: StrictStr = Field(
        min_length=1, max_length=200, pattern=r"\S", examples=["SEPA-2026-03-000123"]
    )
