"""Payouts in the domain, no I/O: the split and its tiers, half-even shares, the fee refund,
and every refusal code, alone and together (DESIGN.md, "Payouts (funded accounts)").

Accounts are opened directly on a 100,000.00 USD program (5 % daily loss, 10 % max loss,
so a fresh account's floors are 95,000.00 and 90,000.00). The clock of a payout request is
written as days after the account's recorded opening time (`created_on`), the instant the
eligibility rules count from.
"""

from __future__ import annotations

import copy
from datetime import datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any
from uuid import UUID, uuid4

import pytest
from dateutil.relativedelta import relativedelta
from hypothesis import given, settings
from hypothesis import strategies as st

from domain.account import TradingAccount
from domain.errors import Conflict, InvalidInput
from domain.money import Money
from domain.payout import (
    Breakdown,
    FourEyes,
    Payout,
    PayoutRefused,
    breakdown,
    split_pct,
)
from domain.program import FundedTerms, ProgramDefinition, SplitTier
from domain.trade import Trade

PROPERTY_SETTINGS = settings(max_examples=300, deadline=None, derandomize=True, database=None)

PROGRAM: dict[str, Any] = {
    "program_id": "payout-100k",
    "name": "Payout 100k",
    "currency": "USD",
    "initial_balance": "100000.00",
    "fee": {"amount": "540.00", "currency": "USD"},
    "day_timezone": "UTC",
    "day_start": "00:00",
    "phases": [
        {
            "name": "challenge",
            "profit_target_pct": "10",
            "max_daily_loss_pct": "5",
            "max_loss_pct": "10",
            "min_trading_days": 0,
        }
    ],
    "funded": {
        "max_daily_loss_pct": "5",
        "max_loss_pct": "10",
        "max_loss_mode": "static",
        "profit_split_pct": "80",
        "split_scaling": [{"after_payouts": 4, "profit_split_pct": "90"}],
        "first_payout_after_days": 14,
        "payout_interval_days": 14,
        "min_payout": "50.00",
        "refund_fee_with_first_payout": True,
        "consistency_max_day_pct": None,
    },
}


def program(**funded_changes: Any) -> dict[str, Any]:
    body = copy.deepcopy(PROGRAM)
    fee = funded_changes.pop("fee", None)
    if fee is not None:
        body["fee"] = fee
    body["funded"].update(funded_changes)
    return body


def open_account(stage: str = "funded", **funded_changes: Any) -> TradingAccount:
    return TradingAccount.open(
        account_id=uuid4(),
        trader_id="trader-1",
        program=ProgramDefinition.parse(program(**funded_changes)),
        program_version=1,
        stage=stage,
    )


_TRADES = iter(range(1, 10**9))


def close(account: TradingAccount, profit: str, day: str = "2026-03-02") -> None:
    trade = Trade.parse(
        {
            "trade_id": f"T-{next(_TRADES)}",
            "symbol": "EURUSD",
            "side": "buy",
            "volume": "1",
            "opened_at": f"{day}T09:00:00Z",
            "closed_at": f"{day}T10:00:00Z",
            "profit": profit,
            "commission": "0.00",
            "swap": "0.00",
        },
        "USD",
    )
    account.close_trade(trade)


def days_after_opening(account: TradingAccount, days: int) -> datetime:
    return account.created_on + relativedelta(days=days)


def request(
    account: TradingAccount, now: datetime, *, trader_suspended: bool = False
) -> tuple[str, Breakdown]:
    payout_id = str(uuid4())
    split = account.request_payout(payout_id, now=now, trader_suspended=trader_suspended)
    return payout_id, split


def refusal(account: TradingAccount, now: datetime, *, trader_suspended: bool = False) -> list[str]:
    """The reasons of a refused request; and the refusal recorded nothing."""
    version = account.version
    with pytest.raises(PayoutRefused) as refused:
        account.request_payout(str(uuid4()), now=now, trader_suspended=trader_suspended)
    assert refused.value.code == "payout_not_eligible"
    assert account.version == version
    reasons: list[str] = refused.value.details["reasons"]
    return reasons


def approve_on_account(
    account: TradingAccount, payout_id: str, split: Breakdown, at: datetime
) -> None:
    """What an approval does to the account: the profit leaves the balance."""
    account.withdraw_payout(payout_id, split.profit, at)


def usd(text: str) -> Money:
    return Money(Decimal(text), "USD")


def terms(
    pct: str = "80",
    tiers: tuple[tuple[int, str], ...] = ((4, "90"),),
    *,
    refund: bool = True,
    currency: str = "USD",
) -> FundedTerms:
    return FundedTerms(
        profit_split_pct=Decimal(pct),
        split_scaling=tuple(SplitTier(after, Decimal(tier)) for after, tier in tiers),
        first_payout_after_days=14,
        payout_interval_days=14,
        min_payout=Money.zero(currency),
        refund_fee_with_first_payout=refund,
    )


# The split and its tiers ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("approved_payouts", "expected_pct"),
    [(0, "80"), (1, "80"), (3, "80"), (4, "90"), (5, "90"), (40, "90")],
)
def test_the_split_is_80_until_4_payouts_are_approved_and_90_from_then_on(
    approved_payouts: int, expected_pct: str
) -> None:
    assert split_pct(terms(), approved_payouts) == Decimal(expected_pct)


def test_with_several_tiers_the_highest_tier_reached_applies() -> None:
    tiered = terms("70", ((2, "75"), (4, "85"), (8, "95")))
    reached = [split_pct(tiered, count) for count in range(10)]
    expected = ["70", "70", "75", "75", "85", "85", "85", "85", "95", "95"]
    assert reached == [Decimal(pct) for pct in expected]


def test_1000_00_of_profit_splits_800_00_to_the_trader_and_200_00_to_the_firm() -> None:
    split = breakdown(usd("1000.00"), terms(), 0, usd("540.00"))
    assert split.profit_split_pct == Decimal("80")
    assert split.trader_share == usd("800.00")
    assert split.firm_share == usd("200.00")


def test_after_4_approved_payouts_1000_00_splits_900_00_and_100_00() -> None:
    split = breakdown(usd("1000.00"), terms(), 4, usd("540.00"))
    assert split.profit_split_pct == Decimal("90")
    assert split.trader_share == usd("900.00")
    assert split.firm_share == usd("100.00")


def test_the_fifth_payout_of_an_account_is_split_at_the_90_percent_tier() -> None:
    account = open_account(payout_interval_days=0, first_payout_after_days=0)
    now = days_after_opening(account, 1)
    pcts = []
    for number in range(1, 6):
        close(account, "1000.00", day=f"2026-03-{number + 1:02d}")
        payout_id, split = request(account, now)
        pcts.append(split.profit_split_pct)
        approve_on_account(account, payout_id, split, now)
    assert pcts == [Decimal(pct) for pct in ("80", "80", "80", "80", "90")]
    assert account.approved_payouts == 5
    assert account.state.balance == usd("100000.00")


@pytest.mark.parametrize(
    ("profit", "pct", "trader_share", "firm_share"),
    [
        # 100.05 x 50 % = 50.025: a tie, to the even cent 50.02
        ("100.05", "50", "50.02", "50.03"),
        # 0.25 x 50 % = 0.125 -> 0.12 (2 is even)
        ("0.25", "50", "0.12", "0.13"),
        # 0.35 x 50 % = 0.175 -> 0.18 (8 is even)
        ("0.35", "50", "0.18", "0.17"),
        # 0.05 x 90 % = 0.045 -> 0.04
        ("0.05", "90", "0.04", "0.01"),
        # 0.15 x 90 % = 0.135 -> 0.14
        ("0.15", "90", "0.14", "0.01"),
        # 1234.57 x 80 % = 987.656: not a tie, to the nearest cent
        ("1234.57", "80", "987.66", "246.91"),
        # 10.01 x 12.5 % = 1.25125 -> 1.25
        ("10.01", "12.5", "1.25", "8.76"),
    ],
)
def test_an_exact_half_cent_is_rounded_half_even_and_the_firm_gets_the_rest(
    profit: str, pct: str, trader_share: str, firm_share: str
) -> None:
    split = breakdown(usd(profit), terms(pct, ()), 0, usd("0.00"))
    assert split.trader_share == usd(trader_share)
    assert split.firm_share == usd(firm_share)


def test_a_zero_decimal_currency_is_rounded_half_even_to_whole_yen() -> None:
    yen_terms = terms("50", (), currency="JPY")
    # 7 x 50 % = 3.5 -> 4 (even); 5 x 50 % = 2.5 -> 2 (even)
    seven = breakdown(Money(Decimal(7), "JPY"), yen_terms, 0, Money.zero("JPY"))
    five = breakdown(Money(Decimal(5), "JPY"), yen_terms, 0, Money.zero("JPY"))
    assert (seven.trader_share.amount, seven.firm_share.amount) == (Decimal(4), Decimal(3))
    assert (five.trader_share.amount, five.firm_share.amount) == (Decimal(2), Decimal(3))


@PROPERTY_SETTINGS
@given(
    profit_cents=st.integers(min_value=1, max_value=10**11),
    pct_hundredths=st.integers(min_value=0, max_value=10_000),
)
def test_trader_share_and_firm_share_always_add_up_to_the_profit(
    profit_cents: int, pct_hundredths: int
) -> None:
    profit = Money.from_minor_units(profit_cents, "USD")
    pct = Decimal(pct_hundredths).scaleb(-2)
    split = breakdown(profit, terms(str(pct), ()), 0, usd("0.00"))
    assert split.trader_share + split.firm_share == profit
    # The trader's share is profit x pct, half-even to the cent, computed here independently:
    exact = Decimal(profit_cents) * Decimal(pct_hundredths) / Decimal(1_000_000)
    assert split.trader_share.amount == exact.quantize(Decimal("0.01"), rounding=ROUND_HALF_EVEN)
    assert Decimal(0) <= split.trader_share.amount <= profit.amount
    assert Decimal(0) <= split.firm_share.amount <= profit.amount


# The fee refund --------------------------------------------------------------------------


def test_the_fee_is_refunded_with_the_first_payout_and_not_with_the_second() -> None:
    first = breakdown(usd("1000.00"), terms(), 0, usd("540.00"))
    second = breakdown(usd("1000.00"), terms(), 1, usd("540.00"))
    assert first.fee_refund == usd("540.00")
    assert first.totals == {"USD": usd("1340.00")}
    assert second.fee_refund == usd("0.00")
    assert second.totals == {"USD": usd("800.00")}


def test_no_fee_is_refunded_when_the_program_does_not_say_so() -> None:
    split = breakdown(usd("1000.00"), terms(refund=False), 0, usd("540.00"))
    assert split.fee_refund == usd("0.00")
    assert split.totals == {"USD": usd("800.00")}


def test_an_account_gets_the_fee_back_on_its_first_approved_payout_only() -> None:
    account = open_account()
    close(account, "1000.00")
    day_14 = days_after_opening(account, 14)
    first_id, first = request(account, day_14)
    assert (first.trader_share, first.fee_refund) == (usd("800.00"), usd("540.00"))
    approve_on_account(account, first_id, first, day_14)

    close(account, "500.00", day="2026-03-03")
    _, second = request(account, day_14 + relativedelta(days=14))
    assert second.profit == usd("500.00")
    assert (second.trader_share, second.fee_refund) == (usd("400.00"), usd("0.00"))
    assert second.totals == {"USD": usd("400.00")}


def test_a_rejected_first_request_leaves_the_fee_refund_for_the_next_one() -> None:
    account = open_account()
    close(account, "1000.00")
    day_14 = days_after_opening(account, 14)
    rejected_id, _ = request(account, day_14)
    account.release_payout(rejected_id)
    assert account.pending_payout_id is None
    _, again = request(account, day_14)
    assert again.fee_refund == usd("540.00")


def test_a_fee_in_euros_on_a_usd_account_is_refunded_in_euros_beside_the_usd_share() -> None:
    account = open_account(fee={"amount": "540.00", "currency": "EUR"})
    close(account, "1000.00")
    payout_id, split = request(account, days_after_opening(account, 14))
    eur_fee = Money(Decimal("540.00"), "EUR")
    assert split.fee_refund == eur_fee
    assert split.to_dict()["fee_refund_currency"] == "EUR"
    assert split.to_dict()["currency"] == "USD"
    assert split.totals == {"USD": usd("800.00"), "EUR": eur_fee}
    # The breakdown survives its trip through the event.
    assert Breakdown.from_dict(split.to_dict()) == split

    payout = Payout.request(
        payout_id=UUID(payout_id),
        account_id=str(account.id),
        trader_id="trader-1",
        program_id="payout-100k",
        split=split,
        requested_by="alice",
        requested_at=days_after_opening(account, 14),
    )
    payout.approve("bob", days_after_opening(account, 15))
    payout.mark_paid("finance-1", "SEPA-1", days_after_opening(account, 16))
    approved, paid = payout.collect_events()[1:]
    assert isinstance(approved, Payout.Approved)
    assert isinstance(paid, Payout.Paid)
    approval = per_currency(approved.journal)
    assert approval == {
        "USD": {
            "debit": {"expenses:profit_share": Decimal("800.00")},
            "credit": {"liabilities:trader_payable:trader-1": Decimal("800.00")},
        },
        "EUR": {
            "debit": {"revenue:refunds": Decimal("540.00")},
            "credit": {"liabilities:trader_payable:trader-1": Decimal("540.00")},
        },
    }
    assert per_currency(paid.journal) == {
        "USD": {
            "debit": {"liabilities:trader_payable:trader-1": Decimal("800.00")},
            "credit": {"assets:bank": Decimal("800.00")},
        },
        "EUR": {
            "debit": {"liabilities:trader_payable:trader-1": Decimal("540.00")},
            "credit": {"assets:bank": Decimal("540.00")},
        },
    }


def requested_payout(split: Breakdown, at: datetime) -> Payout:
    """Trader 9's payout of `split`, requested by alice at `at`."""
    return Payout.request(
        payout_id=uuid4(),
        account_id=str(uuid4()),
        trader_id="trader-9",
        program_id="p",
        split=split,
        requested_by="alice",
        requested_at=at,
    )


def per_currency(lines: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, Decimal]]]:
    """Journal lines summed per currency, side and account; each currency must balance."""
    sums: dict[str, dict[str, dict[str, Decimal]]] = {}
    for line in lines:
        sides = sums.setdefault(line["currency"], {"debit": {}, "credit": {}})
        for side in ("debit", "credit"):
            amount = Decimal(line[side])
            if amount:
                sides[side][line["account"]] = sides[side].get(line["account"], 0) + amount
    for currency, sides in sums.items():
        debits, credits = sum(sides["debit"].values()), sum(sides["credit"].values())
        assert debits == credits, f"{currency} does not balance: {debits} != {credits}"
    return sums


def test_the_approval_entry_of_a_usd_payout_with_its_fee_refund_balances() -> None:
    split = breakdown(usd("1000.00"), terms(), 0, usd("540.00"))
    payout = requested_payout(split, datetime.fromisoformat("2026-04-01T00:00:00+00:00"))
    payout.approve("bob", datetime.fromisoformat("2026-04-02T00:00:00+00:00"))
    approved = payout.collect_events()[-1]
    assert per_currency(approved.journal) == {
        "USD": {
            "debit": {
                "expenses:profit_share": Decimal("800.00"),
                "revenue:refunds": Decimal("540.00"),
            },
            "credit": {"liabilities:trader_payable:trader-9": Decimal("1340.00")},
        }
    }


def test_a_share_rounding_to_nothing_without_a_fee_refund_is_approved_and_books_nothing() -> None:
    # 0.01 at 50 %: half-even gives the trader 0.00 and the firm 0.01. The request is
    # eligible (profit > 0, no minimum), so its approval must go through, not fail on an
    # entry with no lines (found by a black-box audit: 422 `unbalanced_entry` for ever).
    split = breakdown(usd("0.01"), terms("50", ()), 0, Money.zero("USD"))
    assert (split.trader_share, split.firm_share) == (usd("0.00"), usd("0.01"))
    at = datetime.fromisoformat("2026-04-01T00:00:00+00:00")
    payout = requested_payout(split, at)
    payout.approve("bob", at)
    payout.mark_paid("alice", "wire-1", at)
    approved, paid = payout.collect_events()[-2:]
    assert payout.status == "paid"
    assert (approved.journal, paid.journal) == ([], [])


# Four eyes and the payout's life ----------------------------------------------------------


def test_the_requester_may_not_approve_and_a_payout_is_approved_only_once() -> None:
    split = breakdown(usd("1000.00"), terms(), 0, usd("540.00"))
    at = datetime.fromisoformat("2026-04-01T00:00:00+00:00")
    payout = requested_payout(split, at)
    with pytest.raises(FourEyes):
        payout.approve("alice", at)
    assert payout.status == "requested"
    payout.approve("bob", at)
    assert (payout.status, payout.approved_by) == ("approved", "bob")
    with pytest.raises(Conflict) as again:
        payout.approve("carol", at)
    assert again.value.code == "payout_approved"
    with pytest.raises(Conflict):
        payout.reject("carol", "too late")


# Refusals, one at a time --------------------------------------------------------------------


def test_a_phase_account_is_refused_as_not_funded() -> None:
    account = open_account(stage="phase-1")
    close(account, "500.00")  # below the 10 % target: the phase stays active
    assert account.status == "active"
    assert refusal(account, days_after_opening(account, 30)) == ["not_funded"]


def test_an_approval_after_losses_below_the_requested_profit_is_refused_and_changes_nothing() -> (
    None
):
    """Profit is fixed at request time; if trades since have lost part of it, approving
    would pay out money the account no longer has and leave its balance under its floor
    without a breach. The approver is told, and rejects; nothing is withdrawn."""
    account = open_account()
    close(account, "1000.00")
    payout_id, split = request(account, days_after_opening(account, 30))
    close(account, "-900.00")  # profit now 100.00
    account.collect_events()
    with pytest.raises(Conflict) as refused:
        approve_on_account(account, payout_id, split, days_after_opening(account, 31))
    assert refused.value.code == "insufficient_profit"
    assert refused.value.details == {"profit": "100.00", "payout": "1000.00"}
    assert account.collect_events() == []
    assert account.state.balance == usd("100100.00")
    # Gains since the request are fine: the requested profit is what is withdrawn.
    close(account, "950.00")
    approve_on_account(account, payout_id, split, days_after_opening(account, 31))
    assert account.state.balance == usd("100050.00")


def test_a_breached_funded_account_is_refused_as_not_active() -> None:
    account = open_account()
    close(account, "1000.00")  # balance 101,000.00
    # An equity mark below the 95,000.00 daily floor breaches; the balance keeps its profit.
    account.mark_equity(usd("94000.00"), datetime.fromisoformat("2026-03-02T11:00:00+00:00"))
    assert account.status == "breached"
    assert account.state.profit == usd("1000.00")
    assert refusal(account, days_after_opening(account, 30)) == ["not_active"]


@pytest.mark.parametrize("profits", [(), ("100.00", "-100.00")])
def test_an_account_without_profit_is_refused_as_no_profit(profits: tuple[str, ...]) -> None:
    account = open_account(min_payout="0")
    for profit in profits:
        close(account, profit)
    assert account.state.profit == usd("0.00")
    assert refusal(account, days_after_opening(account, 30)) == ["no_profit"]


def test_a_loss_is_no_profit_and_also_below_a_minimum_payout_of_zero() -> None:
    # "profit > 0 and >= min_payout": -100.00 fails both conditions, so both are named.
    account = open_account(min_payout="0")
    close(account, "-100.00")
    assert refusal(account, days_after_opening(account, 30)) == ["no_profit", "below_minimum"]


def test_a_profit_below_the_minimum_payout_is_refused_as_below_minimum() -> None:
    account = open_account()  # min_payout 50.00
    close(account, "49.99")
    assert refusal(account, days_after_opening(account, 30)) == ["below_minimum"]


def test_a_profit_of_exactly_the_minimum_payout_is_paid() -> None:
    account = open_account()
    close(account, "50.00")
    _, split = request(account, days_after_opening(account, 30))
    assert (split.profit, split.trader_share, split.firm_share) == (
        usd("50.00"),
        usd("40.00"),
        usd("10.00"),
    )


def test_13_days_after_opening_is_too_early_and_14_days_is_not() -> None:
    account = open_account()  # first_payout_after_days 14
    close(account, "1000.00")
    assert refusal(account, days_after_opening(account, 13)) == ["too_early"]
    just_before = days_after_opening(account, 14) - timedelta(microseconds=1)
    assert refusal(account, just_before) == ["too_early"]
    _, split = request(account, days_after_opening(account, 14))
    assert split.profit == usd("1000.00")


def test_the_next_payout_waits_payout_interval_days_after_the_approved_one() -> None:
    account = open_account(first_payout_after_days=0, payout_interval_days=14)
    close(account, "1000.00")
    approved_at = days_after_opening(account, 3)
    payout_id, split = request(account, approved_at)
    approve_on_account(account, payout_id, split, approved_at)
    assert account.last_payout_at == approved_at

    close(account, "600.00", day="2026-03-03")
    assert refusal(account, approved_at + relativedelta(days=13)) == ["too_early"]
    # 14 days from the opening is not what counts after a payout: the approval is.
    assert refusal(account, days_after_opening(account, 14)) == ["too_early"]
    _, second = request(account, approved_at + relativedelta(days=14))
    assert second.profit == usd("600.00")


# The account's own clock: a bridge replaying history trades through the days ---------------

PASSED_AT = datetime.fromisoformat("2026-03-01T10:00:00+00:00")  # the trade that funded it


def market_refusal(account: TradingAccount, now: datetime) -> list[str]:
    return account.payout_eligibility(
        now=now, trader_suspended=False, opened_activity_at=PASSED_AT
    ).reasons()


def test_the_first_payout_days_count_on_the_accounts_own_clock_too() -> None:
    """Funded by a trade of 2026-03-01 10:00 replayed today: 14 days of its trades later it
    may be paid, although the ledger's clock moved by an hour (DESIGN.md: the account's
    days are its trades', "not the wall clock: bridges replay history")."""
    account = open_account()
    an_hour_later = days_after_opening(account, 0) + timedelta(hours=1)
    close(account, "1000.00", day="2026-03-14")  # 13 days after the pass
    assert market_refusal(account, an_hour_later) == ["too_early"]
    account.mark_equity(usd("101000.00"), PASSED_AT + relativedelta(days=14, microseconds=-1))
    assert market_refusal(account, an_hour_later) == ["too_early"]
    account.mark_equity(usd("101000.00"), PASSED_AT + relativedelta(days=14))
    assert market_refusal(account, an_hour_later) == []
    # Without the pass's instant only the ledger's clock counts.
    assert refusal(account, an_hour_later) == ["too_early"]
    split = account.request_payout(
        str(uuid4()), now=an_hour_later, trader_suspended=False, opened_activity_at=PASSED_AT
    )
    assert split.profit == usd("1000.00")


def test_the_account_clock_counts_no_further_than_the_ledgers() -> None:
    """A trade or mark dated in the future moves no payout forward."""
    account = open_account()
    opened = days_after_opening(account, 0)
    now = opened + timedelta(hours=1)
    close(account, "1000.00", day="2026-03-02")
    future = now + relativedelta(days=30)
    account.mark_equity(usd("101000.00"), future)
    passed_at = now - relativedelta(days=1)  # funded a day ago on its clock
    reasons = account.payout_eligibility(
        now=now, trader_suspended=False, opened_activity_at=passed_at
    ).reasons()
    assert reasons == ["too_early"]


def test_the_payout_interval_counts_on_the_ledgers_clock_however_long_the_account_idled() -> None:
    """Approved after the account stood still for weeks, the next payout still waits
    payout_interval_days from the approval: a trade dated now is 14 days past the account's
    clock at the approval, yet no time has passed since it (found by an audit: the second
    payout came 30 ms after the first)."""
    account = open_account(first_payout_after_days=0, payout_interval_days=14)
    close(account, "1000.00", day="2026-03-02")
    now = days_after_opening(account, 0) + timedelta(hours=1)
    payout_id, split = request(account, now)
    approve_on_account(account, payout_id, split, now)
    close(account, "600.00", day="2026-03-20")  # 18 days on its clock
    assert market_refusal(account, now + timedelta(seconds=1)) == ["too_early"]
    assert market_refusal(account, now + relativedelta(days=14)) == []


def test_a_phase_passed_by_a_late_trade_opens_the_next_account_at_its_clock() -> None:
    """The passing trade closed on 06-01, after one of 06-20 was recorded: the funded
    account opens on 06-20 of the accounts' clock, not on 06-01 (audit: its first payout
    came due at once)."""
    phase = TradingAccount.open(
        account_id=uuid4(),
        trader_id="trader-1",
        program=ProgramDefinition.parse(program()),
        program_version=1,
        stage="phase-1",
    )
    close(phase, "5000.00", day="2026-06-20")
    close(phase, "6000.00", day="2026-06-01")  # late, and the 10 % target is reached
    assert phase.status == "passed"
    assert phase.passed_at == datetime.fromisoformat("2026-06-01T10:00:00+00:00")
    assert phase.passed_activity_at == datetime.fromisoformat("2026-06-20T10:00:00+00:00")
    restored = TradingAccount.from_snapshot_state(phase.id, phase.version, phase.snapshot_state())
    assert restored.passed_activity_at == phase.passed_activity_at


def test_a_rejected_payout_does_not_restart_the_interval() -> None:
    account = open_account(first_payout_after_days=0, payout_interval_days=14)
    close(account, "1000.00")
    approved_at = days_after_opening(account, 1)
    payout_id, split = request(account, approved_at)
    approve_on_account(account, payout_id, split, approved_at)
    close(account, "600.00", day="2026-03-03")
    rejected_id, _ = request(account, approved_at + relativedelta(days=14))
    account.release_payout(rejected_id)
    # The interval still counts from the approved payout, not from the rejected request.
    _, again = request(account, approved_at + relativedelta(days=14))
    assert again.profit == usd("600.00")
    assert account.last_payout_at == approved_at


def test_one_big_day_breaks_the_consistency_rule() -> None:
    account = open_account(consistency_max_day_pct="40")
    close(account, "100.00", day="2026-03-02")
    close(account, "900.00", day="2026-03-03")  # 900 of 1000 = 90 % > 40 %
    assert refusal(account, days_after_opening(account, 30)) == ["consistency"]


def test_days_within_the_consistency_limit_are_paid() -> None:
    account = open_account(consistency_max_day_pct="40")
    for day, profit in (("02", "300.00"), ("03", "300.00"), ("04", "400.00")):
        close(account, profit, day=f"2026-03-{day}")  # best day 400 of 1000 = exactly 40 %
    _, split = request(account, days_after_opening(account, 30))
    assert split.profit == usd("1000.00")


def test_a_suspended_trader_is_refused_as_trader_suspended() -> None:
    account = open_account()
    close(account, "1000.00")
    later = days_after_opening(account, 30)
    assert refusal(account, later, trader_suspended=True) == ["trader_suspended"]
    # A dispute also marks the account `suspended`: it is not `active` either, and a
    # refusal names every failed condition.
    account.suspend("payment dispute")
    assert account.public_status == "suspended"
    assert refusal(account, later) == ["not_active", "trader_suspended"]
    account.reinstate("dispute won")
    _, split = request(account, later)
    assert split.profit == usd("1000.00")


def test_a_second_request_while_one_is_pending_is_refused_as_payout_pending() -> None:
    account = open_account()
    close(account, "1000.00")
    later = days_after_opening(account, 30)
    payout_id, _ = request(account, later)
    assert account.pending_payout_id == payout_id
    assert refusal(account, later) == ["payout_pending"]


# Refusals, together ------------------------------------------------------------------------


def test_a_refusal_names_every_failed_condition_in_the_documented_order() -> None:
    account = open_account(stage="phase-1")
    close(account, "-6000.00")  # 94,000.00: below the daily floor, breached, no profit
    assert account.status == "breached"
    reasons = refusal(account, days_after_opening(account, 1), trader_suspended=True)
    assert reasons == [
        "not_funded",
        "not_active",
        "no_profit",
        "below_minimum",
        "too_early",
        "trader_suspended",
    ]


def test_a_small_one_day_profit_too_early_for_a_suspended_trader_names_four_reasons() -> None:
    account = open_account(consistency_max_day_pct="50")
    close(account, "20.00")  # one day is 100 % of the profit, and 20.00 < 50.00
    reasons = refusal(account, days_after_opening(account, 13), trader_suspended=True)
    assert reasons == ["below_minimum", "too_early", "consistency", "trader_suspended"]


def test_a_pending_payout_and_a_breach_and_a_suspension_are_named_together() -> None:
    account = open_account()
    close(account, "1000.00")
    payout_id, _ = request(account, days_after_opening(account, 14))
    account.mark_equity(usd("94000.00"), datetime.fromisoformat("2026-03-02T12:00:00+00:00"))
    account.suspend("payment dispute")
    reasons = refusal(account, days_after_opening(account, 14))
    assert reasons == ["not_active", "trader_suspended", "payout_pending"]
    assert account.pending_payout_id == payout_id


def test_a_rejection_reason_or_payment_reference_with_nul_is_refused_and_records_nothing() -> None:
    """The console's forms reach the payout without the API's JSON check: PostgreSQL text
    cannot hold NUL, and a recorded one would stop the projections for good."""
    account = open_account()
    close(account, "1000.00")
    payout_id, split = request(account, days_after_opening(account, 30))
    payout = Payout.request(
        payout_id=UUID(payout_id), account_id=str(account.id), trader_id="trader-1",
        program_id="p", split=split, requested_by="t", requested_at=account.created_on,
    )  # fmt: skip
    payout.collect_events()
    with pytest.raises(InvalidInput):
        payout.reject("arthur", "kyc\x00")
    assert payout.collect_events() == []
    payout.approve("arthur", account.created_on)
    payout.collect_events()
    with pytest.raises(InvalidInput):
        payout.mark_paid("fiona", "WIRE\x00", account.created_on)
    assert payout.collect_events() == []


def test_a_balance_recorded_past_10_to_the_14_pays_nothing_out_and_may_come_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A store written before trades were bounded can hold such a balance: a payout of it
    would not fit the projections' 64-bit minor units (it stopped the payout projection
    for good), so it is refused; a trade that brings the balance back in is recorded."""
    import domain.account

    account = open_account()
    monkeypatch.setattr(domain.account, "BALANCE_LIMIT", Decimal(10) ** 20)  # as before
    for _ in range(150):
        close(account, "999999999999.00")
    monkeypatch.undo()
    assert account.board()["balance"] > Decimal(10) ** 14
    version = account.version
    with pytest.raises(InvalidInput) as refused:
        request(account, days_after_opening(account, 15))
    assert refused.value.code == "balance_out_of_range"
    assert account.version == version
    with pytest.raises(InvalidInput):
        close(account, "1.00")  # further out: refused
    close(account, "-999999999999.00")  # back towards the range: recorded
    assert account.version == version + 1
