"""The usage pages' tables: one definition each for the page and its CSV (columns, rows, the
small bars in cells), how a cell is written on the page and in the CSV, and the CSV itself.

Pure (no I/O). The CSV format and why it is so are in :mod:`dashboards.usage`'s docstring: UTF-8
with a byte-order mark, ``;`` between fields, decimal comma, CRLF.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final, Literal
from zoneinfo import ZoneInfo

from dashboards.charts import share_of
from dashboards.formatting import DASH, format_duration, format_number, format_percent

ColumnKind = Literal["text", "count", "number", "minutes", "duration", "percent", "time"]
Cell = str | int | float | datetime | None


@dataclass(frozen=True, slots=True)
class Column:
    """A table's column: its header, how its cells are written, and its bars' scale group."""

    key: str  # strings.json key of its header
    kind: ColumnKind
    # Columns in one group share a bar scale (the median and p90 of one measure compare).
    bar_group: str | None = None


@dataclass(frozen=True, slots=True)
class Table:
    """A table of the page and its CSV: columns, rows, and each bar group's largest value."""

    name: str
    columns: tuple[Column, ...]
    rows: tuple[tuple[Cell, ...], ...]
    group_max: Mapping[str, float] = field(default_factory=dict)

    def bar_share(self, column: int, value: Cell) -> float | None:
        """The width (0-1) of the small bar in a cell; None for a column without bars."""
        group = self.columns[column].bar_group
        if group is None or not isinstance(value, int | float):
            return None
        return share_of(float(value), self.group_max.get(group, 0.0))


def make_table(name: str, columns: Sequence[Column], rows: Sequence[Sequence[Cell]]) -> Table:
    """The table ``name`` with each bar group's largest value, the scale of its cells' bars."""
    group_max: dict[str, float] = {}
    for index, column in enumerate(columns):
        if column.bar_group is None:
            continue
        values = [float(v) for r in rows if isinstance(v := r[index], int | float)]
        group_max[column.bar_group] = max([group_max.get(column.bar_group, 0.0), *values])
    return Table(name, tuple(columns), tuple(tuple(r) for r in rows), group_max)


def format_cell(value: Cell, kind: ColumnKind, lang: str, t: Mapping[str, Any],
                zone: ZoneInfo) -> str:  # fmt: skip
    """A cell as the page shows it."""
    if value is None:
        return DASH
    if isinstance(value, datetime):
        return value.astimezone(zone).strftime("%Y-%m-%d %H:%M")
    if isinstance(value, str):
        return value
    match kind:
        case "count":
            return format_number(value, lang)
        case "number":
            return format_number(value, lang, 1)
        case "minutes":
            return f"{format_number(value, lang, 0)}\N{NO-BREAK SPACE}min"
        case "duration":
            return format_duration(value, t)
        case "percent":
            return format_percent(value, lang)
        case _:
            return format_number(value, lang, 1)


_FORMULA_STARTS: Final = frozenset("=+-@\t\r")


def csv_cell(value: Cell, kind: ColumnKind, zone: ZoneInfo) -> str:
    """A cell in the CSV: plain numbers with a decimal comma, shares in per cent, seconds."""
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.astimezone(zone).strftime("%Y-%m-%d %H:%M")
    if isinstance(value, str):
        # A label or site name that starts like a formula would run as one in Excel (CSV
        # injection, OWASP): a leading apostrophe makes Excel show it as the text it is.
        return "'" + value if value[:1] in _FORMULA_STARTS else value
    if kind == "count" and float(value).is_integer():
        return str(int(value))
    number = value * 100 if kind == "percent" else value
    return f"{number:.1f}".replace(".", ",")


def to_csv(table: Table, t: Mapping[str, Any], zone: ZoneInfo) -> bytes:
    """The table as Excel-ready CSV bytes (see the module docstring for the format)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter=";", lineterminator="\r\n")
    writer.writerow([_header(t, c) for c in table.columns])
    for row in table.rows:
        writer.writerow(
            [csv_cell(v, c.kind, zone) for v, c in zip(row, table.columns, strict=True)]
        )
    return ("\ufeff" + buffer.getvalue()).encode("utf-8")


def _header(t: Mapping[str, Any], column: Column) -> str:
    header = str(t[column.key])
    unit = {"duration": " (s)", "percent": " (%)", "minutes": " (min)"}.get(column.kind, "")
    return header + unit
