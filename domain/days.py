"""Trading days in a program's `day_timezone`, rolling at its local `day_start`.

A day is labelled by the local date on which it ends, the way futures exchanges label
sessions: with `day_start` 17:00 New York, the day that runs from Monday 17:00 to Tuesday
17:00 is Tuesday's, so a trade closed on Monday at 18:00 New York belongs to Tuesday. With
the default `00:00` the label is simply the local calendar date.

Boundaries are instants: the local `day_start` wall time on each date, resolved with
`fold=0` (an ambiguous wall time after a DST fall-back means its first occurrence; a wall
time inside a spring-forward gap resolves to the instant of the jump). Comparing
instants keeps day labels monotonic in time across every DST change.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo


@lru_cache(maxsize=8192)
def boundary(local_date: date, zone: ZoneInfo, day_start: time) -> datetime:
    """The first instant (UTC) at which the local wall clock shows `day_start` or later
    on `local_date`. A pure function of hashable values, so remembered: every trade asks
    for the boundary of its day, and most trades of a day share it."""
    wall = datetime.combine(local_date, day_start, tzinfo=zone)
    instant = wall.astimezone(UTC)
    naive_wall = wall.replace(tzinfo=None)
    if instant.astimezone(zone).replace(tzinfo=None) == naive_wall:
        return instant
    # The wall time does not exist (a spring-forward gap): the day starts when the clock
    # jumps over it. fold=1 resolves to an instant before the jump, fold=0 to one after.
    before = wall.replace(fold=1).astimezone(UTC)
    after = instant
    while after - before > timedelta(microseconds=1):
        middle = before + (after - before) / 2
        if middle.astimezone(zone).replace(tzinfo=None) >= naive_wall:
            after = middle
        else:
            before = middle
    return after


def _label_offset(day_start: time) -> int:
    # Days starting at midnight are labelled by their own date; days starting at another
    # hour are labelled by the date on which they end.
    return 0 if day_start == time(0, 0) else 1


def trading_day(at: datetime, zone: ZoneInfo, day_start: time) -> date:
    """The label of the day that contains the instant `at` (which must be aware)."""
    if at.tzinfo is None:
        raise ValueError("trading_day needs an aware datetime")
    local_date = at.astimezone(zone).date()
    offset = _label_offset(day_start)
    if at >= boundary(local_date, zone, day_start):
        return local_date + timedelta(days=offset)
    return local_date + timedelta(days=offset - 1)


def day_began_at(label: date, zone: ZoneInfo, day_start: time) -> datetime:
    """The instant (UTC) at which the day labelled `label` began."""
    return boundary(label - timedelta(days=_label_offset(day_start)), zone, day_start)
