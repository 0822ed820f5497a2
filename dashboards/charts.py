"""Chart geometry for server-drawn SVG: scales, ticks, bars and lines as plain numbers.

The usage dashboards' bar charts and the fleet pages' battery lines. Pure (no I/O, no language):
the templates turn these into ``<rect>``, ``<polyline>`` and ``<text>`` with presentation
attributes only, because the Content-Security-Policy forbids inline styles and there is no
script. Labels arrive already formatted (or are numbers: dates, per cent), so the same geometry
serves Swedish and English pages and the print report.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final
from zoneinfo import ZoneInfo

from api.schemas import BatteryPoint
from dashboards.formatting import HOME_TIME_ZONE

# A bar chart's box, in SVG user units; the SVG scales to its container (viewBox).
WIDTH: Final = 720
HEIGHT: Final = 260
LEFT: Final = 60  # room for the y ticks' labels and the rotated axis title
TOP: Final = 14
BOTTOM: Final = 212  # below: tick labels and the x axis title
RIGHT_PLAIN: Final = 704
RIGHT_WITH_LINE: Final = 656  # a second axis on the right for the line's unit
# More x labels than this overlap at 12 px text on 600-odd units of axis.
MAX_X_LABELS: Final = 12
# Steps of a "nice" scale: 1, 2, 2.5, 5 times a power of ten (2.5 only above 1: counts stay whole).
_NICE_STEPS: Final = (1.0, 2.0, 2.5, 5.0, 10.0)


@dataclass(frozen=True, slots=True)
class Tick:
    """A mark on an axis: where along it, and the words beside it."""

    position: float
    label: str


@dataclass(frozen=True, slots=True)
class Scale:
    """0 to ``top`` in steps of ``step``: ``top`` is the first nice number at or above the data."""

    top: float
    step: float

    @property
    def values(self) -> tuple[float, ...]:
        """The scale's round values from 0 to ``top``, one per tick."""
        count = round(self.top / self.step)
        return tuple(i * self.step for i in range(count + 1))


def nice_scale(maximum: float, ticks: int = 4, *, whole: bool = False) -> Scale:
    """A scale from 0 that holds ``maximum`` in about ``ticks`` round steps.

    ``whole``: the data are counts, so no step below 1 and no 2.5 (no "2.5 alarms" tick).
    """
    if not math.isfinite(maximum) or maximum <= 0:
        return Scale(1.0, 1.0) if whole else Scale(1.0, 0.25)
    raw = maximum / max(1, ticks)
    magnitude = 10 ** math.floor(math.log10(raw))
    step = magnitude * 10
    for factor in _NICE_STEPS:
        candidate = factor * magnitude
        if whole and (candidate < 1 or (factor == 2.5 and magnitude < 10)):
            continue
        if candidate >= raw:
            step = candidate
            break
    top = math.ceil(maximum / step - 1e-9) * step
    return Scale(float(top), float(step))


@dataclass(frozen=True, slots=True)
class Bar:
    """One bar: its box, its value and the words a reader hovers or hears (``title``)."""

    x: float
    y: float
    width: float
    height: float
    value: float
    title: str


@dataclass(frozen=True, slots=True)
class Dot:
    """One point of a bar chart's line, with the words a reader hovers or hears (``title``)."""

    x: float
    y: float
    value: float
    title: str


@dataclass(frozen=True, slots=True)
class PlotArea:
    """A chart's box (``width`` x ``height``), the plot area inside it and both axes' ticks."""

    width: int
    height: int
    left: int
    top: int
    right: int
    bottom: int
    y_ticks: tuple[Tick, ...]
    x_ticks: tuple[Tick, ...]

    @property
    def middle_x(self) -> float:
        """The middle of the plot area across (where the x axis' title stands)."""
        return (self.left + self.right) / 2

    @property
    def middle_y(self) -> float:
        """The middle of the plot area down (where the y axis' title stands)."""
        return (self.top + self.bottom) / 2


@dataclass(frozen=True, slots=True)
class BarChart(PlotArea):
    """Bars over time, optionally with a line on its own axis on the right (e.g. durations)."""

    bars: tuple[Bar, ...] = ()
    # The line, cut where a bucket has no value (no visits: no mean duration), and its points.
    line_segments: tuple[str, ...] = ()
    dots: tuple[Dot, ...] = ()
    line_ticks: tuple[Tick, ...] = ()


def label_every(count: int, max_labels: int = MAX_X_LABELS) -> int:
    """Label every n-th bucket so that at most ``max_labels`` labels share the axis."""
    return max(1, math.ceil(count / max_labels))


def bar_chart(
    values: Sequence[float],
    labels: Sequence[str],
    titles: Sequence[str],
    format_value: Callable[[float], str],
    *,
    whole: bool = True,
    line: Sequence[float | None] | None = None,
    line_titles: Sequence[str] | None = None,
    format_line: Callable[[float], str] | None = None,
) -> BarChart | None:
    """Bars for ``values`` (one per bucket, in order) with ``labels`` under them (thinned to
    fit) and ``titles`` as their accessible text; None when there is nothing to draw (all zero),
    so the page says "no data" instead of showing an empty axis."""
    if not (len(values) == len(labels) == len(titles)):
        raise ValueError("values, labels and titles must be equally long")
    if line is not None and len(line) != len(values):
        raise ValueError("the line needs one value (or None) per bucket")
    if not values or not any(value > 0 for value in values):
        return None
    with_line = line is not None and any(v is not None for v in line)
    right = RIGHT_WITH_LINE if with_line else RIGHT_PLAIN
    scale = nice_scale(max(values), whole=whole)
    slot = (right - LEFT) / len(values)
    gap = min(slot * 0.2, 6.0)

    def y_of(value: float, top_value: float) -> float:
        return BOTTOM - (BOTTOM - TOP) * max(0.0, value) / top_value

    bars = tuple(
        Bar(
            x=round(LEFT + i * slot + gap / 2, 2),
            y=round(y_of(value, scale.top), 2),
            width=round(max(slot - gap, 1.0), 2),
            height=round(BOTTOM - y_of(value, scale.top), 2),
            value=value,
            title=title,
        )
        for i, (value, title) in enumerate(zip(values, titles, strict=True))
    )
    y_ticks = tuple(Tick(round(y_of(v, scale.top), 2), format_value(v)) for v in scale.values)
    every = label_every(len(values))
    x_ticks = tuple(
        Tick(round(LEFT + (i + 0.5) * slot, 2), label)
        for i, label in enumerate(labels)
        if i % every == 0
    )
    chart = BarChart(WIDTH, HEIGHT, LEFT, TOP, right, BOTTOM, y_ticks, x_ticks, bars)
    if not with_line or line is None:
        return chart
    present = [v for v in line if v is not None]
    line_scale = nice_scale(max(present), whole=False)
    shown = format_line or format_value
    texts = line_titles or [shown(v) if v is not None else "" for v in line]
    dots: list[Dot] = []
    segments: list[str] = []
    current: list[str] = []
    for i, value in enumerate(line):
        if value is None:
            if current:
                segments.append(" ".join(current))
            current = []
            continue
        x, y = round(LEFT + (i + 0.5) * slot, 2), round(y_of(value, line_scale.top), 2)
        dots.append(Dot(x, y, value, texts[i]))
        current.append(f"{x},{y}")
    if current:
        segments.append(" ".join(current))
    line_ticks = tuple(Tick(round(y_of(v, line_scale.top), 2), shown(v)) for v in line_scale.values)
    return BarChart(
        WIDTH, HEIGHT, LEFT, TOP, right, BOTTOM, y_ticks, x_ticks, bars,
        # A lone point is no line; its dot still shows it.
        tuple(s for s in segments if " " in s), tuple(dots), line_ticks,
    )  # fmt: skip


def share_of(value: float | None, maximum: float) -> float:
    """``value`` as a fraction 0-1 of ``maximum`` (the width of a bar in a table cell)."""
    if value is None or maximum <= 0 or not math.isfinite(value):
        return 0.0
    return max(0.0, min(1.0, value / maximum))


# --- the fleet's battery charts ----------------------------------------------------------------

BATTERY_CHART_DAYS: Final = 30


@dataclass(frozen=True, slots=True)
class Sparkline:
    """A tiny battery line: ``points`` for an SVG polyline in a ``width`` x ``height`` box."""

    width: int
    height: int
    points: str


def sparkline(
    points: Sequence[BatteryPoint], width: int = 64, height: int = 20
) -> Sparkline | None:
    """The readings spread evenly across the box, 0-100 % bottom to top; None under 2 points."""
    if len(points) < 2:
        return None
    step = (width - 2) / (len(points) - 1)
    coordinates = " ".join(
        f"{1 + i * step:.1f},{1 + (height - 2) * (1 - p.battery / 100):.1f}"
        for i, p in enumerate(points)
    )
    return Sparkline(width, height, coordinates)


@dataclass(frozen=True, slots=True)
class BatteryChart(PlotArea):
    """A battery-over-time chart: the line, the last reading's dot, the first and last level."""

    line: str
    last_x: float
    last_y: float
    first_battery: int
    last_battery: int


def battery_chart(
    points: Sequence[BatteryPoint],
    end: datetime,
    days: int = BATTERY_CHART_DAYS,
    zone: ZoneInfo = HOME_TIME_ZONE,
) -> BatteryChart | None:
    """Time on x (``end`` minus ``days`` to ``end``, dates in ``zone``), 0-100 % on y; None
    without readings."""
    if not points:
        return None
    width, height, left, top, right, bottom = 640, 260, 52, 12, 612, 212
    start = end - timedelta(days=days)
    span_s = (end - start).total_seconds()

    def x(at: datetime) -> float:
        fraction = min(1.0, max(0.0, (at - start).total_seconds() / span_s))
        return left + (right - left) * fraction

    def y(battery: int) -> float:
        return bottom - (bottom - top) * battery / 100

    y_ticks = tuple(Tick(y(level), f"{level} %") for level in range(0, 101, 25))
    tick_every = max(1, math.ceil(days / 6))
    x_ticks = tuple(
        Tick(x(end - timedelta(days=back)), (end - timedelta(days=back)).astimezone(zone)
             .strftime("%d/%m"))
        for back in range(days, -1, -tick_every)
    )  # fmt: skip
    line = " ".join(f"{x(p.time):.1f},{y(p.battery):.1f}" for p in points)
    return BatteryChart(
        width, height, left, top, right, bottom, y_ticks, x_ticks, line,
        x(points[-1].time), y(points[-1].battery), points[0].battery, points[-1].battery,
    )  # fmt: skip
