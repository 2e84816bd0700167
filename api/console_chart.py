"""The audit chart: an account's balance and equity against its daily-loss and max-loss
floors, drawn by the server as inline SVG.

Every account event records the account's public numbers after it (`board`), so the series
come straight from the account's events. The horizontal axis is the event sequence (the
order in which the ledger judged them), labelled with the events' dates: bridges replay
history, so recording times bunch up and trade times go back for late trades, but the
sequence is always the order the floors were applied in. Long histories are thinned to at
most about `MAX_POINTS` points per series, keeping each slice's first point and the
extremes of balance and equity, so a dip through a floor never disappears from the
picture. Coordinates are computed with Decimal (money never meets a float).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

MAX_POINTS = 400
WIDTH = 900
HEIGHT = 320
LEFT = 96
RIGHT = 16
TOP = 16
BOTTOM = 40
SERIES = ("balance", "equity", "daily_loss_floor", "max_loss_floor")
_ONE_DECIMAL = Decimal("0.1")
# Events drawn as markers on the balance line, and what the marker says.
_MARKED = {"RuleBreached": "breach", "PhasePassed": "pass", "PayoutWithdrawn": "payout"}


@dataclass(frozen=True)
class Point:
    version: int
    moment: datetime
    values: dict[str, Decimal]
    kind: str  # the event's type, for markers (RuleBreached, PhasePassed, PayoutWithdrawn)


def points_from_events(events: list[Any]) -> list[Point]:
    points = []
    for event in events:
        board = getattr(event, "board", None)
        if not isinstance(board, dict):
            continue
        values = {name: Decimal(str(board[name])) for name in SERIES}
        points.append(Point(event.originator_version, _moment(event), values, type(event).__name__))
    return points


def _moment(event: Any) -> datetime:
    """When it happened for the account: a trade's close, a mark's or breach's instant;
    else when the ledger recorded it."""
    trade = getattr(event, "trade", None)
    closed_at = trade.get("closed_at") if isinstance(trade, dict) else None
    if isinstance(closed_at, datetime):
        return closed_at
    at = getattr(event, "at", None)
    if isinstance(at, datetime):
        return at
    moment: datetime = event.timestamp
    return moment


def thin(points: list[Point], max_points: int = MAX_POINTS) -> list[Point]:
    """At most about `max_points` points: per slice its first point and the points with
    the lowest and highest balance and equity; the last point and markers always."""
    if len(points) <= max_points:
        return list(points)
    slices = max(1, max_points // 5)
    size = -(-len(points) // slices)
    keep: set[int] = {len(points) - 1}
    for start in range(0, len(points), size):
        indexes = range(start, min(start + size, len(points)))
        keep.add(start)
        for name in ("balance", "equity"):
            keep.update(_extremes(points, indexes, name))
    keep.update(i for i, point in enumerate(points) if point.kind in _MARKED)
    return [points[i] for i in sorted(keep)]


def _extremes(points: list[Point], indexes: range, name: str) -> tuple[int, int]:
    """The indexes of the lowest and the highest value of series `name` in `indexes`."""
    lowest = highest = indexes[0]
    for index in indexes:
        value = points[index].values[name]
        if value < points[lowest].values[name]:
            lowest = index
        if value > points[highest].values[name]:
            highest = index
    return lowest, highest


def chart(points: list[Point], currency: str) -> dict[str, Any] | None:
    """Everything the template draws: polyline point lists, axis ticks, markers."""
    if not points:
        return None
    shown = thin(points)
    low = min(min(point.values.values()) for point in shown)
    high = max(max(point.values.values()) for point in shown)
    span = high - low
    pad = span / 20 if span else max(abs(high) / 100, Decimal(1))
    low, high = low - pad, high + pad
    plot_width = Decimal(WIDTH - LEFT - RIGHT)
    plot_height = Decimal(HEIGHT - TOP - BOTTOM)
    last = max(1, len(points) - 1)
    # Index of each shown point in the full sequence: x is the event's place in it.
    place = {point.version: index for index, point in enumerate(points)}

    def x_of(point: Point) -> Decimal:
        return Decimal(LEFT) + plot_width * place[point.version] / last

    def y_of(value: Decimal) -> Decimal:
        return Decimal(TOP) + plot_height * (high - value) / (high - low)

    def text(number: Decimal) -> str:
        return str(number.quantize(_ONE_DECIMAL))

    series = {
        name: " ".join(f"{text(x_of(p))},{text(y_of(p.values[name]))}" for p in shown)
        for name in SERIES
    }
    y_ticks = []
    for step in range(5):
        value = low + (high - low) * step / 4
        y_ticks.append({"y": text(y_of(value)), "label": f"{value.quantize(Decimal(1)):,}"})
    x_ticks = []
    ends = {0: "start", len(points) - 1: "end"}
    for index in sorted({0, len(points) // 2, len(points) - 1}):
        point = points[index]
        x_ticks.append(
            {
                "x": text(x_of(point)),
                "label": f"v{point.version} · {point.moment.date().isoformat()}",
                "anchor": ends.get(index, "middle"),
            }
        )
    markers = [
        {
            "x": text(x_of(point)),
            "y": text(y_of(point.values["balance"])),
            "kind": _MARKED[point.kind],
            "title": f"{_MARKED[point.kind]} at version {point.version}, "
            f"{point.moment.isoformat()}: balance {point.values['balance']} {currency}",
        }
        for point in shown
        if point.kind in _MARKED
    ]
    return {
        "width": WIDTH,
        "height": HEIGHT,
        "left": LEFT,
        "right": WIDTH - RIGHT,
        "top": TOP,
        "bottom": HEIGHT - BOTTOM,
        "series": series,
        "point_count": len(shown),
        "event_count": len(points),
        "y_ticks": y_ticks,
        "x_ticks": x_ticks,
        "markers": markers,
        "currency": currency,
    }
