"""The alarm response on the managers' pages (#12): per site, over the period and month by
month, how fast responses were accepted ("contact"), reached on site and closed (median and
90th percentile), the share within the site's promise written beside the promise ("inom
5 min: 75 %"), how arrivals were proved (the lock or by hand), and the slowest responses; on
``/dashboards``, in its CSV exports and in the monthly report.

The figures are :func:`api.response_report_queries.response_report`'s, read for the view's days
in each site's own time zone. A site that promises nothing says so in words ("no promise set —
measured only") instead of an empty share; a period without responses says so instead of
showing zeros. The CSV carries the promise in seconds, the count within and the share as
separate columns (numbers Excel can sum), where the page writes them as one phrase.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any, Final, Literal

from api.auth import UserContext
from api.pool import Pool
from api.response_report_queries import (
    ResponseFigures,
    ResponseReport,
    ResponseReportQuery,
    ResponseSite,
    response_report,
)
from dashboards.formatting import fill, format_duration, format_number, format_percent
from dashboards.usage_tables import Cell, Column, Table, make_table
from devices.response import DEFAULT_POLICY

# The exports' names after /dashboards/export/alarm_response_ (not "response_": the usage
# report's own response_times table is exported at /dashboards/export/response_times.csv).
ResponseTableName = Literal["sites", "months", "slowest"]

SITE: Final = Column("usage_col_site", "text")
MONTH: Final = Column("respons_report_col_month", "text")
RESPONSES: Final = Column("respons_report_col_responses", "count")
ACCEPTED: Final = Column("respons_report_col_accepted", "count")
CONTACT_MEDIAN: Final = Column("respons_report_col_contact_median", "duration", "contact")
CONTACT_P90: Final = Column("respons_report_col_contact_p90", "duration", "contact")
CONTACT_PROMISE: Final = Column("respons_report_col_contact_promise", "text")
ARRIVED: Final = Column("respons_report_col_arrived", "count")
ON_SITE_MEDIAN: Final = Column("respons_report_col_on_site_median", "duration", "on_site")
ON_SITE_P90: Final = Column("respons_report_col_on_site_p90", "duration", "on_site")
ON_SITE_PROMISE: Final = Column("respons_report_col_on_site_promise", "text")
BY_LOCK: Final = Column("respons_report_col_by_lock", "count")
BY_HAND: Final = Column("respons_report_col_by_hand", "count")
CLOSED: Final = Column("respons_report_col_closed", "count")
CLOSE_MEDIAN: Final = Column("respons_report_col_close_median", "duration", "close")
CLOSE_P90: Final = Column("respons_report_col_close_p90", "duration", "close")
# The CSV's promise: seconds, how many kept it, the share (each empty without a promise).
CONTACT_PROMISE_S: Final = Column("respons_report_col_contact_promise_s", "duration")
CONTACT_WITHIN: Final = Column("respons_report_col_contact_within", "count")
CONTACT_SHARE: Final = Column("respons_report_col_contact_share", "percent")
ON_SITE_PROMISE_S: Final = Column("respons_report_col_on_site_promise_s", "duration")
ON_SITE_WITHIN: Final = Column("respons_report_col_on_site_within", "count")
ON_SITE_SHARE: Final = Column("respons_report_col_on_site_share", "percent")
# The slowest responses.
OPENED: Final = Column("usage_col_opened", "time")
RESIDENCE: Final = Column("respons_report_col_residence", "text")
RULE: Final = Column("usage_col_rule", "text")
CONTACT_TIME: Final = Column("respons_report_col_contact_time", "duration", "slow")
ON_SITE_TIME: Final = Column("respons_report_col_on_site_time", "duration", "slow")
CLOSE_TIME: Final = Column("respons_report_col_close_time", "duration")
ARRIVAL: Final = Column("respons_report_col_arrival", "text")
ACTION: Final = Column("respons_report_col_action", "text")


async def load_responses(
    pool: Pool, user: UserContext, since: date, last: date, site: str | None
) -> ResponseReport | None:
    """The responses opened on the local days ``since`` to ``last`` (both included) of the
    caller's sites (``site``: that one); None if ``site`` is not one of them."""
    return await response_report(
        pool, user, ResponseReportQuery(since=since, until=last, site=site)
    )


def promise_phrase(
    promised_s: int | None, share: float | None, t: Mapping[str, Any], lang: str
) -> str:
    """The promise beside its share ("inom 5 min: 75 %"), or that there is none."""
    if promised_s is None:
        return str(t["respons_report_no_promise"])
    return fill(
        t["respons_report_within"],
        promise=format_duration(promised_s, t),
        share=format_percent(share, lang),
    )


def _figure_cells(
    site: ResponseSite, f: ResponseFigures, t: Mapping[str, Any], lang: str, *, for_csv: bool
) -> list[Cell]:
    promise = site.promise
    if for_csv:
        contact: list[Cell] = [promise.contact_s, f.contact_within, f.contact_share]
        on_site: list[Cell] = [promise.on_site_s, f.on_site_within, f.on_site_share]
    else:
        contact = [promise_phrase(promise.contact_s, f.contact_share, t, lang)]
        on_site = [promise_phrase(promise.on_site_s, f.on_site_share, t, lang)]
    return [
        f.responses, f.accepted, f.contact_median_s, f.contact_p90_s, *contact,
        f.arrived, f.on_site_median_s, f.on_site_p90_s, *on_site, f.by_lock, f.by_hand,
        f.closed, f.close_median_s, f.close_p90_s,
    ]  # fmt: skip


def _figure_columns(*, for_csv: bool) -> list[Column]:
    contact = [CONTACT_PROMISE_S, CONTACT_WITHIN, CONTACT_SHARE] if for_csv else [CONTACT_PROMISE]
    on_site = [ON_SITE_PROMISE_S, ON_SITE_WITHIN, ON_SITE_SHARE] if for_csv else [ON_SITE_PROMISE]
    return [
        RESPONSES, ACCEPTED, CONTACT_MEDIAN, CONTACT_P90, *contact,
        ARRIVED, ON_SITE_MEDIAN, ON_SITE_P90, *on_site, BY_LOCK, BY_HAND,
        CLOSED, CLOSE_MEDIAN, CLOSE_P90,
    ]  # fmt: skip


def response_tables(
    report: ResponseReport, t: Mapping[str, Any], lang: str, *, for_csv: bool = False
) -> dict[str, Table]:
    """The section's tables: per site over the period (``alarm_response_sites``), per month
    and site (``alarm_response_months``) and the slowest responses (``alarm_response_slowest``);
    ``for_csv``: the promise as seconds, count within and share instead of a phrase."""
    sites: list[list[Cell]] = [
        [site.site_name, *_figure_cells(site, site.totals, t, lang, for_csv=for_csv)]
        for site in report.sites
        if site.totals is not None
    ]
    order = {site.site_id: index for index, site in enumerate(report.sites)}
    listed = sorted(
        ((month, site) for site in report.sites for month in site.months),
        key=lambda pair: (pair[0].month, order[pair[1].site_id]),
    )
    months: list[list[Cell]] = [
        [f"{month.month:%Y-%m}", site.site_name,
         *_figure_cells(site, month.figures, t, lang, for_csv=for_csv)]
        for month, site in listed
    ]  # fmt: skip
    names = {site.site_id: site.site_name for site in report.sites}
    sv = lang == "sv"
    slowest: list[list[Cell]] = [
        [
            s.opened_at,
            names.get(s.site_id, s.site_id),
            s.residence,
            str(t["rule"].get(s.rule, s.rule)),
            s.contact_s,
            s.on_site_s,
            s.close_s,
            None if s.on_site_source is None else str(t[f"respons_report_by_{s.on_site_source}"]),
            _action_title(s.action, sv=sv),
        ]
        for s in report.slowest
    ]
    figures = _figure_columns(for_csv=for_csv)
    slow_columns = (OPENED, SITE, RESIDENCE, RULE, CONTACT_TIME, ON_SITE_TIME, CLOSE_TIME,
                    ARRIVAL, ACTION)  # fmt: skip
    return {
        "alarm_response_sites": make_table("alarm_response_sites", (SITE, *figures), sites),
        "alarm_response_months": make_table(
            "alarm_response_months", (MONTH, SITE, *figures), months
        ),
        "alarm_response_slowest": make_table("alarm_response_slowest", slow_columns, slowest),
    }


def _action_title(code: str | None, *, sv: bool) -> str | None:
    if code is None:
        return None
    action = DEFAULT_POLICY.actions.get(code)
    if action is None:
        return code
    return action.title_sv if sv else action.title_en


@dataclass(frozen=True, slots=True)
class ResponseSection:
    """What the "Alarm response" section shows: its words per site, its tables, and whether
    there were responses at all."""

    hint: str
    any_responses: bool
    site_lines: Sequence[str]
    tables: Mapping[str, Table]


def site_line(site: ResponseSite, t: Mapping[str, Any], lang: str) -> str:
    """One site's figures in words, each promise beside what it promises."""
    f = site.totals
    if f is None:
        return fill(t["respons_report_site_none"], site=site.site_name)
    return fill(
        t["respons_report_site_line"],
        site=site.site_name,
        responses=format_number(f.responses, lang),
        accepted=format_number(f.accepted, lang),
        contact_median=format_duration(f.contact_median_s, t),
        contact_promise=promise_phrase(site.promise.contact_s, f.contact_share, t, lang),
        arrived=format_number(f.arrived, lang),
        on_site_median=format_duration(f.on_site_median_s, t),
        on_site_promise=promise_phrase(site.promise.on_site_s, f.on_site_share, t, lang),
        by_lock=format_number(f.by_lock, lang),
        by_hand=format_number(f.by_hand, lang),
    )


def response_section(report: ResponseReport, t: Mapping[str, Any], lang: str) -> ResponseSection:
    """The section of ``report`` with words and numbers in ``lang``."""
    return ResponseSection(
        hint=fill(
            t["respons_report_hint"], first=report.since.isoformat(), last=report.until.isoformat()
        ),
        any_responses=report.responses > 0,
        site_lines=[site_line(site, t, lang) for site in report.sites],
        tables=response_tables(report, t, lang),
    )
