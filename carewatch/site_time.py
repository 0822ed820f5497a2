"""A site's time zone from ``sites.timezone``, for every service that judges local time."""

from __future__ import annotations

import logging
from datetime import tzinfo
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from devices.rules import DEFAULT_SITE_TZ

log = logging.getLogger(__name__)


@lru_cache(maxsize=256)
def site_tz(name: str | None) -> tzinfo:
    """A site's time zone (``sites.timezone``); the default, logged once, if it is not one."""
    if name is None:
        return DEFAULT_SITE_TZ
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        log.warning("site time zone %r unknown; using %s", name, DEFAULT_SITE_TZ)
        return DEFAULT_SITE_TZ
