"""The audit chart's geometry (api/console_chart.py): series from the events' `board`,
thinning that keeps the extremes, coordinates inside the plot, markers. No I/O."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from api.console_chart import (
    BOTTOM,
    HEIGHT,
    LEFT,
    MAX_POINTS,
    RIGHT,
    TOP,
    WIDTH,
    chart,
    points_from_events,
    thin,
)

START = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


@dataclass
class Event:
    originator_version: int
    timestamp: datetime
    board: dict[str, Any]
    trade: dict[str, Any] = field(default_factory=dict)


class RuleBreached(Event):
    pass


def board(balance: str, equity: str | None = None) -> dict[str, Any]:
    return {
        "balance": Decimal(balance),
        "equity": Decimal(equity or balance),
        "daily_loss_floor": Decimal("95000.00"),
        "max_loss_floor": Decimal("90000.00"),
    }


def history(balances: list[str]) -> list[Event]:
    return [
        Event(
            version,
            START + timedelta(days=40),  # recorded long after the trades (a replay)
            board(value),
            {"closed_at": START + timedelta(minutes=version)},
        )
        for version, value in enumerate(balances, start=1)
    ]


def coordinates(points: str) -> list[tuple[Decimal, Decimal]]:
    pairs = [pair.split(",") for pair in points.split()]
    return [(Decimal(x), Decimal(y)) for x, y in pairs]


def test_every_series_has_a_point_per_event_inside_the_plot() -> None:
    drawn = chart(points_from_events(history(["100000.00", "100500.00", "99000.00"])), "USD")

    assert drawn is not None
    for name, points in drawn["series"].items():
        pairs = coordinates(points)
        assert len(pairs) == 3, name
        for x, y in pairs:
            assert LEFT <= x <= WIDTH - RIGHT
            assert TOP <= y <= HEIGHT - BOTTOM
    balance = coordinates(drawn["series"]["balance"])
    assert balance[0][0] == LEFT
    assert balance[-1][0] == WIDTH - RIGHT
    # Higher money is higher on the screen (smaller y).
    assert balance[1][1] < balance[0][1] < balance[2][1]
    max_floor = coordinates(drawn["series"]["max_loss_floor"])
    assert all(y > balance[2][1] for _, y in max_floor)


def test_ticks_are_labelled_with_the_trades_dates_not_the_recording_time() -> None:
    drawn = chart(points_from_events(history(["100000.00"] * 5)), "USD")

    assert drawn is not None
    assert [tick["label"] for tick in drawn["x_ticks"]] == [
        "v1 · 2026-03-02",
        "v3 · 2026-03-02",
        "v5 · 2026-03-02",
    ]


def test_a_long_history_is_thinned_but_keeps_its_extremes_and_its_end() -> None:
    values = [f"{100000 + (index % 50) * 10}.00" for index in range(5000)]
    values[3333] = "90500.00"  # one deep dip
    values[1234] = "104000.00"  # one spike
    points = points_from_events(history(values))

    kept = thin(points)

    assert len(kept) <= MAX_POINTS + 1
    versions = [point.version for point in kept]
    assert versions == sorted(versions)
    assert {1, 1235, 3334, 5000} <= set(versions)
    drawn = chart(points, "USD")
    assert drawn is not None
    assert drawn["event_count"] == 5000
    assert drawn["point_count"] == len(kept)
    assert len(drawn["series"]["balance"].split()) == len(kept)


def test_a_breach_is_marked_on_the_balance_line() -> None:
    events = history(["100000.00", "97000.00"])
    events.append(RuleBreached(3, START, board("94000.00"), {}))

    drawn = chart(points_from_events(events), "USD")

    assert drawn is not None
    (marker,) = drawn["markers"]
    assert marker["kind"] == "breach"
    assert marker["x"] == f"{WIDTH - RIGHT}.0"


def test_no_events_draw_nothing_and_a_flat_line_still_has_a_range() -> None:
    assert chart([], "USD") is None
    flat = chart(points_from_events(history(["100000.00", "100000.00"])), "USD")
    assert flat is not None
    assert len({y for _, y in coordinates(flat["series"]["balance"])}) == 1
