"""`propledger demo`: a realistic prop firm built in the configured store.

Everything goes through the ledger's own commands, as the live service would: programs are
defined, traders buy through Stripe webhooks (signed with the stripe library's scheme and
checked by `api.webhooks.verify_stripe_event`, the route's own function), trading-platform
bridges send trades in batches (`PropLedger.record_trades_batch`) and equity marks, finance
requests, approves (four eyes), rejects and pays payouts.

What the firm holds after a run:
- four programs modelled on published rule sets (`PROGRAMS`): a two-step static-drawdown
  challenge (FTMO style, in USD and in EUR), a one-step trailing-drawdown program, and a
  futures program with an end-of-day trailing drawdown (Topstep / Apex style);
- traders of four kinds (`STAR`, `PROFILES`): a few strong ones (so even a small firm has
  funded accounts and payouts), skilled, average and gamblers, who trade on weekdays, several
  trades a day, with fat-tailed P&L (Student-t, 3 degrees of freedom) and buy again after a
  breach;
- a few wallet deposits and wallet purchases, refunds (full and partial), disputes (won, lost
  and still open, which suspend their traders), payments matching no trader (booked to
  `liabilities:unallocated`; finance matches the first one, the last one waits);
- breaches, passes (the ledger opens next phases and funded accounts itself), payouts at
  every stage: eligible but not asked for, requested, approved, rejected, paid.

Determinism: every draw comes from `random.Random` instances seeded from `--seed`, and the
ledger runs on a simulated clock with `stamp_events=True`, so every event, every chain link
and every id is the same for the same seed, size and `--until`. Money never passes through
a float: a draw is a dimensionless R-multiple, cut to four decimal places as a Decimal, and
multiplied by the money at risk, then quantized to the currency's minor unit.
"""

from __future__ import annotations

import heapq
import itertools
import json
import math
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from datetime import time as time_of_day
from decimal import ROUND_HALF_EVEN, Decimal
from functools import partial
from random import Random
from typing import Any

import stripe

from api.webhooks import verify_stripe_event
from domain.errors import Conflict
from domain.ids import first_account_id
from domain.money import Money, minor_unit_exponent
from domain.payout import PayoutRefused
from ledger.app import PropLedger
from ledger.migrate import migrate
from projections.journal import trial_balance
from projections.registry import default_projections
from projections.runner import ProjectionRunner
from projections.store import Database

MAX_TRADERS = 20_000
MAX_DAYS = 3_650
SERVE_TRADERS = 100  # `propledger serve --demo`: a first look, built in seconds
SERVE_DAYS = 45
BATCH_TRADES = 1_000  # PropLedger.record_trades_batch takes at most this many

# Who does what in the demo firm (token subjects; mint tokens for them to look around).
ADMIN = "olivia"  # defines the programs
FINANCE = "fiona"  # requests payouts for traders, books wallet purchases, pays, allocates
APPROVER = "arthur"  # approves and rejects (never requests: four eyes)
AUDITOR = "ada"  # reads everything, changes nothing
USERS = ((FINANCE, "finance"), (APPROVER, "approver"), (AUDITOR, "auditor"))

ProgressFn = Callable[[str, int, int, str], None]


class DemoError(Exception):
    """Bad options or a store that already holds events: nothing was changed."""


# Options ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class DemoOptions:
    traders: int = 500
    days: int = 60
    seed: int = 7
    until: datetime | None = None  # the end of the simulated window (aware); None: now

    def checked(self, now: datetime) -> DemoOptions:
        """These options with `until` settled, or DemoError naming what is wrong."""
        if not 1 <= self.traders <= MAX_TRADERS:
            raise DemoError(f"--traders must be from 1 to {MAX_TRADERS}, got {self.traders}")
        if not 1 <= self.days <= MAX_DAYS:
            raise DemoError(f"--days must be from 1 to {MAX_DAYS}, got {self.days}")
        until = (self.until or now).astimezone(UTC)
        if until > now:
            raise DemoError(
                f"--until {until.isoformat()} is in the future: a demo's history ends at the "
                "latest now (leave --until out to end it now)"
            )
        return DemoOptions(self.traders, self.days, self.seed, until)


def parse_until(text: str) -> datetime:
    """`--until`: an RFC 3339 instant, or a date meaning the end of that UTC day (as the
    reports' `to` does)."""
    try:
        if len(text) == 10:
            day = date.fromisoformat(text)
            return datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(days=1)
        instant = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise DemoError(
            f"--until must be a date (2026-03-01) or an RFC 3339 instant, got {text!r}"
        ) from None
    if instant.tzinfo is None:
        raise DemoError(f"--until needs an offset (2026-03-01T18:00:00Z), got {text!r}")
    return instant


# Programs ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProgramSpec:
    body: dict[str, Any]
    weight: float  # share of purchases
    market: str  # "forex" or "futures"
    platform: str  # prefix of its bridge's trade ids
    bridge: str  # the bridge's token subject (recorded as the trades' actor)
    session: tuple[int, int]  # UTC hours in which its trades close: [start, end)

    @property
    def program_id(self) -> str:
        return str(self.body["program_id"])

    @property
    def currency(self) -> str:
        return str(self.body["currency"])

    @property
    def fee(self) -> Money:
        return Money.of(self.body["fee"]["amount"], self.body["fee"]["currency"])

    @property
    def initial_balance(self) -> Decimal:
        return Decimal(self.body["initial_balance"])

    @property
    def daily_allowance(self) -> Decimal:
        """The money one day may lose, the unit a trader's risk is sized by."""
        pct = Decimal(self.body["phases"][0]["max_daily_loss_pct"])
        return self.initial_balance * pct / 100


def _two_step(program_id: str, name: str, currency: str, balance: str, fee: str) -> dict[str, Any]:
    """FTMO's published two-step challenge: 10 % then 5 % targets, 5 % daily and 10 %
    maximum loss (static), 4 trading days per phase, 80 % split rising to 90 %, payouts
    every 14 days, the fee refunded with the first payout."""
    static = {"max_daily_loss_pct": "5", "daily_loss_base": "balance", "max_loss_pct": "10",
              "max_loss_mode": "static", "consistency_max_day_pct": None}  # fmt: skip
    return {
        "program_id": program_id,
        "name": name,
        "currency": currency,
        "initial_balance": balance,
        "fee": {"amount": fee, "currency": currency},
        "day_timezone": "Europe/Prague",
        "day_start": "00:00",
        "phases": [
            {"name": "challenge", "profit_target_pct": "10", "min_trading_days": 4, **static},
            {"name": "verification", "profit_target_pct": "5", "min_trading_days": 4, **static},
        ],
        "funded": {
            **static,
            "profit_split_pct": "80",
            "split_scaling": [{"after_payouts": 4, "profit_split_pct": "90"}],
            "first_payout_after_days": 14,
            "payout_interval_days": 14,
            "min_payout": "50.00",
            "refund_fee_with_first_payout": True,
        },
    }


# One-step programs as FTMO 1-Step and FundedNext Stellar 1-Step publish them: one 10 %
# target, a 3 % daily loss judged on the higher of balance and equity (The5ers style), a 6 %
# trailing maximum loss that locks at the initial balance, weekly payouts at 90 %. The day
# rolls at midnight of the MT5 server's time zone (EET).
ONE_STEP: dict[str, Any] = {
    "program_id": "demo-1step-100k",
    "name": "One-Step 100k",
    "currency": "USD",
    "initial_balance": "100000.00",
    "fee": {"amount": "499.00", "currency": "USD"},
    "day_timezone": "Europe/Athens",
    "day_start": "00:00",
    "phases": [
        {"name": "evaluation", "profit_target_pct": "10", "max_daily_loss_pct": "3",
         "daily_loss_base": "balance_or_equity", "max_loss_pct": "6",
         "max_loss_mode": "trailing", "min_trading_days": 3, "consistency_max_day_pct": None},
    ],
    "funded": {
        "max_daily_loss_pct": "3", "daily_loss_base": "balance_or_equity",
        "max_loss_pct": "6", "max_loss_mode": "trailing", "consistency_max_day_pct": None,
        "profit_split_pct": "90", "split_scaling": [], "first_payout_after_days": 7,
        "payout_interval_days": 7, "min_payout": "100.00",
        "refund_fee_with_first_payout": False,
    },
}  # fmt: skip

# Futures evaluations as Topstep's Trading Combine and Apex publish them for 50k: a $3,000
# target (6 %), a $1,000 daily loss limit (2 %), a $2,000 maximum loss trailing the end-of-day
# balance (4 %, locking at the start balance), the best day at most 50 % of the profit to
# pass and 30 % to be paid (Apex's consistency rule), payouts from $500 every week at 90 %.
# The trading day rolls at 17:00 New York time, as the CME's does.
FUTURES: dict[str, Any] = {
    "program_id": "demo-futures-50k",
    "name": "Futures Combine 50k",
    "currency": "USD",
    "initial_balance": "50000.00",
    "fee": {"amount": "149.00", "currency": "USD"},
    "day_timezone": "America/New_York",
    "day_start": "17:00",
    "phases": [
        {"name": "combine", "profit_target_pct": "6", "max_daily_loss_pct": "2",
         "daily_loss_base": "balance", "max_loss_pct": "4", "max_loss_mode": "trailing_eod",
         "min_trading_days": 5, "consistency_max_day_pct": "50"},
    ],
    "funded": {
        "max_daily_loss_pct": "2", "daily_loss_base": "balance", "max_loss_pct": "4",
        "max_loss_mode": "trailing_eod", "consistency_max_day_pct": "30",
        "profit_split_pct": "90", "split_scaling": [], "first_payout_after_days": 7,
        "payout_interval_days": 7, "min_payout": "500.00",
        "refund_fee_with_first_payout": False,
    },
}  # fmt: skip

PROGRAMS: tuple[ProgramSpec, ...] = (
    ProgramSpec(
        _two_step("demo-2step-100k", "Two-Step Challenge 100k", "USD", "100000.00", "540.00"),
        0.40, "forex", "MT5-", "bridge-mt5", (7, 20),
    ),
    ProgramSpec(
        _two_step("demo-2step-50k-eur", "Two-Step Challenge 50k EUR", "EUR", "50000.00", "345.00"),
        0.12, "forex", "MT5-", "bridge-mt5", (7, 20),
    ),
    ProgramSpec(ONE_STEP, 0.28, "forex", "CTR-", "bridge-ctrader", (7, 20)),
    ProgramSpec(FUTURES, 0.20, "futures", "RTH-", "bridge-rithmic", (14, 20)),
)  # fmt: skip


# Traders ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Profile:
    name: str
    share: float  # of the traders who are not stars
    drift: float  # mean R-multiple of a trade
    spread: float  # scale of the Student-t draw, in R
    risk: Decimal  # money at risk per trade, as a fraction of the program's daily allowance
    trades_per_day: float  # mean, on a day the trader trades
    day_chance: float  # chance to trade on a given weekday
    rebuy_chance: float  # buys another challenge after a breach
    request_chance: float  # asks for an eligible payout on a given business day


STAR = Profile("star", 0.0, 0.8, 0.5, Decimal("0.16"), 4.0, 0.95, 0.0, 0.7)
PROFILES = (
    Profile("skilled", 0.15, 0.3, 0.6, Decimal("0.18"), 3.5, 0.9, 0.5, 0.6),
    Profile("average", 0.50, 0.0, 0.7, Decimal("0.20"), 4.0, 0.8, 0.35, 0.5),
    Profile("gambler", 0.35, -0.1, 0.8, Decimal("0.35"), 6.0, 0.85, 0.45, 0.5),
)
MAX_PURCHASES = 4  # per trader
FUNDED_RISK = Decimal("0.4")  # funded traders risk this share of what they risked to pass
REJECT_EVERY = 4  # the payout desk rejects one review in four (a risk review's findings)
REVIEW_AFTER_DAYS = 1  # business days from a request to its review (approve or reject)
# The payout desk works after the trading sessions close (20:00 UTC), so an approval's
# withdrawal comes after the day's trades: the floors of the day it happens stay as they
# were (`domain.rules.after_withdrawal`), and a trade after it the same day could fall
# through a daily floor the withdrawal alone put above the balance.
DESK_TIME = time_of_day(20, 30, tzinfo=UTC)
PAY_AFTER_DAYS = 2  # business days from an approval to the bank transfer
# When a trader asks for an eligible payout. Strong traders take turns at these habits, so
# that even a small firm ends with its queue at every stage: most ask at once (paid, some
# rejected), some wait for the window's last three business days (approved, not yet paid,
# when it ends), some for its last (requested), and one in five lets profit grow (eligible,
# not asked for).
ASKS_WHEN_ELIGIBLE = "when eligible"
ASKS_LATE = "in the last three business days"
ASKS_LAST_DAY = "on the last business day"
NEVER_ASKS = "lets profit grow"
STAR_HABITS = (ASKS_WHEN_ELIGIBLE, ASKS_LATE, ASKS_WHEN_ELIGIBLE, ASKS_LAST_DAY, NEVER_ASKS)
REJECTION_REASONS = (
    "risk review: the same trades were copied on another firm's account",
    "risk review: profit made on restricted news releases",
    "KYC: the identity document has expired",
    "risk review: hedged positions across two accounts",
)


@dataclass
class DemoTrader:
    index: int
    trader_id: str
    profile: Profile
    star: bool
    habit: str = ASKS_WHEN_ELIGIBLE  # when they ask for an eligible payout
    wallet: bool = False  # tops up a wallet and buys from it
    purchases: int = 0
    suspended: bool = False


@dataclass
class LiveAccount:
    """What the demo's traders know of an account: refreshed from the ledger every evening."""

    account_id: str
    trader: DemoTrader
    spec: ProgramSpec
    stage: str
    balance: Decimal
    opened_at: datetime
    status: str = "active"
    suspended: bool = False
    idle: bool = False  # refunded: the trader never trades it
    trades: int = 0
    dirty: bool = False  # something happened to it since the last evening's look

    @property
    def funded(self) -> bool:
        return self.stage == "funded"

    @property
    def trading(self) -> bool:
        return self.status == "active" and not self.suspended and not self.idle


@dataclass
class Tally:
    trades: int = 0
    equity_marks: int = 0
    checkouts: int = 0
    deposits: int = 0
    wallet_purchases: int = 0
    unallocated: int = 0
    allocated: int = 0
    refunds: int = 0
    disputes: Counter[str] = field(default_factory=Counter)
    webhooks: int = 0
    payout_actions: Counter[str] = field(default_factory=Counter)
    eligible_waiting: int = 0


# The simulated clock -------------------------------------------------------------------------


class SimClock:
    """The ledger's clock during a demo: set by the simulation, never back, never past
    `until` (which is never past the real now)."""

    def __init__(self, start: datetime, until: datetime) -> None:
        self.now = start
        self.until = until

    def __call__(self) -> datetime:
        return self.now

    def advance(self, instant: datetime) -> None:
        assert instant <= self.until, "the demo must not record past its end"
        if instant > self.now:
            self.now = instant


# Building -----------------------------------------------------------------------------------


@dataclass
class DemoSummary:
    options: DemoOptions
    start: datetime
    events: int
    tally: Tally
    accounts: dict[tuple[str, str], int]
    breaches: int
    passes: int
    payouts: dict[str, int]
    trial_balance: list[dict[str, Any]]
    balanced: bool
    seconds: float
    secret_source: str

    def lines(self) -> list[str]:
        tally, until = self.tally, self.options.until
        assert until is not None
        by_stage: dict[str, list[str]] = {}
        for (stage, status), count in sorted(self.accounts.items()):
            by_stage.setdefault(stage, []).append(f"{count} {status}")
        disputes = ", ".join(f"{n} {k}" for k, n in sorted(tally.disputes.items())) or "none"
        totals = ", ".join(
            f"{row['currency']} {row['debit']} = {row['credit']}" for row in self.trial_balance
        )
        return [
            f"demo firm: {self.options.traders} traders, {self.options.days} days "
            f"({self.start:%Y-%m-%d %H:%M} to {until:%Y-%m-%d %H:%M} UTC), "
            f"seed {self.options.seed}",
            f"  events: {self.events:,}; trades: {tally.trades:,}; "
            f"equity marks: {tally.equity_marks:,}",
            "  accounts: "
            + "; ".join(f"{stage}: {', '.join(parts)}" for stage, parts in by_stage.items()),
            f"  breaches: {self.breaches}; passes: {self.passes}",
            "  payouts: "
            + (", ".join(f"{n} {status}" for status, n in sorted(self.payouts.items())) or "none")
            + f"; {tally.eligible_waiting} accounts eligible, not yet requested",
            f"  payments (Stripe webhooks, {self.secret_source}): {tally.checkouts} checkouts, "
            f"{tally.deposits} wallet deposits ({tally.wallet_purchases} wallet purchases), "
            f"{tally.unallocated} unallocated ({tally.allocated} matched by finance), "
            f"{tally.refunds} refunds; disputes: {disputes}",
            f"  trial balance: {'sums to zero' if self.balanced else 'DOES NOT BALANCE'} "
            f"({totals})",
            f"  built in {self.seconds:.1f}s",
        ]


def build_demo(
    database_url: str,
    options: DemoOptions,
    *,
    webhook_secret: str,
    secret_source: str = "STRIPE_WEBHOOK_SECRET",  # noqa: S107 (a name, not a secret)
    progress: ProgressFn | None = None,
) -> DemoSummary:
    """Builds the demo firm into the empty store at `database_url`; DemoError (and nothing
    changed but pending migrations) when the store already holds events."""
    started = time.monotonic()
    options = options.checked(datetime.now(UTC))
    assert options.until is not None
    start = options.until - timedelta(days=options.days)
    migrate(database_url)
    clock = SimClock(start, options.until)
    ledger = PropLedger(database_url, clock=clock, stamp_events=True)
    database = Database(database_url)
    try:
        existing = ledger.position()
        if existing:
            raise DemoError(
                f"the store already holds {existing:,} events: the demo builds a firm only in "
                "an empty store (point PROPLEDGER_DATABASE_URL at a new file or database)"
            )
        firm = _Firm(ledger, clock, options, webhook_secret, progress)
        firm.run()
        _catch_up(ledger, database, progress)
        return _summary(ledger, database, firm, start, started, secret_source)
    finally:
        database.close()
        ledger.close()


def _catch_up(ledger: PropLedger, database: Database, progress: ProgressFn | None) -> None:
    runner = ProjectionRunner(ledger, database, default_projections())
    end, shown = ledger.position(), -1
    while runner.run_once() > 0:
        shown = min(runner.lowest_position(), end)
        if progress:
            progress("projections", shown, end, "")
    if progress and shown < end:
        progress("projections", end, end, "")


def _summary(
    ledger: PropLedger,
    database: Database,
    firm: _Firm,
    start: datetime,
    started: float,
    secret_source: str,
) -> DemoSummary:
    rows = database.query(
        "SELECT stage, status, COUNT(*) AS n FROM account_board GROUP BY stage, status"
    )
    counts = database.query(
        "SELECT SUM(CASE WHEN breach IS NOT NULL THEN 1 ELSE 0 END) AS breaches, "
        "SUM(CASE WHEN passed_at IS NOT NULL THEN 1 ELSE 0 END) AS passes FROM account_board"
    )
    payouts = database.query("SELECT status, COUNT(*) AS n FROM payout_board GROUP BY status")
    balance = trial_balance(database)
    return DemoSummary(
        options=firm.options,
        start=start,
        events=ledger.position(),
        tally=firm.tally,
        accounts={(row["stage"], row["status"]): int(row["n"]) for row in rows},
        breaches=int(counts[0]["breaches"] or 0),
        passes=int(counts[0]["passes"] or 0),
        payouts={row["status"]: int(row["n"]) for row in payouts},
        trial_balance=balance["totals"],
        balanced=all(row["debit"] == row["credit"] for row in balance["totals"]),
        seconds=time.monotonic() - started,
        secret_source=secret_source,
    )


# The simulation ------------------------------------------------------------------------------


def _student_t(rng: Random, degrees: float = 3.0) -> float:
    """A Student-t draw: normal over the root of a scaled chi-square (fat tails)."""
    chi_square = rng.gammavariate(degrees / 2, 2.0)
    return rng.gauss(0.0, 1.0) / math.sqrt(max(chi_square, 1e-9) / degrees)


def _r_multiple(value: float) -> Decimal:
    """A dimensionless draw as an exact Decimal (4 places), clipped to what stops allow."""
    clipped = min(max(value, -8.0), 12.0)
    return Decimal(f"{clipped:.4f}")


def _quantize(amount: Decimal, currency: str) -> Decimal:
    return amount.quantize(Decimal(1).scaleb(-minor_unit_exponent(currency)), ROUND_HALF_EVEN)


def _stamp(instant: datetime) -> str:
    return instant.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _business_day_after(instant: datetime, days: int) -> datetime:
    """`days` business days after `instant`'s day, at the payout desk's hour."""
    day = instant.date()
    while days > 0:
        day += timedelta(days=1)
        if day.weekday() < 5:
            days -= 1
    return datetime.combine(day, DESK_TIME)


def _front_month(symbol: str, day: date) -> str:
    """A quarterly CME contract code (ESZ5): the next of March, June, September, December,
    rolled to the next quarter in the second week of the expiry month."""
    month = day.month
    if month % 3 == 0 and day.day > 10:
        month += 1
    quarter = ((month - 1) // 3 + 1) * 3
    year = day.year + (1 if quarter > 12 else 0)
    quarter = quarter - 12 if quarter > 12 else quarter
    return f"{symbol}{'HMUZ'[quarter // 3 - 1]}{year % 10}"


FOREX_SYMBOLS = (("EURUSD", 30), ("GBPUSD", 15), ("XAUUSD", 20), ("US30.cash", 10),
                 ("NAS100", 10), ("USDJPY", 10), ("GER40.cash", 5))  # fmt: skip
# Futures: root, tick value in USD, round-turn commission per contract, weight.
FUTURES_SYMBOLS = (("ES", Decimal("12.50"), Decimal("4.18"), 35),
                   ("NQ", Decimal("5.00"), Decimal("4.18"), 25),
                   ("MES", Decimal("1.25"), Decimal("1.34"), 20),
                   ("MNQ", Decimal("0.50"), Decimal("1.34"), 20))  # fmt: skip
COMMISSION_PER_LOT = Decimal("7.00")
RISK_PER_LOT = Decimal(400)  # a 40-pip stop on a standard EURUSD lot


class _Firm:
    """Runs the firm day by day: one queue of timed actions, the clock following it."""

    def __init__(
        self,
        ledger: PropLedger,
        clock: SimClock,
        options: DemoOptions,
        secret: str,
        progress: ProgressFn | None,
    ) -> None:
        assert options.until is not None
        self.ledger, self.clock, self.options, self.secret = ledger, clock, options, secret
        self.progress = progress
        self.until = options.until
        self.start = clock.now
        # Separate streams, so that a change in how one thing is drawn leaves the others.
        # (Seeded on purpose: demo data must repeat; nothing here is a secret.)
        self.rng_people = Random(f"{options.seed}/people")  # noqa: S311
        self.rng_market = Random(f"{options.seed}/market")  # noqa: S311
        self.rng_money = Random(f"{options.seed}/money")  # noqa: S311
        self.rng_ids = Random(f"{options.seed}/ids")  # noqa: S311
        self.queue: list[tuple[datetime, int, Callable[[], None]]] = []
        self.sequence = itertools.count()
        self.trade_numbers = itertools.count(4_100_000)
        self.traders = self._traders()
        self.accounts: dict[str, LiveAccount] = {}
        self.slots: dict[datetime, list[tuple[datetime, str, dict[str, Any]]]] = {}
        self.payouts: dict[str, tuple[str, datetime]] = {}  # payout -> (status, next step)
        self.payout_accounts: dict[str, LiveAccount] = {}
        self.reviews = 0
        self.requests = 0
        self.final_desks = _final_desks(self.start, self.until)
        self.tally = Tally()
        self.plain_purchases = 0  # paid by card, by traders who are not stars

    # Scheduling -------------------------------------------------------------------------

    def at(self, instant: datetime, action: Callable[[], None]) -> None:
        """Runs `action` at `instant` of simulated time (dropped if past the window)."""
        if self.start <= instant <= self.until:
            heapq.heappush(self.queue, (instant, next(self.sequence), action))

    def run(self) -> None:
        for spec in PROGRAMS:
            self.ledger.define_program(spec.body, actor=ADMIN)
        for trader in self.traders:
            self.at(self._arrival(trader), partial(self._purchase, trader))
        self._schedule_unallocated()
        days = (self.until.date() - self.start.date()).days + 1
        for offset in range(days):
            day = self.start.date() + timedelta(days=offset)
            if day.weekday() < 5:
                self._schedule_trading_day(day)
            end = datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(days=1)
            while self.queue and self.queue[0][0] < end:
                instant, _, action = heapq.heappop(self.queue)
                self.clock.advance(instant)
                action()
            if self.progress:
                self.progress(
                    "firm", offset + 1, days, f"{day:%Y-%m-%d}, {self.tally.trades:,} trades"
                )

    def _traders(self) -> list[DemoTrader]:
        stars = min(self.options.traders, max(10, round(self.options.traders * 0.04)))
        traders = []
        for index in range(self.options.traders):
            star = index < stars
            profile = STAR if star else self._pick_profile()
            traders.append(
                DemoTrader(
                    index=index,
                    trader_id=f"demo-trader-{index + 1:04d}",
                    profile=profile,
                    star=star,
                    habit=STAR_HABITS[index % len(STAR_HABITS)] if star else ASKS_WHEN_ELIGIBLE,
                    wallet=not star and (index - stars) % 25 == 1,
                )
            )
        return traders

    def _pick_profile(self) -> Profile:
        roll, total = self.rng_people.random(), 0.0
        for profile in PROFILES:
            total += profile.share
            if roll < total:
                return profile
        return PROFILES[-1]

    def _arrival(self, trader: DemoTrader) -> datetime:
        """Stars come early enough to reach payouts; others arrive all along the window,
        more of them early (a firm with a history)."""
        days = self.options.days
        roll = self.rng_people.random()
        if trader.star:
            offset = roll * min(days * 0.3, max(0.5, days - 22.0))
        else:
            offset = days * roll**1.6
        return self.start + timedelta(seconds=int(offset * 86_400))

    def _pick_program(self, trader: DemoTrader) -> ProgramSpec:
        choices = PROGRAMS
        if trader.star and self.options.days < 35:
            # Two-step programs need ~4 weeks to a first payout: short windows skip them.
            choices = tuple(spec for spec in PROGRAMS if len(spec.body["phases"]) == 1)
        roll = self.rng_people.random() * sum(spec.weight for spec in choices)
        for spec in choices:
            roll -= spec.weight
            if roll < 0:
                return spec
        return choices[-1]

    # Payments ---------------------------------------------------------------------------

    def _stripe_id(self, prefix: str) -> str:
        return f"{prefix}{self.rng_ids.getrandbits(96):024x}"

    def _deliver(self, event_type: str, obj: dict[str, Any]) -> str:
        """Sends one Stripe event through the signature check and into the ledger."""
        event = {
            "id": self._stripe_id("evt_"),
            "object": "event",
            "api_version": "2024-06-20",
            "created": int(self.clock.now.timestamp()),
            "data": {"object": obj},
            "livemode": False,
            "pending_webhooks": 1,
            "type": event_type,
        }
        body = json.dumps(event, separators=(",", ":"))
        # Signed now, on the wall clock: Stripe's scheme refuses old signatures (300 s).
        header = stripe.WebhookSignature.generate_signature_header(body, self.secret)
        verified = verify_stripe_event(body.encode(), header, self.secret)
        outcome, _, _ = self.ledger.apply_stripe_event(verified)
        self.tally.webhooks += 1
        return outcome

    def _checkout(
        self, amount: Money, metadata: dict[str, str], *, discount: int = 0
    ) -> tuple[str, str]:
        """A paid Checkout Session: (payment intent, charge)."""
        intent, charge = self._stripe_id("pi_"), self._stripe_id("ch_")
        total = amount.minor_units - discount
        session = {
            "id": self._stripe_id("cs_test_"),
            "object": "checkout.session",
            "amount_subtotal": amount.minor_units,
            "amount_total": total,
            "currency": amount.currency.lower(),
            "customer": self._stripe_id("cus_"),
            "metadata": metadata,
            "mode": "payment",
            "payment_intent": intent,
            "payment_status": "paid",
            "status": "complete",
            "total_details": {"amount_discount": discount, "amount_shipping": 0, "amount_tax": 0},
        }
        self._deliver("checkout.session.completed", session)
        return intent, charge

    def _purchase(self, trader: DemoTrader) -> None:
        spec = self._pick_program(trader)
        trader.purchases += 1
        if trader.wallet and trader.purchases == 1:
            self._wallet_purchase(trader, spec)
            return
        discount = 0
        if self.rng_money.random() < 0.15:  # a coupon: 10 or 20 % off
            discount = spec.fee.minor_units // self.rng_money.choice((10, 5))
        metadata = {"trader_id": trader.trader_id, "program_id": spec.program_id}
        intent, charge = self._checkout(spec.fee, metadata, discount=discount)
        self.tally.checkouts += 1
        account = self._open(trader, spec, f"stripe:{intent}")
        paid = Money.from_minor_units(spec.fee.minor_units - discount, spec.currency)
        if trader.star:
            return
        # A few of each, at rates like a real shop's, and at least one of each in a small firm.
        self.plain_purchases += 1
        number, roll = self.plain_purchases, self.rng_money.random()
        if number == 2 or roll < 0.025:
            # Changed their mind before trading: the whole fee back, the account never trades.
            account.idle = True
            later = self.clock.now + timedelta(hours=self.rng_money.uniform(2, 48))
            self.at(later, lambda: self._refund(intent, charge, paid, paid.minor_units))
        elif number == 5 or roll < 0.045:
            part = paid.minor_units // 5  # a goodwill credit
            later = self.clock.now + timedelta(days=self.rng_money.uniform(1, 6))
            self.at(later, lambda: self._refund(intent, charge, paid, part))
        elif number == 3 or roll < 0.065:
            self._schedule_dispute(trader, intent, charge, paid)

    def _open(self, trader: DemoTrader, spec: ProgramSpec, purchase_id: str) -> LiveAccount:
        account_id = str(first_account_id(purchase_id))
        live = LiveAccount(
            account_id, trader, spec, "phase-1", spec.initial_balance, self.clock.now
        )
        self.accounts[account_id] = live
        return live

    def _wallet_purchase(self, trader: DemoTrader, spec: ProgramSpec) -> None:
        """A trader who tops up a wallet first (card via Checkout, or a bank debit reported
        as a PaymentIntent), then buys from it; what is left stays in the wallet."""
        deposit = Money.of(str((spec.fee.amount // 100 + 2) * 100), spec.currency)
        metadata = {"trader_id": trader.trader_id, "purpose": "wallet_deposit"}
        if trader.index % 2:
            self._checkout(deposit, metadata)
        else:
            intent = self._stripe_id("pi_")
            self._deliver(
                "payment_intent.succeeded",
                {"id": intent, "object": "payment_intent", "amount": deposit.minor_units,
                 "amount_received": deposit.minor_units, "currency": spec.currency.lower(),
                 "metadata": metadata, "status": "succeeded"},
            )  # fmt: skip
        self.tally.deposits += 1
        purchase_id = f"shop-{self._stripe_id('')[:12]}"
        self.ledger.purchase(
            {"purchase_id": purchase_id, "trader_id": trader.trader_id,
             "program_id": spec.program_id, "method": "wallet",
             "amount": str(spec.fee.amount), "currency": spec.currency},
            actor=FINANCE,
        )  # fmt: skip
        self.tally.wallet_purchases += 1
        self._open(trader, spec, purchase_id)

    def _refund(self, intent: str, charge: str, paid: Money, cumulative: int) -> None:
        self._deliver(
            "charge.refunded",
            {"id": charge, "object": "charge", "amount": paid.minor_units,
             "amount_captured": paid.minor_units, "amount_refunded": cumulative,
             "currency": paid.currency.lower(), "payment_intent": intent, "paid": True,
             "refunded": cumulative >= paid.minor_units, "status": "succeeded"},
        )  # fmt: skip
        self.tally.refunds += 1

    def _schedule_dispute(self, trader: DemoTrader, intent: str, charge: str, paid: Money) -> None:
        """A chargeback: opened days after the purchase (the trader is suspended), funds
        withdrawn with a 15.00 fee, then won (funds reinstated) or lost weeks later; one
        still open when the window ends stays open."""
        dispute_id = self._stripe_id("dp_")
        opened = self.clock.now + timedelta(days=self.rng_money.uniform(2, 10))
        closed = opened + timedelta(days=self.rng_money.uniform(6, 20))
        won = self.rng_money.random() < 0.55
        fee = 1500 if paid.minor_units >= 1500 else 0

        def dispute(event_type: str, status: str, transactions: list[dict[str, Any]]) -> None:
            self._deliver(
                event_type,
                {"id": dispute_id, "object": "dispute", "amount": paid.minor_units,
                 "balance_transactions": transactions, "charge": charge,
                 "currency": paid.currency.lower(), "payment_intent": intent,
                 "reason": "fraudulent", "status": status},
            )  # fmt: skip

        def withdrawal(sign: int, fee_minor: int) -> dict[str, Any]:
            return {"id": self._stripe_id("txn_"), "object": "balance_transaction",
                    "amount": sign * paid.minor_units, "currency": paid.currency.lower(),
                    "fee": fee_minor, "type": "adjustment"}  # fmt: skip

        def open_dispute() -> None:
            dispute("charge.dispute.created", "needs_response", [])
            dispute("charge.dispute.funds_withdrawn", "needs_response", [withdrawal(-1, fee)])
            trader.suspended = True
            self.tally.disputes["open"] += 1
            self._touch(trader)

        def close_dispute() -> None:
            self.tally.disputes["open"] -= 1
            if won:
                dispute(
                    "charge.dispute.funds_reinstated",
                    "won",
                    [withdrawal(-1, fee), withdrawal(1, 0)],
                )
                dispute("charge.dispute.closed", "won", [])
                trader.suspended = False
                self.tally.disputes["won"] += 1
                self._touch(trader)
            else:
                dispute("charge.dispute.closed", "lost", [withdrawal(-1, fee)])
                self.tally.disputes["lost"] += 1

        self.at(opened, open_dispute)
        self.at(closed, close_dispute)

    def _touch(self, trader: DemoTrader) -> None:
        """The trader's accounts changed (suspended, reinstated): look at them tonight."""
        for live in self.accounts.values():
            if live.trader is trader:
                live.dirty = True

    def _schedule_unallocated(self) -> None:
        """Payments through a payment link that lost its metadata: unallocated until
        finance matches them. The first is matched days later; the last one waits."""
        count = max(2, self.options.traders // 80)
        for number in range(count):
            spec = PROGRAMS[number % len(PROGRAMS)]
            instant = self.start + timedelta(days=self.options.days * (0.1 + 0.7 * number / count))
            matched = number == 0
            self.at(instant, partial(self._unallocated, spec, matched))

    def _unallocated(self, spec: ProgramSpec, matched: bool) -> None:
        intent, _ = self._checkout(spec.fee, {})
        self.tally.unallocated += 1
        if not matched:
            return
        trader = DemoTrader(
            index=len(self.traders), trader_id=f"demo-trader-{len(self.traders) + 1:04d}",
            profile=PROFILES[0], star=False, purchases=1,
        )  # fmt: skip
        self.traders.append(trader)

        def allocate() -> None:
            self.ledger.allocate_payment(
                intent, {"trader_id": trader.trader_id, "program_id": spec.program_id}, FINANCE
            )
            self.tally.allocated += 1
            self._open(trader, spec, f"stripe:{intent}")

        self.at(self.clock.now + timedelta(days=self.rng_money.uniform(1, 3)), allocate)

    # Trading ----------------------------------------------------------------------------

    def _schedule_trading_day(self, day: date) -> None:
        midnight = datetime(day.year, day.month, day.day, tzinfo=UTC)
        self.at(midnight + timedelta(hours=6), lambda: self._open_session(day))
        self.at(datetime.combine(day, DESK_TIME), self._payout_desk)
        self.at(midnight + timedelta(hours=21, minutes=30), self._evening)

    def _open_session(self, day: date) -> None:
        """Overnight equity marks, then the day's trades. Bridges upload twice a day: at
        noon UTC what closed in the morning, at the session's close the rest."""
        self.slots = {}
        noon = datetime(day.year, day.month, day.day, 12, tzinfo=UTC)
        for live in list(self.accounts.values()):
            if not live.trading:
                continue
            profile = live.trader.profile
            # Funded accounts get no marks: after an approved payout, a mark from before it
            # would stay the next day's base for a daily loss judged on the higher of
            # balance and equity (`domain.rules._roll_day`), far above the new balance.
            if live.trades and not live.funded and self.rng_market.random() < 0.12:
                self._equity_mark(live)
            if self.rng_market.random() >= profile.day_chance:
                continue
            for trade_time, body in self._day_trades(live, day):
                close = noon.replace(hour=live.spec.session[1])
                slot = min(noon if trade_time < noon else close, self.until)
                if slot not in self.slots:
                    self.slots[slot] = []
                    self.at(slot, partial(self._send_slot, slot))
                self.slots[slot].append((trade_time, live.account_id, body))

    def _risk(self, live: LiveAccount) -> Decimal:
        risk = live.spec.daily_allowance * live.trader.profile.risk
        if live.funded:
            risk *= FUNDED_RISK  # a funded trader protects the account
        return _quantize(risk, live.spec.currency)

    def _equity_mark(self, live: LiveAccount) -> None:
        """An open position marked at the session's open: mostly under water."""
        swing = abs(_student_t(self.rng_market))
        sign = -1 if self.rng_market.random() < 0.8 else 1
        floating = _r_multiple(sign * swing * 0.9) * self._risk(live)
        equity = _quantize(live.balance + floating, live.spec.currency)
        at = self.clock.now - timedelta(minutes=self.rng_market.randint(1, 50))
        self.ledger.record_equity(
            live.account_id, {"equity": str(equity), "at": _stamp(at)}, actor=live.spec.bridge
        )
        live.dirty = True
        self.tally.equity_marks += 1

    def _day_trades(self, live: LiveAccount, day: date) -> list[tuple[datetime, dict[str, Any]]]:
        profile, rng = live.trader.profile, self.rng_market
        count = 1 + _poisson(rng, profile.trades_per_day - 1)
        first, last = live.spec.session
        midnight = datetime(day.year, day.month, day.day, tzinfo=UTC)
        trades = []
        for _ in range(min(count, 15)):
            closed = midnight + timedelta(seconds=rng.randint(first * 3600, last * 3600 - 90))
            if closed > self.until:
                continue
            r = _r_multiple(profile.drift + profile.spread * _student_t(rng))
            trades.append((closed, self._trade_body(live, closed, r)))
        return sorted(trades, key=lambda item: item[0])

    def _trade_body(self, live: LiveAccount, closed: datetime, r: Decimal) -> dict[str, Any]:
        rng, spec, currency = self.rng_market, live.spec, live.spec.currency
        held = timedelta(minutes=rng.randint(2, 300))
        if rng.random() < 0.1:
            held += timedelta(days=rng.randint(1, 2))  # held overnight: swap is charged
        held = min(held, closed - live.opened_at)
        risk = self._risk(live)
        swap = Decimal(0)
        if spec.market == "futures":
            root, tick, round_turn, _ = _weighted(rng, FUTURES_SYMBOLS, 3)
            contracts = max(1, int(risk / (tick * 12)))
            ticks = int((r * risk / (tick * contracts)).to_integral_value(ROUND_HALF_EVEN))
            profit = tick * contracts * ticks
            commission = -(round_turn * contracts)
            symbol, volume = _front_month(root, closed.date()), Decimal(contracts)
            held = min(held, timedelta(minutes=300))  # futures here are day trades
        else:
            symbol = _weighted(rng, FOREX_SYMBOLS, 1)[0]
            volume = max(Decimal("0.01"), (risk / RISK_PER_LOT).quantize(Decimal("0.01")))
            commission = -_quantize(volume * COMMISSION_PER_LOT, currency)
            if held >= timedelta(days=1):
                swap = -_quantize(volume * Decimal(rng.randint(50, 400)) / 100, currency)
            profit = _quantize(r * risk, currency) - commission - swap
        live.trades += 1
        return {
            "trade_id": f"{spec.platform}{next(self.trade_numbers)}",
            "symbol": symbol,
            "side": "buy" if rng.random() < 0.55 else "sell",
            "volume": str(volume),
            "opened_at": _stamp(closed - held),
            "closed_at": _stamp(closed),
            "profit": str(_quantize(profit, currency)),
            "commission": str(commission),
            "swap": str(swap),
        }

    def _send_slot(self, slot: datetime) -> None:
        """An upload's trades, in the order they closed, through the batched path."""
        trades = sorted(self.slots.pop(slot, []), key=lambda item: (item[0], item[2]["trade_id"]))
        by_bridge: dict[str, list[dict[str, Any]]] = {}
        for _, account_id, body in trades:
            live = self.accounts[account_id]
            live.dirty = True
            by_bridge.setdefault(live.spec.bridge, []).append({"account_id": account_id, **body})
        for bridge, items in by_bridge.items():
            for begin in range(0, len(items), BATCH_TRADES):
                batch = items[begin : begin + BATCH_TRADES]
                results, _ = self.ledger.record_trades_batch(batch, actor=bridge)
                refused = [result for result in results if result.result == "rejected"]
                assert not refused, f"the demo sent a trade the ledger refused: {refused[0]}"
                self.tally.trades += len(batch)

    def _evening(self) -> None:
        """What the traders see at the end of the day: passes open new accounts, breached
        traders may buy again."""
        for live in list(self.accounts.values()):
            if live.status != "active" or not live.dirty:
                continue
            live.dirty = False
            account = self.ledger.account(live.account_id)
            live.balance = account.state.balance.amount
            live.suspended = account.suspended
            if account.status == live.status:
                continue
            live.status = account.status
            if account.status == "passed" and account.next_account_id:
                opened = self.ledger.account(account.next_account_id)
                self.accounts[str(opened.id)] = LiveAccount(
                    str(opened.id), live.trader, live.spec, opened.stage,
                    opened.state.balance.amount, self.clock.now,
                )  # fmt: skip
            elif account.status == "breached":
                self._maybe_rebuy(live.trader)

    def _maybe_rebuy(self, trader: DemoTrader) -> None:
        if trader.purchases >= MAX_PURCHASES or trader.suspended:
            return
        if self.rng_people.random() < trader.profile.rebuy_chance:
            later = self.clock.now + timedelta(hours=self.rng_people.uniform(10, 6 * 24))
            self.at(later, lambda: self._purchase(trader))

    # Payouts ----------------------------------------------------------------------------

    def _payout_desk(self) -> None:
        """The business day's payout round: pay what was approved, review what was asked
        for, then traders (or finance for them) ask for what has become eligible."""
        now = self.clock.now
        for payout_id, (status, due) in list(self.payouts.items()):
            if status == "approved" and due <= now:
                reference = f"WIRE-{now:%Y%m%d}-{self._stripe_id('')[:6].upper()}"
                self.ledger.mark_payout_paid(payout_id, FINANCE, reference)
                self.payouts[payout_id] = ("paid", due)
                self.tally.payout_actions["paid"] += 1
        for payout_id, (status, due) in list(self.payouts.items()):
            if status == "requested" and due <= now:
                self._review(payout_id)
        self.tally.eligible_waiting = 0
        for live in list(self.accounts.values()):
            if live.funded and live.trading:
                self._maybe_request(live)

    def _review(self, payout_id: str) -> None:
        self.reviews += 1
        if self.reviews % REJECT_EVERY == 2:
            reason = REJECTION_REASONS[(self.reviews // REJECT_EVERY) % len(REJECTION_REASONS)]
            self.ledger.reject_payout(payout_id, APPROVER, reason)
            self.payouts[payout_id] = ("rejected", self.clock.now)
            self.tally.payout_actions["rejected"] += 1
            return
        try:
            self.ledger.approve_payout(payout_id, APPROVER)
        except Conflict:
            return  # the trader was suspended meanwhile: it waits in the queue
        live = self.payout_accounts[payout_id]
        due = _business_day_after(self.clock.now, PAY_AFTER_DAYS)
        self.payouts[payout_id] = ("approved", due)
        live.dirty = True  # the profit left its balance
        self.tally.payout_actions["approved"] += 1

    def _asks_now(self, trader: DemoTrader) -> bool:
        now, (third_last, _, last) = self.clock.now, self.final_desks
        if trader.habit == ASKS_LATE:
            return now >= third_last
        if trader.habit == ASKS_LAST_DAY:
            return now >= last
        if trader.habit == NEVER_ASKS:
            return False
        return self.rng_people.random() < trader.profile.request_chance

    def _maybe_request(self, live: LiveAccount) -> None:
        account = self.ledger.account(live.account_id)
        trader = self.ledger.trader(live.trader.trader_id)
        eligibility = account.payout_eligibility(
            now=self.clock.now, trader_suspended=trader.is_suspended
        )
        if eligibility.reasons():
            return
        if not self._asks_now(live.trader):
            self.tally.eligible_waiting += 1
            return
        # Most traders ask themselves; finance asks for every third (a trader who wrote in).
        self.requests += 1
        by = FINANCE if self.requests % 3 == 2 else live.trader.trader_id
        try:
            payout, _ = self.ledger.request_payout(live.account_id, by)
        except PayoutRefused:
            return
        due = _business_day_after(self.clock.now, REVIEW_AFTER_DAYS)
        self.payouts[str(payout.id)] = ("requested", due)
        self.payout_accounts[str(payout.id)] = live
        self.tally.payout_actions["requested"] += 1


def _final_desks(start: datetime, until: datetime) -> tuple[datetime, datetime, datetime]:
    """The instants of the window's last three payout rounds (business days, DESK_TIME);
    in a window too short for three, the missing ones never come."""
    desks: list[datetime] = []
    day = until.date()
    while len(desks) < 3 and day >= start.date():
        desk = datetime.combine(day, DESK_TIME)
        if day.weekday() < 5 and start <= desk <= until:
            desks.insert(0, desk)
        day -= timedelta(days=1)
    never = until + timedelta(days=1)
    desks = [never] * (3 - len(desks)) + desks
    return desks[0], desks[1], desks[2]


def _poisson(rng: Random, mean: float) -> int:
    """Knuth's method: fine for the small means of trades per day."""
    if mean <= 0:
        return 0
    limit, count, product = math.exp(-mean), 0, rng.random()
    while product > limit:
        count += 1
        product *= rng.random()
    return count


def _weighted(rng: Random, choices: tuple[Any, ...], weight_at: int) -> Any:
    roll = rng.random() * sum(choice[weight_at] for choice in choices)
    for choice in choices:
        roll -= choice[weight_at]
        if roll < 0:
            return choice
    return choices[-1]
