"""The fleet page's pure parts: query parameters to a view and back, durations, SVG geometry."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from api.schemas import BatteryPoint
from dashboards.charts import battery_chart, sparkline
from dashboards.fleet import FleetView
from dashboards.formatting import format_duration
from dashboards.kit import strings

END = datetime(2026, 11, 22, 12, tzinfo=UTC)


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        pytest.param({}, FleetView(), id="defaults"),
        pytest.param(
            {"site": "a", "kind": "door_lock", "status": "offline", "battery": "low"},
            FleetView(site="a", kind="door_lock", status="offline", battery_low=True),
            id="filters",
        ),
        pytest.param({"sort": "battery", "order": "desc", "page": "3"},
                     FleetView(sort="battery", descending=True, page=3), id="sort-and-page"),
        pytest.param({"status": "bogus", "sort": "password", "page": "-1"}, FleetView(),
                     id="unknown-values-fall-back"),
        pytest.param({"page": "0"}, FleetView(), id="page-zero"),
        pytest.param({"page": "99999999"}, FleetView(page=10_000), id="page-capped"),
    ],
)  # fmt: skip
def test_view_from_query(query: dict[str, str], expected: FleetView) -> None:
    """Query parameters become a view; anything unknown falls back to the default."""
    assert FleetView.from_query(query) == expected


def test_view_urls_keep_filters_and_toggle_sorting() -> None:
    """Links keep the filters, leave defaults out, and a second click on a column reverses it."""
    view = FleetView(kind="door_lock", sort="battery", page=2)
    assert view.url() == "/fleet?kind=door_lock&sort=battery&page=2"
    assert view.sort_url("battery") == "/fleet?kind=door_lock&sort=battery&order=desc"
    assert view.sort_url("site") == "/fleet?kind=door_lock&sort=site"
    assert (view.aria_sort("battery"), view.aria_sort("site")) == ("ascending", "none")


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(5, "5 s"), (125, "2 min"), (3 * 3600 + 300, "3 h 5 min"), (50 * 3600, "2 d 2 h")],
)
def test_format_duration(seconds: float, text: str) -> None:
    """Durations in the board's words."""
    assert format_duration(seconds, strings()["sv"]) == text


def test_sparkline_and_chart_geometry() -> None:
    """Full battery is at the top, empty at the bottom; time runs left to right."""
    points = [BatteryPoint(time=END - timedelta(days=30), battery=100),
              BatteryPoint(time=END, battery=0)]  # fmt: skip
    assert sparkline(points[:1]) is None
    line = sparkline(points, width=64, height=20)
    assert line is not None
    assert line.points == "1.0,1.0 63.0,19.0"
    chart = battery_chart(points, END)
    assert chart is not None
    assert chart.line == f"{chart.left}.0,{chart.top}.0 {chart.right}.0,{chart.bottom}.0"
    assert [tick.label for tick in chart.y_ticks] == ["0 %", "25 %", "50 %", "75 %", "100 %"]
    assert chart.x_ticks[0].label == "23/10"
    assert chart.x_ticks[-1].label == "22/11"
    assert battery_chart([], END) is None
