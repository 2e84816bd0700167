"""Trading days in the program's zone: Prague midnight across both 2026 DST changes,
New York 17:00 futures sessions, and the instants at which days begin.

Offsets used for the hand computations: Prague CET = UTC+1, CEST = UTC+2 (2026: CEST from
03-29 01:00Z to 10-25 01:00Z); New York EST = UTC-5, EDT = UTC-4 (2026: EDT from 03-08 07:00Z
to 11-01 06:00Z).
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest

from domain.days import day_began_at, trading_day

PRAGUE = ZoneInfo("Europe/Prague")
NEW_YORK = ZoneInfo("America/New_York")
MIDNIGHT = time(0, 0)
FIVE_PM = time(17, 0)


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


# Prague midnight, winter time (CET) before the spring change -----------------------------


def test_half_past_midnight_cet_is_already_the_next_prague_day_though_utc_says_otherwise() -> None:
    # 2026-03-28T23:30Z is 00:30 CET on 03-29.
    assert trading_day(utc("2026-03-28T23:30:00Z"), PRAGUE, MIDNIGHT) == date(2026, 3, 29)


def test_one_second_before_prague_midnight_cet_is_still_the_previous_day() -> None:
    # 2026-03-28T22:59:59Z is 23:59:59 CET on 03-28.
    assert trading_day(utc("2026-03-28T22:59:59Z"), PRAGUE, MIDNIGHT) == date(2026, 3, 28)


def test_prague_midnight_itself_belongs_to_the_day_it_starts() -> None:
    # 2026-03-28T23:00Z is 00:00:00 CET on 03-29.
    assert trading_day(utc("2026-03-28T23:00:00Z"), PRAGUE, MIDNIGHT) == date(2026, 3, 29)


def test_a_winter_trade_at_2330_utc_is_on_the_next_prague_day() -> None:
    assert trading_day(utc("2026-01-05T23:30:00Z"), PRAGUE, MIDNIGHT) == date(2026, 1, 6)
    assert trading_day(utc("2026-01-05T22:59:59Z"), PRAGUE, MIDNIGHT) == date(2026, 1, 5)


# Prague across the spring-forward night (2026-03-29 02:00 CET -> 03:00 CEST) -------------


def test_the_hour_before_and_after_the_spring_gap_are_the_same_prague_day() -> None:
    # 00:59:59Z = 01:59:59 CET, 01:00:00Z = 03:00:00 CEST, both on 03-29.
    assert trading_day(utc("2026-03-29T00:59:59Z"), PRAGUE, MIDNIGHT) == date(2026, 3, 29)
    assert trading_day(utc("2026-03-29T01:00:00Z"), PRAGUE, MIDNIGHT) == date(2026, 3, 29)


def test_after_spring_forward_prague_midnight_is_2200_utc() -> None:
    # 2026-03-29T22:00Z is 00:00 CEST on 03-30; one second earlier is 23:59:59 CEST on 03-29.
    assert trading_day(utc("2026-03-29T22:00:00Z"), PRAGUE, MIDNIGHT) == date(2026, 3, 30)
    assert trading_day(utc("2026-03-29T21:59:59Z"), PRAGUE, MIDNIGHT) == date(2026, 3, 29)


def test_a_summer_trade_at_2230_utc_is_on_the_next_prague_day() -> None:
    assert trading_day(utc("2026-07-06T22:30:00Z"), PRAGUE, MIDNIGHT) == date(2026, 7, 7)
    assert trading_day(utc("2026-07-06T21:59:59Z"), PRAGUE, MIDNIGHT) == date(2026, 7, 6)


def test_the_prague_day_of_the_spring_change_lasts_23_hours() -> None:
    began = day_began_at(date(2026, 3, 29), PRAGUE, MIDNIGHT)
    ended = day_began_at(date(2026, 3, 30), PRAGUE, MIDNIGHT)
    assert began == datetime(2026, 3, 28, 23, 0, tzinfo=UTC)
    assert ended == datetime(2026, 3, 29, 22, 0, tzinfo=UTC)
    assert ended - began == timedelta(hours=23)


# Prague across the fall-back night (2026-10-25 03:00 CEST -> 02:00 CET) ------------------


def test_before_fall_back_prague_midnight_is_2200_utc() -> None:
    # 2026-10-24T22:00Z is 00:00 CEST on 10-25.
    assert trading_day(utc("2026-10-24T22:00:00Z"), PRAGUE, MIDNIGHT) == date(2026, 10, 25)
    assert trading_day(utc("2026-10-24T21:59:59Z"), PRAGUE, MIDNIGHT) == date(2026, 10, 24)


def test_both_passes_through_the_repeated_hour_are_the_same_prague_day() -> None:
    # 00:30Z = 02:30 CEST and 01:30Z = 02:30 CET: the same wall time, twice, on 10-25.
    assert trading_day(utc("2026-10-25T00:30:00Z"), PRAGUE, MIDNIGHT) == date(2026, 10, 25)
    assert trading_day(utc("2026-10-25T01:30:00Z"), PRAGUE, MIDNIGHT) == date(2026, 10, 25)


def test_after_fall_back_prague_midnight_is_2300_utc_again() -> None:
    # 2026-10-25T23:00Z is 00:00 CET on 10-26; 22:59:59Z is 23:59:59 CET on 10-25.
    assert trading_day(utc("2026-10-25T23:00:00Z"), PRAGUE, MIDNIGHT) == date(2026, 10, 26)
    assert trading_day(utc("2026-10-25T22:59:59Z"), PRAGUE, MIDNIGHT) == date(2026, 10, 25)
    assert trading_day(utc("2026-10-25T23:30:00Z"), PRAGUE, MIDNIGHT) == date(2026, 10, 26)


def test_the_prague_day_of_the_fall_change_lasts_25_hours() -> None:
    began = day_began_at(date(2026, 10, 25), PRAGUE, MIDNIGHT)
    ended = day_began_at(date(2026, 10, 26), PRAGUE, MIDNIGHT)
    assert began == datetime(2026, 10, 24, 22, 0, tzinfo=UTC)
    assert ended == datetime(2026, 10, 25, 23, 0, tzinfo=UTC)
    assert ended - began == timedelta(hours=25)


def test_the_offset_an_instant_is_written_with_does_not_change_its_day() -> None:
    written_in_prague = datetime(2026, 3, 29, 0, 30, tzinfo=PRAGUE)
    written_with_offset = datetime.fromisoformat("2026-03-29T00:30:00+01:00")
    written_in_new_york = datetime.fromisoformat("2026-03-28T19:30:00-04:00")
    for at in (written_in_prague, written_with_offset, written_in_new_york):
        assert trading_day(at, PRAGUE, MIDNIGHT) == date(2026, 3, 29)


def test_a_naive_instant_is_refused() -> None:
    with pytest.raises(ValueError, match="aware"):
        trading_day(datetime(2026, 3, 29, 0, 30), PRAGUE, MIDNIGHT)


# New York 17:00 sessions, labelled by the day they end on --------------------------------


def test_a_trade_closed_monday_1800_new_york_belongs_to_tuesday() -> None:
    # Monday 2026-01-05 18:00 EST = 23:00Z.
    assert trading_day(utc("2026-01-05T23:00:00Z"), NEW_YORK, FIVE_PM) == date(2026, 1, 6)
    assert trading_day(datetime(2026, 1, 5, 18, 0, tzinfo=NEW_YORK), NEW_YORK, FIVE_PM) == date(
        2026, 1, 6
    )


def test_a_trade_closed_monday_1659_new_york_belongs_to_monday() -> None:
    # Monday 2026-01-05 16:59 EST = 21:59Z.
    assert trading_day(utc("2026-01-05T21:59:00Z"), NEW_YORK, FIVE_PM) == date(2026, 1, 5)


def test_monday_1700_new_york_exactly_opens_tuesdays_session() -> None:
    # 17:00 EST = 22:00Z.
    assert trading_day(utc("2026-01-05T22:00:00Z"), NEW_YORK, FIVE_PM) == date(2026, 1, 6)
    assert trading_day(utc("2026-01-05T21:59:59Z"), NEW_YORK, FIVE_PM) == date(2026, 1, 5)


def test_new_york_sessions_follow_daylight_saving_time_in_summer() -> None:
    # Monday 2026-07-06: 18:00 EDT = 22:00Z, 16:59 EDT = 20:59Z.
    assert trading_day(utc("2026-07-06T22:00:00Z"), NEW_YORK, FIVE_PM) == date(2026, 7, 7)
    assert trading_day(utc("2026-07-06T20:59:00Z"), NEW_YORK, FIVE_PM) == date(2026, 7, 6)
    assert trading_day(utc("2026-07-06T21:00:00Z"), NEW_YORK, FIVE_PM) == date(2026, 7, 7)


def test_a_trade_after_utc_midnight_still_belongs_to_the_new_york_session() -> None:
    # Tuesday 2026-01-06T03:00Z is Monday 22:00 EST: Tuesday's session.
    assert trading_day(utc("2026-01-06T03:00:00Z"), NEW_YORK, FIVE_PM) == date(2026, 1, 6)
    # Sunday evening 2026-01-04 18:00 EST = 23:00Z opens Monday's session.
    assert trading_day(utc("2026-01-04T23:00:00Z"), NEW_YORK, FIVE_PM) == date(2026, 1, 5)


def test_day_began_at_gives_the_previous_afternoon_for_a_new_york_label() -> None:
    # Tuesday 2026-01-06 began Monday 17:00 EST = 22:00Z; in summer 17:00 EDT = 21:00Z.
    assert day_began_at(date(2026, 1, 6), NEW_YORK, FIVE_PM) == datetime(
        2026, 1, 5, 22, 0, tzinfo=UTC
    )
    assert day_began_at(date(2026, 7, 7), NEW_YORK, FIVE_PM) == datetime(
        2026, 7, 6, 21, 0, tzinfo=UTC
    )


def test_the_new_york_session_across_spring_forward_lasts_23_hours() -> None:
    # Session 03-09 began Sunday 03-08 17:00 EDT = 21:00Z; session 03-08 began Saturday
    # 03-07 17:00 EST = 22:00Z.
    began = day_began_at(date(2026, 3, 8), NEW_YORK, FIVE_PM)
    ended = day_began_at(date(2026, 3, 9), NEW_YORK, FIVE_PM)
    assert began == datetime(2026, 3, 7, 22, 0, tzinfo=UTC)
    assert ended == datetime(2026, 3, 8, 21, 0, tzinfo=UTC)
    assert ended - began == timedelta(hours=23)


def test_the_new_york_session_across_fall_back_lasts_25_hours() -> None:
    # Session 11-01 began Saturday 10-31 17:00 EDT = 21:00Z; session 11-02 began Sunday
    # 11-01 17:00 EST = 22:00Z.
    began = day_began_at(date(2026, 11, 1), NEW_YORK, FIVE_PM)
    ended = day_began_at(date(2026, 11, 2), NEW_YORK, FIVE_PM)
    assert began == datetime(2026, 10, 31, 21, 0, tzinfo=UTC)
    assert ended == datetime(2026, 11, 1, 22, 0, tzinfo=UTC)
    assert ended - began == timedelta(hours=25)


def test_day_began_at_for_prague_midnight_is_the_local_midnight_in_utc() -> None:
    assert day_began_at(date(2026, 1, 6), PRAGUE, MIDNIGHT) == datetime(
        2026, 1, 5, 23, 0, tzinfo=UTC
    )
    assert day_began_at(date(2026, 7, 7), PRAGUE, MIDNIGHT) == datetime(
        2026, 7, 6, 22, 0, tzinfo=UTC
    )


# Day starts inside a DST transition ------------------------------------------------------


def test_an_ambiguous_day_start_means_its_first_occurrence() -> None:
    # 01:30 happens twice in New York on 2026-11-01: 05:30Z (EDT) and 06:30Z (EST).
    day_start = time(1, 30)
    assert day_began_at(date(2026, 11, 2), NEW_YORK, day_start) == datetime(
        2026, 11, 1, 5, 30, tzinfo=UTC
    )
    assert trading_day(utc("2026-11-01T05:29:59Z"), NEW_YORK, day_start) == date(2026, 11, 1)
    assert trading_day(utc("2026-11-01T05:30:00Z"), NEW_YORK, day_start) == date(2026, 11, 2)
    # 06:00Z is 01:00 EST, the second pass through the repeated hour: still the new day.
    assert trading_day(utc("2026-11-01T06:00:00Z"), NEW_YORK, day_start) == date(2026, 11, 2)


def test_a_day_start_inside_the_spring_gap_begins_the_day_just_after_the_gap() -> None:
    # New York jumps from 01:59:59 EST (06:59:59Z) to 03:00 EDT (07:00Z) on 2026-03-08, so
    # 02:30 never shows on the wall clock; the day that would begin then begins at 07:00Z.
    day_start = time(2, 30)
    assert day_began_at(date(2026, 3, 9), NEW_YORK, day_start) == datetime(
        2026, 3, 8, 7, 0, tzinfo=UTC
    )
    # 07:15Z is 03:15 EDT: the wall clock is past 02:30, the new day has begun.
    assert trading_day(utc("2026-03-08T07:15:00Z"), NEW_YORK, day_start) == date(2026, 3, 9)


@pytest.mark.parametrize(
    ("zone", "day_start", "first"),
    [
        (PRAGUE, MIDNIGHT, "2026-03-27T12:00:00Z"),
        (PRAGUE, MIDNIGHT, "2026-10-23T12:00:00Z"),
        (PRAGUE, time(2, 30), "2026-03-27T12:00:00Z"),
        (PRAGUE, time(2, 30), "2026-10-23T12:00:00Z"),
        (NEW_YORK, FIVE_PM, "2026-03-06T12:00:00Z"),
        (NEW_YORK, FIVE_PM, "2026-10-30T12:00:00Z"),
        (NEW_YORK, time(1, 30), "2026-10-30T12:00:00Z"),
    ],
)
def test_day_labels_never_go_back_and_change_exactly_when_the_next_day_begins(
    zone: ZoneInfo, day_start: time, first: str
) -> None:
    at = utc(first)
    label = trading_day(at, zone, day_start)
    changes = 0
    for _ in range(4 * 24 * 4):  # four days in 15-minute steps
        at += timedelta(minutes=15)
        new_label = trading_day(at, zone, day_start)
        assert new_label in (label, label + timedelta(days=1))
        if new_label != label:
            changes += 1
            began = day_began_at(new_label, zone, day_start)
            assert at - timedelta(minutes=15) < began <= at
        label = new_label
    assert changes == 4
