"""The alarm response as a municipality reports it (#12): per site and local month, how many
responses there were, the median and 90th percentile of the time to accept ("contact"), to
arrive (on site) and to close, the share within the site's promise, how arrivals were proved,
and the slowest responses. The managers' pages and their CSV read it (dashboards/
usage_response.py).

A response is an alert of a response rule (:data:`devices.response.DEFAULT_POLICY`), counted
in the month and period of its ``opened_at`` in its site's own time zone (a site's local day,
as the supervision summary counts its nights); an alert nobody touched has no
``alert_responses`` row and counts as a response never accepted. Times are measured from the
alert's opening, as :func:`devices.response.response_times` measures them, and compared with
the promise as :func:`devices.response.within_promise` does (``<=``); a share's denominator is
the responses that reached that measure (accepted, or on site), so a response still waiting is
no verdict yet. A site with no promise has no share (None): it is measured only.

:data:`_SITES` decides the scope (:mod:`api.scope`, then the asked-for site); the other
statements take the ids it returned. Nothing here names a resident: the slowest responses carry
the residence's label (else the device's), never a person.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, Final

from psycopg.rows import dict_row

from api.auth import UserContext
from api.pool import Pool
from api.scope import SCOPE, scope_params
from devices.response import DEFAULT_POLICY, Promise

SLOWEST_LIMIT: Final = 10
_RULES: Final = sorted(DEFAULT_POLICY.rules)

# --- statements (f-strings only join constant fragments; every value is a parameter) --------

_SITES: Final = f"""
    SELECT s.id, s.name, s.timezone, s.contact_promise_s, s.on_site_promise_s FROM sites s
     WHERE {SCOPE}
       AND (%(site_id)s::text IS NULL OR s.id = %(site_id)s::text)
     ORDER BY s.name, s.id
"""  # noqa: S608 - constant fragments only

# The responses of the period, with their times in seconds from the opening. The bounds are
# local midnights of each site's own zone: the first day's and the one after the last day's;
# the constant bounds a day wider (wider than any zone's offset) let the planner use the alerts'
# (device_id, opened_at) index whichever way it joins.
_RESPONSES: Final = """
      FROM alerts a
      JOIN devices d ON d.id = a.device_id
      JOIN sites s ON s.id = d.site_id
      LEFT JOIN alert_responses ar ON ar.alert_id = a.id
      LEFT JOIN residences r ON r.id = d.residence_id
     CROSS JOIN LATERAL (
           SELECT extract(epoch FROM ar.accepted_at - a.opened_at)::float8 AS contact_s,
                  extract(epoch FROM ar.on_site_at - a.opened_at)::float8 AS on_site_s,
                  extract(epoch FROM ar.closed_at - a.opened_at)::float8 AS close_s) t
     WHERE d.site_id = ANY (%(site_ids)s::text[])
       AND a.rule = ANY (%(rules)s::text[])
       AND a.opened_at >= %(since)s::date - interval '1 day'
       AND a.opened_at < %(until)s::date + interval '2 days'
       AND a.opened_at >= (%(since)s::date::timestamp AT TIME ZONE s.timezone)
       AND a.opened_at < ((%(until)s::date + 1)::timestamp AT TIME ZONE s.timezone)
"""

# Per site and local month, and per site over the period (the grouping set without a month:
# percentiles of a period cannot be put together from its months').
_FIGURES: Final = f"""
    SELECT d.site_id,
           date_trunc('month', a.opened_at AT TIME ZONE s.timezone)::date AS month,
           GROUPING(date_trunc('month', a.opened_at AT TIME ZONE s.timezone)) = 1 AS total,
           count(*) AS responses,
           count(t.contact_s) AS accepted,
           percentile_cont(0.5) WITHIN GROUP (ORDER BY t.contact_s) AS contact_median_s,
           percentile_cont(0.9) WITHIN GROUP (ORDER BY t.contact_s) AS contact_p90_s,
           count(*) FILTER (WHERE t.contact_s <= s.contact_promise_s) AS contact_within,
           count(t.on_site_s) AS arrived,
           percentile_cont(0.5) WITHIN GROUP (ORDER BY t.on_site_s) AS on_site_median_s,
           percentile_cont(0.9) WITHIN GROUP (ORDER BY t.on_site_s) AS on_site_p90_s,
           count(*) FILTER (WHERE t.on_site_s <= s.on_site_promise_s) AS on_site_within,
           count(*) FILTER (WHERE ar.on_site_source = 'lock') AS by_lock,
           count(*) FILTER (WHERE ar.on_site_source = 'staff') AS by_hand,
           count(t.close_s) AS closed,
           percentile_cont(0.5) WITHIN GROUP (ORDER BY t.close_s) AS close_median_s,
           percentile_cont(0.9) WITHIN GROUP (ORDER BY t.close_s) AS close_p90_s
      {_RESPONSES}
     GROUP BY GROUPING SETS (
           (d.site_id, date_trunc('month', a.opened_at AT TIME ZONE s.timezone)),
           (d.site_id))
"""

# Slowest by the time to arrive, else (never on site) by the time to accept; one never
# accepted has no time to rank by and is counted above instead.
_SLOWEST: Final = f"""
    SELECT a.id AS alert_id, a.rule, d.site_id, coalesce(r.label, d.label) AS residence,
           a.opened_at, t.contact_s, t.on_site_s, t.close_s, ar.on_site_source, ar.action
      {_RESPONSES}
       AND t.contact_s IS NOT NULL
     ORDER BY coalesce(t.on_site_s, t.contact_s) DESC, a.id
     LIMIT %(limit)s
"""


@dataclass(frozen=True, slots=True)
class ResponseReportQuery:
    """Local days ``since`` to ``until`` (both included, already checked) of each site;
    ``site`` None: every site the caller may see."""

    since: date
    until: date
    site: str | None = None


@dataclass(frozen=True, slots=True)
class ResponseFigures:
    """The responses of one site over one month (or the whole period). Times in seconds from
    the alert's opening; None where nothing reached that measure. ``*_within``: how many kept
    the promise, ``*_share`` (0-1) of those accepted or on site; both None where the site
    promises nothing (and the share where none got that far)."""

    responses: int
    accepted: int
    contact_median_s: float | None
    contact_p90_s: float | None
    contact_within: int | None
    contact_share: float | None
    arrived: int
    on_site_median_s: float | None
    on_site_p90_s: float | None
    on_site_within: int | None
    on_site_share: float | None
    by_lock: int
    by_hand: int
    closed: int
    close_median_s: float | None
    close_p90_s: float | None


def _share(within: int | None, of: int) -> float | None:
    return None if within is None or of == 0 else within / of


@dataclass(frozen=True, slots=True)
class ResponseMonth:
    """One site's responses opened in one local calendar month (``month``: its first day)."""

    month: date
    figures: ResponseFigures


@dataclass(frozen=True, slots=True)
class ResponseSite:
    """One site: its promise, its months with responses (oldest first) and its period's
    figures (None: no responses in the period)."""

    site_id: str
    site_name: str
    timezone: str
    promise: Promise
    months: tuple[ResponseMonth, ...]
    totals: ResponseFigures | None


@dataclass(frozen=True, slots=True)
class SlowResponse:
    """One of the slowest responses: where (the residence, never a person), what and how long."""

    alert_id: int
    rule: str
    site_id: str
    residence: str
    opened_at: datetime
    contact_s: float
    on_site_s: float | None
    close_s: float | None
    on_site_source: str | None
    action: str | None


@dataclass(frozen=True, slots=True)
class ResponseReport:
    """The caller's sites (by name) over ``since`` to ``until``, and the slowest responses."""

    since: date
    until: date
    sites: tuple[ResponseSite, ...]
    slowest: tuple[SlowResponse, ...]

    @property
    def responses(self) -> int:
        """How many responses there were at every site together."""
        return sum(site.totals.responses for site in self.sites if site.totals is not None)


async def response_report(
    pool: Pool, user: UserContext, query: ResponseReportQuery
) -> ResponseReport | None:
    """The report of the caller's sites (None: the asked-for site is not one of them)."""
    params: dict[str, Any] = {**scope_params(user), "site_id": query.site}
    async with pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(_SITES, params)
        sites = await cur.fetchall()
        if query.site is not None and not sites:
            return None
        ids = {
            "site_ids": [site["id"] for site in sites],
            "rules": _RULES,
            "since": query.since,
            "until": query.until,
            "limit": SLOWEST_LIMIT,
        }
        await cur.execute(_FIGURES, ids)
        figures = await cur.fetchall()
        await cur.execute(_SLOWEST, ids)
        slowest = await cur.fetchall()
    months: dict[str, list[ResponseMonth]] = defaultdict(list)
    totals: dict[str, ResponseFigures] = {}
    promises = {site["id"]: _promise(site) for site in sites}
    for row in figures:
        counted = _figures(row, promises[row["site_id"]])
        if row["total"]:
            totals[row["site_id"]] = counted
        else:
            months[row["site_id"]].append(ResponseMonth(row["month"], counted))
    return ResponseReport(
        since=query.since,
        until=query.until,
        sites=tuple(
            ResponseSite(
                site_id=site["id"],
                site_name=site["name"],
                timezone=site["timezone"],
                promise=promises[site["id"]],
                months=tuple(sorted(months[site["id"]], key=lambda m: m.month)),
                totals=totals.get(site["id"]),
            )
            for site in sites
        ),
        slowest=tuple(
            SlowResponse(**{name: row[name] for name in SlowResponse.__dataclass_fields__})
            for row in slowest
        ),
    )


def _promise(site: dict[str, Any]) -> Promise:
    return Promise(contact_s=site["contact_promise_s"], on_site_s=site["on_site_promise_s"])


def _figures(row: dict[str, Any], promise: Promise) -> ResponseFigures:
    contact_within = None if promise.contact_s is None else row["contact_within"]
    on_site_within = None if promise.on_site_s is None else row["on_site_within"]
    return ResponseFigures(
        responses=row["responses"],
        accepted=row["accepted"],
        contact_median_s=row["contact_median_s"],
        contact_p90_s=row["contact_p90_s"],
        contact_within=contact_within,
        contact_share=_share(contact_within, row["accepted"]),
        arrived=row["arrived"],
        on_site_median_s=row["on_site_median_s"],
        on_site_p90_s=row["on_site_p90_s"],
        on_site_within=on_site_within,
        on_site_share=_share(on_site_within, row["arrived"]),
        by_lock=row["by_lock"],
        by_hand=row["by_hand"],
        closed=row["closed"],
        close_median_s=row["close_median_s"],
        close_p90_s=row["close_p90_s"],
    )
