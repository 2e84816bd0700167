"""Programs: the published rule set a trader buys, with evaluation phases and a funded stage.

`ProgramDefinition.parse` validates a program definition (the JSON body of `POST /v1/programs`) and
reports every problem at once; `ProgramDefinition.to_dict` gives back its canonical form, which is
what events store and what the API shows.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import time
from decimal import Decimal
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from domain.errors import DomainError, InvalidProgram
from domain.money import Money, check_currency, parse_decimal

DAILY_LOSS_BASES = ("balance", "balance_or_equity")
MAX_LOSS_MODES = ("static", "trailing", "trailing_eod")
FUNDED_STAGE = "funded"
MAX_PHASES = 10
# A percentage's decimal places: far more than any program needs, and few enough that every
# product of a percentage and an amount is computed exactly (domain.money.exact_product).
MAX_PCT_PLACES = 20

_PROGRAM_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_DAY_START_PATTERN = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")


def stage_code(phase_index: int) -> str:
    """Stage name of the zero-based evaluation phase index: `phase-1`, `phase-2`, ..."""
    return f"phase-{phase_index + 1}"


@dataclass(frozen=True, slots=True)
class StageRules:
    """The rules one trading account is judged by (one evaluation phase or the funded stage)."""

    stage: str
    name: str
    max_daily_loss_pct: Decimal
    daily_loss_base: str
    max_loss_pct: Decimal
    max_loss_mode: str
    min_trading_days: int
    consistency_max_day_pct: Decimal | None
    profit_target_pct: Decimal | None  # None for the funded stage

    @property
    def is_funded(self) -> bool:
        return self.stage == FUNDED_STAGE


@dataclass(frozen=True, slots=True)
class SplitTier:
    after_payouts: int
    profit_split_pct: Decimal


@dataclass(frozen=True, slots=True)
class FundedTerms:
    profit_split_pct: Decimal
    split_scaling: tuple[SplitTier, ...]
    first_payout_after_days: int
    payout_interval_days: int
    min_payout: Money
    refund_fee_with_first_payout: bool


@dataclass(frozen=True, slots=True)
class ProgramDefinition:
    program_id: str
    name: str
    currency: str
    initial_balance: Money
    fee: Money
    day_timezone: str
    day_start: time
    phases: tuple[StageRules, ...]
    funded: StageRules
    funded_terms: FundedTerms

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.day_timezone)

    def stage_rules(self, stage: str) -> StageRules:
        if stage == FUNDED_STAGE:
            return self.funded
        for rules in self.phases:
            if rules.stage == stage:
                return rules
        raise DomainError(f"program {self.program_id} has no stage {stage!r}")

    def next_stage(self, stage: str) -> str:
        """The stage opened when `stage` is passed."""
        codes = [rules.stage for rules in self.phases]
        position = codes.index(stage)
        return codes[position + 1] if position + 1 < len(codes) else FUNDED_STAGE

    @property
    def first_stage(self) -> str:
        return self.phases[0].stage

    # Parsing -----------------------------------------------------------------------

    @classmethod
    def parse(cls, data: Any, *, stored: bool = False) -> ProgramDefinition:
        """A definition checked as a new one must be; `stored`: one the ledger recorded
        (replayed from its events), read under the rules it was accepted by, so a check
        added later never makes recorded history unreadable."""
        parser = _Parser(stored=stored)
        program = parser.program(data)
        if parser.problems or program is None:
            raise InvalidProgram(
                "program definition is invalid: "
                + "; ".join(f"{p['field']}: {p['message']}" for p in parser.problems),
                details={"problems": parser.problems},
            )
        return program

    def to_dict(self) -> dict[str, Any]:
        terms = self.funded_terms
        return {
            "program_id": self.program_id,
            "name": self.name,
            "currency": self.currency,
            "initial_balance": str(self.initial_balance.amount),
            "fee": {"amount": str(self.fee.amount), "currency": self.fee.currency},
            "day_timezone": self.day_timezone,
            "day_start": self.day_start.strftime("%H:%M"),
            "phases": [
                {
                    "name": rules.name,
                    "profit_target_pct": _pct(rules.profit_target_pct),
                    **_common_rules_dict(rules),
                    "min_trading_days": rules.min_trading_days,
                }
                for rules in self.phases
            ],
            "funded": {
                **_common_rules_dict(self.funded),
                "profit_split_pct": _pct(terms.profit_split_pct),
                "split_scaling": [
                    {"after_payouts": t.after_payouts, "profit_split_pct": _pct(t.profit_split_pct)}
                    for t in terms.split_scaling
                ],
                "first_payout_after_days": terms.first_payout_after_days,
                "payout_interval_days": terms.payout_interval_days,
                "min_payout": str(terms.min_payout.amount),
                "refund_fee_with_first_payout": terms.refund_fee_with_first_payout,
            },
        }


def _pct(value: Decimal | None) -> str | None:
    # Positional, never scientific: str(Decimal("0.0000001")) is "1E-7", which `parse`
    # (stored or not) refuses, and a stored program must parse again.
    return None if value is None else format(value, "f")


def _common_rules_dict(rules: StageRules) -> dict[str, Any]:
    return {
        "max_daily_loss_pct": _pct(rules.max_daily_loss_pct),
        "daily_loss_base": rules.daily_loss_base,
        "max_loss_pct": _pct(rules.max_loss_pct),
        "max_loss_mode": rules.max_loss_mode,
        "consistency_max_day_pct": _pct(rules.consistency_max_day_pct),
    }


class _Parser:
    """Collects every problem of a program definition instead of stopping at the first."""

    def __init__(self, *, stored: bool = False) -> None:
        self.problems: list[dict[str, str]] = []
        self.stored = stored

    def problem(self, field: str, message: str) -> None:
        self.problems.append({"field": field, "message": message})

    def obj(self, data: Any, field: str, allowed: set[str]) -> dict[str, Any] | None:
        if not isinstance(data, dict):
            self.problem(field or "$", "must be an object")
            return None
        for key in sorted(set(data) - allowed):
            self.problem(f"{field}.{key}" if field else key, "unknown field")
        return data

    def text(self, data: dict[str, Any], key: str, field: str, max_length: int = 200) -> str:
        value = data.get(key)
        if not isinstance(value, str) or not value.strip() or len(value) > max_length:
            self.problem(field, f"must be a non-empty string of at most {max_length} characters")
            return ""
        if not self.stored and not value.isprintable():
            # Control and formatting characters (a bell, a right-to-left override) are
            # no part of a name finance reads in reports and the console.
            self.problem(field, "must be printable text (no control or formatting characters)")
            return ""
        return value

    def pct(
        self,
        data: dict[str, Any],
        key: str,
        field: str,
        *,
        low: Decimal,
        high: Decimal,
        nullable: bool = False,
        low_inclusive: bool = False,
        default: Any = None,
    ) -> Decimal | None:
        value = data.get(key, default)
        if value is None:
            if not nullable:
                self.problem(field, "is required")
            return None
        if isinstance(value, bool) or not isinstance(value, (str, int)):
            self.problem(field, 'must be a decimal string such as "10" (not a float)')
            return None
        try:
            number = parse_decimal(str(value), field=field)
        except DomainError:
            self.problem(field, 'must be a decimal string such as "10"')
            return None
        if not self.stored and -int(number.as_tuple().exponent) > MAX_PCT_PLACES:
            self.problem(field, f"must have at most {MAX_PCT_PLACES} decimal places")
            return None
        too_low = number < low if low_inclusive else number <= low
        if too_low or number > high:
            bound = "at least" if low_inclusive else "more than"
            self.problem(field, f"must be {bound} {low} and at most {high}, got {number}")
            return None
        return number

    def integer(
        self,
        data: dict[str, Any],
        key: str,
        field: str,
        *,
        low: int,
        high: int,
        default: Any = None,
    ) -> int:
        value = data.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            self.problem(field, f"must be an integer from {low} to {high}")
            return low
        return value

    def choice(
        self, data: dict[str, Any], key: str, field: str, options: tuple[str, ...], default: str
    ) -> str:
        value = data.get(key, default)
        if value not in options:
            self.problem(field, f"must be one of {', '.join(options)}")
            return default
        return str(value)

    def money(self, value: Any, currency: str, field: str, *, positive: bool) -> Money | None:
        try:
            if self.stored and isinstance(value, str):
                money = Money(Decimal(value), currency)  # accepted when it was recorded
            else:
                money = Money.of(value, currency, field=field)
        except (DomainError, ArithmeticError) as error:
            self.problem(field, getattr(error, "message", f"is not an amount: {value!r}"))
            return None
        if money.amount < 0 or (positive and money.amount == 0):
            self.problem(field, "must be greater than 0" if positive else "must not be negative")
            return None
        return money

    def common_rules(self, data: dict[str, Any], field: str) -> dict[str, Any]:
        return {
            "max_daily_loss_pct": self.pct(
                data, "max_daily_loss_pct", f"{field}.max_daily_loss_pct",
                low=Decimal(0), high=Decimal(100),
            ),
            "daily_loss_base": self.choice(
                data, "daily_loss_base", f"{field}.daily_loss_base", DAILY_LOSS_BASES, "balance"
            ),
            # A max loss of 0 % would put the floor on B0 and 100 % at zero: both contradict
            # an account that is meant to trade.
            "max_loss_pct": self.pct(
                data, "max_loss_pct", f"{field}.max_loss_pct",
                low=Decimal(0), high=Decimal(100) - Decimal("0.0001"),
            ),
            "max_loss_mode": self.choice(
                data, "max_loss_mode", f"{field}.max_loss_mode", MAX_LOSS_MODES, "static"
            ),
            "consistency_max_day_pct": self.pct(
                data, "consistency_max_day_pct", f"{field}.consistency_max_day_pct",
                low=Decimal(0), high=Decimal(100), nullable=True,
            ),
        }  # fmt: skip

    def program(self, data: Any) -> ProgramDefinition | None:
        allowed = {
            "program_id", "name", "currency", "initial_balance", "fee",
            "day_timezone", "day_start", "phases", "funded",
        }  # fmt: skip
        body = self.obj(data, "", allowed)
        if body is None:
            return None
        program_id = body.get("program_id")
        if not isinstance(program_id, str) or not _PROGRAM_ID_PATTERN.match(program_id):
            self.problem("program_id", "must be 1-64 characters of letters, digits, '.', '_', '-'")
        name = self.text(body, "name", "name")
        currency = body.get("currency")
        try:
            check_currency(currency)
        except DomainError as error:
            self.problem("currency", error.message)
            currency = None
        initial_balance = (
            self.money(body.get("initial_balance"), currency, "initial_balance", positive=True)
            if currency
            else None
        )
        fee = self.fee(body.get("fee"))
        zone = self.zone(body.get("day_timezone"))
        day_start = self.day_start(body.get("day_start", "00:00"))
        phases = self.phases(body.get("phases"))
        funded = self.funded(body.get("funded"), currency)
        if (
            self.problems
            or currency is None
            or initial_balance is None
            or fee is None
            or funded is None
            or zone is None
            or day_start is None
        ):
            return None
        return ProgramDefinition(
            program_id=str(program_id),
            name=name,
            currency=str(currency),
            initial_balance=initial_balance,
            fee=fee,
            day_timezone=zone,
            day_start=day_start,
            phases=tuple(phases),
            funded=funded[0],
            funded_terms=funded[1],
        )

    def fee(self, data: Any) -> Money | None:
        fee = self.obj(data, "fee", {"amount", "currency"})
        if fee is None:
            return None
        try:
            currency = check_currency(fee.get("currency"))
        except DomainError as error:
            self.problem("fee.currency", error.message)
            return None
        return self.money(fee.get("amount"), currency, "fee.amount", positive=False)

    def zone(self, value: Any) -> str | None:
        if not isinstance(value, str) or not value or len(value) > 64 or ".." in value:
            self.problem("day_timezone", "must be an IANA time zone such as 'Europe/Prague'")
            return None
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError, OSError):
            # OSError: a folder of the zone database ("Europe") is not a zone.
            self.problem("day_timezone", f"unknown IANA time zone {value!r}")
            return None
        if not self.stored and not _is_iana_zone(value):
            self.problem(
                "day_timezone",
                f"{value!r} is not an IANA time zone name (a file of this host's zone "
                "database, whose meaning depends on the host)",
            )
            return None
        return value

    def day_start(self, value: Any) -> time | None:
        match = _DAY_START_PATTERN.match(value) if isinstance(value, str) else None
        if match is None:
            self.problem("day_start", "must be a local time 'HH:MM' such as '17:00'")
            return None
        return time(int(match.group(1)), int(match.group(2)))

    def phases(self, data: Any) -> list[StageRules]:
        if not isinstance(data, list) or not 1 <= len(data) <= MAX_PHASES:
            self.problem("phases", f"must be a list of 1 to {MAX_PHASES} phases")
            return []
        phases: list[StageRules] = []
        names: set[str] = set()
        allowed = {
            "name", "profit_target_pct", "max_daily_loss_pct", "daily_loss_base",
            "max_loss_pct", "max_loss_mode", "min_trading_days", "consistency_max_day_pct",
        }  # fmt: skip
        for index, item in enumerate(data):
            field = f"phases[{index}]"
            phase = self.obj(item, field, allowed)
            if phase is None:
                continue
            name = self.text(phase, "name", f"{field}.name", max_length=64)
            if name and name in names:  # an empty one is reported as such already
                self.problem(f"{field}.name", f"duplicate phase name {name!r}")
            names.add(name)
            target = self.pct(
                phase, "profit_target_pct", f"{field}.profit_target_pct",
                low=Decimal(0), high=Decimal(1000),
            )  # fmt: skip
            rules = self.common_rules(phase, field)
            min_days = self.integer(
                phase, "min_trading_days", f"{field}.min_trading_days", low=0, high=366, default=0
            )
            if (
                target is None
                or rules["max_daily_loss_pct"] is None
                or rules["max_loss_pct"] is None
            ):
                continue
            phases.append(
                StageRules(
                    stage=stage_code(index),
                    name=name,
                    profit_target_pct=target,
                    min_trading_days=min_days,
                    **rules,
                )
            )
        return phases

    def funded(self, data: Any, currency: Any) -> tuple[StageRules, FundedTerms] | None:
        allowed = {
            "max_daily_loss_pct", "daily_loss_base", "max_loss_pct", "max_loss_mode",
            "consistency_max_day_pct", "profit_split_pct", "split_scaling",
            "first_payout_after_days", "payout_interval_days", "min_payout",
            "refund_fee_with_first_payout",
        }  # fmt: skip
        funded = self.obj(data, "funded", allowed)
        if funded is None:
            return None
        rules = self.common_rules(funded, "funded")
        split = self.pct(
            funded, "profit_split_pct", "funded.profit_split_pct", low=Decimal(0), high=Decimal(100)
        )
        tiers = self.tiers(funded.get("split_scaling", []))
        first_after = self.integer(
            funded, "first_payout_after_days", "funded.first_payout_after_days",
            low=0, high=3660, default=0,
        )  # fmt: skip
        interval = self.integer(
            funded, "payout_interval_days", "funded.payout_interval_days",
            low=0, high=3660, default=0,
        )  # fmt: skip
        min_payout = (
            self.money(funded.get("min_payout", "0"), currency, "funded.min_payout", positive=False)
            if currency
            else None
        )
        refund = funded.get("refund_fee_with_first_payout", False)
        if not isinstance(refund, bool):
            self.problem("funded.refund_fee_with_first_payout", "must be true or false")
        if (
            split is None
            or min_payout is None
            or rules["max_daily_loss_pct"] is None
            or rules["max_loss_pct"] is None
        ):
            return None
        stage = StageRules(
            stage=FUNDED_STAGE, name="funded", profit_target_pct=None, min_trading_days=0, **rules
        )
        terms = FundedTerms(
            profit_split_pct=split,
            split_scaling=tiers,
            first_payout_after_days=first_after,
            payout_interval_days=interval,
            min_payout=min_payout,
            refund_fee_with_first_payout=bool(refund),
        )
        return stage, terms

    def tiers(self, data: Any) -> tuple[SplitTier, ...]:
        if not isinstance(data, list) or len(data) > 20:
            self.problem("funded.split_scaling", "must be a list of at most 20 tiers")
            return ()
        tiers: list[SplitTier] = []
        for index, item in enumerate(data):
            field = f"funded.split_scaling[{index}]"
            tier = self.obj(item, field, {"after_payouts", "profit_split_pct"})
            if tier is None:
                continue
            after = self.integer(tier, "after_payouts", f"{field}.after_payouts", low=1, high=1000)
            pct = self.pct(
                tier, "profit_split_pct", f"{field}.profit_split_pct",
                low=Decimal(0), high=Decimal(100),
            )  # fmt: skip
            if tiers and after <= tiers[-1].after_payouts:
                self.problem(f"{field}.after_payouts", "tiers must be in increasing order")
            if pct is not None:
                tiers.append(SplitTier(after_payouts=after, profit_split_pct=pct))
        return tuple(tiers)


# Files of a zone database that are not zones of the IANA list: `localtime` is the host's
# own zone, `Factory` a placeholder, `posixrules` a template, `posix/` and `right/` copies
# (the latter with leap seconds). A program's days must not depend on the server.
_NOT_ZONES = frozenset({"localtime", "Factory", "posixrules"})


@lru_cache(maxsize=1)
def _known_zones() -> frozenset[str]:
    return frozenset(available_timezones())


def _is_iana_zone(name: str) -> bool:
    if name in _NOT_ZONES or name.startswith(("posix/", "right/")):
        return False
    return name in _known_zones()
