"""Words and numbers as the pages show them: durations, times, numbers, shares, kind names.

Pure (no I/O): the words come from strings.json, passed in as ``t`` (one language's strings),
so the same helpers serve the Swedish and the English pages.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from devices.catalog import DEFAULT_CATALOG

# The care homes' clock, whatever the browser's or the server's zone.
HOME_TIME_ZONE_NAME: Final = "Europe/Stockholm"
HOME_TIME_ZONE: Final = ZoneInfo(HOME_TIME_ZONE_NAME)
# What a page shows for a value that does not exist (no reading, no alert to time).
DASH: Final = "\N{EN DASH}"


def fill(template: object, **values: str) -> str:
    """A string of strings.json with its ``{name}`` placeholders filled in."""
    text = str(template)
    for key, value in values.items():
        text = text.replace("{" + key + "}", value)
    return text


def format_duration(seconds: float | None, t: Mapping[str, Any]) -> str:
    """ "42 s", "5 min", "3 h 5 min", "2 d 4 h", with the board's words; a dash for None."""
    if seconds is None:
        return DASH
    whole = max(0, int(seconds))
    if whole < 60:
        return fill(t["duration_seconds"], n=str(whole))
    minutes = whole // 60
    if minutes < 60:
        return fill(t["duration_minutes"], n=str(minutes))
    hours = minutes // 60
    if hours < 24:
        return fill(t["duration_hours"], h=str(hours), m=str(minutes % 60))
    return fill(t["duration_days"], d=str(hours // 24), h=str(hours % 24))


def format_time(value: datetime | None, *, seconds: bool = False) -> str:
    """Stockholm time, to the minute or second; empty for None."""
    if value is None:
        return ""
    return value.astimezone(HOME_TIME_ZONE).strftime(
        "%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M"
    )


def format_number(value: float | None, lang: str, decimals: int = 0) -> str:
    """``1 234,5`` in Swedish (no-break space, decimal comma), ``1,234.5`` in English."""
    if value is None or not math.isfinite(value):
        return DASH
    text = f"{value:,.{decimals}f}"
    if lang == "sv":
        text = text.replace(",", "\N{NO-BREAK SPACE}").replace(".", ",")
    return text


def format_percent(share: float | None, lang: str) -> str:
    """A share 0-1 as ``97,5 %`` / ``97.5 %``."""
    if share is None:
        return DASH
    return f"{format_number(share * 100, lang, 1)}\N{NO-BREAK SPACE}%"


def kind_title(kind: str, lang: str) -> str:
    """The catalog's name of the kind in ``lang``; the kind itself if the catalog lacks it."""
    known = DEFAULT_CATALOG.get(kind)
    if known is None:
        return kind
    return known.title_sv if lang == "sv" else known.title_en


def zone_named(name: str) -> ZoneInfo:
    """The time zone ``name``; the care homes' zone if this machine does not know it."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return HOME_TIME_ZONE
