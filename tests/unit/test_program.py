"""Program definitions: the DESIGN.md example parses and round-trips; every contradiction is
refused with InvalidProgram naming the field, all problems at once."""

from __future__ import annotations

import copy
from collections.abc import Callable
from datetime import time
from decimal import Decimal
from typing import Any

import pytest

from domain.errors import DomainError, InvalidProgram
from domain.money import Money
from domain.program import FUNDED_STAGE, ProgramDefinition, SplitTier
from tests.support import CLASSIC_PROGRAM

# The example of DESIGN.md, "Programs and rules", verbatim (null -> None, true -> True).
DESIGN_EXAMPLE: dict[str, Any] = CLASSIC_PROGRAM


def example() -> dict[str, Any]:
    return copy.deepcopy(DESIGN_EXAMPLE)


def problems_of(data: Any) -> list[dict[str, str]]:
    with pytest.raises(InvalidProgram) as caught:
        ProgramDefinition.parse(data)
    assert caught.value.code == "invalid_program"
    problems: list[dict[str, str]] = caught.value.details["problems"]
    return problems


def fields_of(data: Any) -> list[str]:
    return [problem["field"] for problem in problems_of(data)]


def with_change(change: Callable[[dict[str, Any]], Any]) -> dict[str, Any]:
    data = example()
    change(data)
    return data


# The example -----------------------------------------------------------------------------


def test_the_design_example_parses_into_the_numbers_it_states() -> None:
    program = ProgramDefinition.parse(example())
    assert program.program_id == "classic-100k"
    assert program.currency == "USD"
    assert program.initial_balance == Money(Decimal("100000.00"), "USD")
    assert program.fee == Money(Decimal("540.00"), "USD")
    assert program.day_timezone == "Europe/Prague"
    assert program.day_start == time(0, 0)
    assert [p.stage for p in program.phases] == ["phase-1", "phase-2"]
    challenge, verification = program.phases
    assert challenge.profit_target_pct == Decimal("10")
    assert challenge.max_daily_loss_pct == Decimal("5")
    assert challenge.max_loss_pct == Decimal("10")
    assert challenge.max_loss_mode == "static"
    assert challenge.min_trading_days == 4
    assert challenge.consistency_max_day_pct is None
    assert verification.profit_target_pct == Decimal("5")
    assert verification.daily_loss_base == "balance"  # the default, not written in the example
    assert program.funded.stage == FUNDED_STAGE
    assert program.funded.profit_target_pct is None
    terms = program.funded_terms
    assert terms.profit_split_pct == Decimal("80")
    assert terms.split_scaling == (SplitTier(after_payouts=4, profit_split_pct=Decimal("90")),)
    assert terms.first_payout_after_days == 14
    assert terms.payout_interval_days == 14
    assert terms.min_payout == Money(Decimal("50.00"), "USD")
    assert terms.refund_fee_with_first_payout is True


def test_the_design_example_round_trips_through_to_dict() -> None:
    program = ProgramDefinition.parse(example())
    assert ProgramDefinition.parse(program.to_dict()) == program


def test_to_dict_is_the_example_with_its_defaults_written_out() -> None:
    expected = example()
    expected["phases"][1]["daily_loss_base"] = "balance"
    expected["funded"]["daily_loss_base"] = "balance"
    assert ProgramDefinition.parse(example()).to_dict() == expected


def test_parsing_does_not_change_the_input() -> None:
    data = example()
    ProgramDefinition.parse(data)
    assert data == DESIGN_EXAMPLE


def test_stages_follow_each_other_and_end_funded() -> None:
    program = ProgramDefinition.parse(example())
    assert program.first_stage == "phase-1"
    assert program.next_stage("phase-1") == "phase-2"
    assert program.next_stage("phase-2") == FUNDED_STAGE
    assert program.stage_rules("phase-2").name == "verification"
    assert program.stage_rules(FUNDED_STAGE).is_funded
    with pytest.raises(DomainError):
        program.stage_rules("phase-3")


def test_a_trailing_program_with_a_new_york_day_round_trips() -> None:
    data = example()
    data["day_timezone"] = "America/New_York"
    data["day_start"] = "17:00"
    data["phases"][0]["max_loss_mode"] = "trailing_eod"
    data["phases"][0]["daily_loss_base"] = "balance_or_equity"
    data["phases"][0]["consistency_max_day_pct"] = "40"
    data["funded"]["max_loss_mode"] = "trailing"
    program = ProgramDefinition.parse(data)
    assert program.day_start == time(17, 0)
    assert program.phases[0].consistency_max_day_pct == Decimal("40")
    assert ProgramDefinition.parse(program.to_dict()) == program


def test_a_percentage_may_be_a_json_integer_but_is_stored_as_a_decimal_string() -> None:
    program = ProgramDefinition.parse(
        with_change(lambda d: d["phases"][0].update(profit_target_pct=10))
    )
    assert program.phases[0].profit_target_pct == Decimal("10")
    assert program.to_dict()["phases"][0]["profit_target_pct"] == "10"


# Contradictions, each named by its field -------------------------------------------------


def test_a_profit_target_of_zero_is_refused() -> None:
    data = with_change(lambda d: d["phases"][0].update(profit_target_pct="0"))
    assert fields_of(data) == ["phases[0].profit_target_pct"]


def test_a_negative_profit_target_is_refused() -> None:
    data = with_change(lambda d: d["phases"][1].update(profit_target_pct="-5"))
    assert fields_of(data) == ["phases[1].profit_target_pct"]


def test_a_max_loss_of_zero_is_refused_because_it_puts_the_floor_on_b0() -> None:
    data = with_change(lambda d: d["phases"][0].update(max_loss_pct="0"))
    assert fields_of(data) == ["phases[0].max_loss_pct"]


def test_a_negative_max_loss_is_refused() -> None:
    data = with_change(lambda d: d["phases"][0].update(max_loss_pct="-10"))
    assert fields_of(data) == ["phases[0].max_loss_pct"]


def test_a_max_loss_of_100_percent_is_refused_because_it_puts_the_floor_at_zero() -> None:
    data = with_change(lambda d: d["funded"].update(max_loss_pct="100"))
    assert fields_of(data) == ["funded.max_loss_pct"]


def test_a_daily_loss_of_zero_is_refused() -> None:
    data = with_change(lambda d: d["funded"].update(max_daily_loss_pct="0"))
    assert fields_of(data) == ["funded.max_daily_loss_pct"]


@pytest.mark.parametrize("zone", ["Mars/Olympus", "Europe/Prag", "CEST", "", "/etc/localtime"])
def test_an_unknown_timezone_is_refused(zone: str) -> None:
    data = with_change(lambda d: d.update(day_timezone=zone))
    assert fields_of(data) == ["day_timezone"]


@pytest.mark.parametrize(
    "zone", ["localtime", "Factory", "posixrules", "right/UTC", "posix/Europe/Prague"]
)
def test_a_zone_database_file_that_is_no_iana_zone_is_refused(zone: str) -> None:
    """`localtime` is the host's own zone: a program's days must not depend on the server."""
    data = with_change(lambda d: d.update(day_timezone=zone))
    assert fields_of(data) == ["day_timezone"]


@pytest.mark.parametrize("zone", ["UTC", "Etc/GMT-2", "America/New_York", "Asia/Kolkata"])
def test_iana_zones_are_accepted(zone: str) -> None:
    data = with_change(lambda d: d.update(day_timezone=zone))
    assert ProgramDefinition.parse(data).day_timezone == zone


@pytest.mark.parametrize("zone", ["Europe", "America/Argentina"])
def test_a_region_name_that_is_not_a_zone_is_refused_as_an_unknown_timezone(zone: str) -> None:
    data = with_change(lambda d: d.update(day_timezone=zone))
    assert fields_of(data) == ["day_timezone"]


def test_a_missing_timezone_is_refused() -> None:
    data = with_change(lambda d: d.pop("day_timezone"))
    assert fields_of(data) == ["day_timezone"]


@pytest.mark.parametrize("day_start", ["24:00", "7:00", "17:60", "17", "17:00:00", "5pm", 1700])
def test_a_bad_day_start_is_refused(day_start: object) -> None:
    data = with_change(lambda d: d.update(day_start=day_start))
    assert fields_of(data) == ["day_start"]


def test_day_start_defaults_to_midnight() -> None:
    program = ProgramDefinition.parse(with_change(lambda d: d.pop("day_start")))
    assert program.day_start == time(0, 0)


def test_an_unknown_top_level_field_is_refused_by_name() -> None:
    data = with_change(lambda d: d.update(colour="red"))
    assert fields_of(data) == ["colour"]


def test_an_unknown_field_inside_a_phase_is_refused_by_its_path() -> None:
    data = with_change(lambda d: d["phases"][1].update(max_drawdown="10"))
    assert fields_of(data) == ["phases[1].max_drawdown"]


def test_an_unknown_field_inside_funded_is_refused_by_its_path() -> None:
    data = with_change(lambda d: d["funded"].update(payout_day="friday"))
    assert fields_of(data) == ["funded.payout_day"]


def test_an_unknown_max_loss_mode_is_refused() -> None:
    data = with_change(lambda d: d["phases"][0].update(max_loss_mode="trailing_intraday"))
    assert fields_of(data) == ["phases[0].max_loss_mode"]


def test_an_unknown_daily_loss_base_is_refused() -> None:
    data = with_change(lambda d: d["phases"][0].update(daily_loss_base="equity"))
    assert fields_of(data) == ["phases[0].daily_loss_base"]


def test_empty_phases_are_refused() -> None:
    data = with_change(lambda d: d.update(phases=[]))
    assert fields_of(data) == ["phases"]


def test_phases_that_are_not_a_list_are_refused() -> None:
    data = with_change(lambda d: d.update(phases={"name": "challenge"}))
    assert fields_of(data) == ["phases"]


def test_a_duplicate_phase_name_is_refused() -> None:
    data = with_change(lambda d: d["phases"][1].update(name="challenge"))
    assert fields_of(data) == ["phases[1].name"]


@pytest.mark.parametrize(
    ("where", "key"),
    [
        ("phases[0]", "profit_target_pct"),
        ("phases[0]", "max_daily_loss_pct"),
        ("phases[0]", "max_loss_pct"),
        ("funded", "profit_split_pct"),
    ],
)
def test_a_json_float_for_a_percentage_is_refused(where: str, key: str) -> None:
    data = example()
    section = data["phases"][0] if where == "phases[0]" else data["funded"]
    section[key] = 10.0
    assert fields_of(data) == [f"{where}.{key}"]


def test_a_json_number_for_money_is_refused() -> None:
    data = with_change(lambda d: d.update(initial_balance=100000))
    assert fields_of(data) == ["initial_balance"]


def test_an_initial_balance_of_zero_is_refused() -> None:
    data = with_change(lambda d: d.update(initial_balance="0.00"))
    assert fields_of(data) == ["initial_balance"]


def test_an_initial_balance_with_too_many_decimal_places_is_refused() -> None:
    data = with_change(lambda d: d.update(initial_balance="100000.001"))
    assert fields_of(data) == ["initial_balance"]


def test_an_unknown_currency_is_refused() -> None:
    data = with_change(lambda d: d.update(currency="XYZ"))
    assert "currency" in fields_of(data)


def test_min_trading_days_must_be_a_whole_number() -> None:
    data = with_change(lambda d: d["phases"][0].update(min_trading_days="4"))
    assert fields_of(data) == ["phases[0].min_trading_days"]


def test_split_tiers_out_of_order_are_refused() -> None:
    tiers = [
        {"after_payouts": 4, "profit_split_pct": "90"},
        {"after_payouts": 2, "profit_split_pct": "85"},
    ]
    data = with_change(lambda d: d["funded"].update(split_scaling=tiers))
    assert fields_of(data) == ["funded.split_scaling[1].after_payouts"]


def test_a_body_that_is_not_an_object_is_refused() -> None:
    assert fields_of(["not", "an", "object"]) == ["$"]


def test_several_problems_are_reported_at_once() -> None:
    data = example()
    data["phases"][0]["profit_target_pct"] = "0"
    data["phases"][1]["max_loss_mode"] = "sometimes"
    data["day_timezone"] = "Nowhere/City"
    data["day_start"] = "25:00"
    data["colour"] = "red"
    data["funded"]["max_loss_pct"] = 10.0
    problems = problems_of(data)
    assert len(problems) > 1
    assert {problem["field"] for problem in problems} == {
        "phases[0].profit_target_pct",
        "phases[1].max_loss_mode",
        "day_timezone",
        "day_start",
        "colour",
        "funded.max_loss_pct",
    }
    assert all(problem["message"] for problem in problems)


def test_the_refusal_message_names_every_field() -> None:
    data = example()
    data["phases"][0]["profit_target_pct"] = "0"
    data["day_timezone"] = "Nowhere/City"
    with pytest.raises(InvalidProgram) as caught:
        ProgramDefinition.parse(data)
    assert "phases[0].profit_target_pct" in caught.value.message
    assert "day_timezone" in caught.value.message


def test_a_recorded_program_stays_readable_under_checks_added_after_it() -> None:
    """Accounts and programs are replayed from recorded definitions: one accepted before
    a check existed (a host zone file, a 13-digit balance) must still load."""
    data = example()
    data["day_timezone"] = "posix/Europe/Prague"
    data["initial_balance"] = "1000000000000.00"
    with pytest.raises(InvalidProgram):
        ProgramDefinition.parse(data)
    stored = ProgramDefinition.parse(data, stored=True)
    assert stored.day_timezone == "posix/Europe/Prague"
    assert str(stored.initial_balance.amount) == "1000000000000.00"


@pytest.mark.parametrize("pct", ["0.000000000001", "0.0000001", "10.0000000", "0.5"])
def test_a_small_percentage_is_written_positionally_and_parses_again(pct: str) -> None:
    """str(Decimal("0.0000001")) is "1E-7", which parse refuses: a stored program written
    so could not be read back (every account of the program would fail to load)."""
    data = with_change(lambda d: d["phases"][0].update(max_loss_pct=pct))
    program = ProgramDefinition.parse(data)
    written = program.to_dict()
    assert written["phases"][0]["max_loss_pct"] == pct
    assert ProgramDefinition.parse(written, stored=True) == program
    assert ProgramDefinition.parse(written) == program


def test_a_percentage_with_more_than_twenty_decimal_places_is_refused() -> None:
    data = with_change(lambda d: d["phases"][0].update(max_loss_pct="10." + "0" * 20 + "1"))
    problems = problems_of(data)
    assert problems == [
        {"field": "phases[0].max_loss_pct", "message": "must have at most 20 decimal places"}
    ]
    ok = with_change(lambda d: d["phases"][0].update(max_loss_pct="10." + "0" * 19 + "1"))
    limit = Decimal("10." + "0" * 19 + "1")
    assert ProgramDefinition.parse(ok).phases[0].max_loss_pct == limit


@pytest.mark.parametrize("name", ["Classic\x01", "Classic \u202e100k", "Line\nbreak"])
def test_a_name_with_control_or_formatting_characters_is_refused(name: str) -> None:
    data = with_change(lambda d: d.update(name=name))
    assert problems_of(data) == [
        {"field": "name", "message": "must be printable text (no control or formatting characters)"}
    ]
    phase = with_change(lambda d: d["phases"][0].update(name=name))
    assert fields_of(phase) == ["phases[0].name"]


def test_two_phases_without_a_name_are_two_missing_names_not_a_duplicate() -> None:
    def unnamed(data: dict[str, Any]) -> None:
        for phase in data["phases"]:
            del phase["name"]

    assert fields_of(with_change(unnamed)) == ["phases[0].name", "phases[1].name"]
