"""Night supervision on the managers' pages (+#11): the planned checks per site and night, and
the effect estimate with its assumptions, on ``/dashboards``, in its CSV exports and in the
monthly report.

The figures are those of ``GET /api/v1/supervision/summary``: the page calls the same
:func:`api.supervision_queries.supervision_summary` (as it calls ``usage_report`` for the rest),
so the page, its CSV and the API never disagree. A period of days is the nights whose evenings
fall in it: "1-31 March" is the nights of 1 March to 31 March (the last one ends on 1 April).

Every estimate stands beside the assumptions it multiplies by (each site's minutes per physical
night visit and per key handling); the CSV of the nights repeats them on every row, so a copied
row still says what it assumed. A period without planned checks says so instead of showing
zeros that would read as checks that failed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any, Final, Literal

from api.auth import UserContext
from api.pool import Pool
from api.schemas import SupervisionEffect, SupervisionSummary, SupervisionTally
from api.supervision_queries import TALLY_FIELDS, SummaryQuery, supervision_summary
from dashboards.formatting import fill, format_number
from dashboards.usage_tables import Cell, Column, Table, make_table

# The exports' names after /dashboards/export/supervision_ (the tables are supervision_<name>).
SupervisionTableName = Literal["nights", "totals", "effect"]

# The tally's columns, in NightTally's order (api.supervision_queries.TALLY_FIELDS).
_TALLY_HEADERS: Final = {
    "planned": "supervision_col_planned",
    "paused": "supervision_col_paused",
    "done_in_window": "supervision_col_done",
    "late": "supervision_col_late",
    "missed": "supervision_col_missed",
    "not_seen": "supervision_col_not_seen",
    "visits_needed": "supervision_col_visits_needed",
    "replaced_by_visits": "supervision_col_replaced",
}
TALLY_COLUMNS: Final = tuple(Column(_TALLY_HEADERS[name], "count") for name in TALLY_FIELDS)
NIGHT_COLUMN: Final = Column("supervision_col_night", "text")
SITE_COLUMN: Final = Column("usage_col_site", "text")
LOCK_VISITS: Final = Column("supervision_col_lock_visits", "count")
AVOIDED: Final = Column("supervision_col_avoided", "count")
STAFF_SAVED: Final = Column("supervision_col_staff_saved", "minutes")
KEY_SAVED: Final = Column("supervision_col_key_saved", "minutes")
# The assumptions, as columns beside the figures they multiply.
VISIT_MINUTES: Final = Column("supervision_col_visit_minutes", "minutes")
KEY_MINUTES: Final = Column("supervision_col_key_minutes", "minutes")


async def load_supervision(
    pool: Pool, user: UserContext, since: date, last: date, site: str | None
) -> SupervisionSummary | None:
    """The summary of the nights ``since`` to ``last`` (both included) of the caller's sites
    (``site``: that one); None if ``site`` is not one of them."""
    return await supervision_summary(pool, user, SummaryQuery(since=since, until=last, site=site))


def total_tally(summary: SupervisionSummary) -> SupervisionTally:
    """The counts of every site together."""
    return SupervisionTally(
        **{name: sum(getattr(s.totals, name) for s in summary.sites) for name in TALLY_FIELDS}
    )


def total_effect(summary: SupervisionSummary) -> SupervisionEffect:
    """The effect estimate of every site together (each site's minutes its own)."""
    return SupervisionEffect(
        **{
            name: sum(getattr(s.effect, name) for s in summary.sites)
            for name in SupervisionEffect.model_fields
        }
    )


def supervision_tables(summary: SupervisionSummary, *, for_csv: bool = False) -> dict[str, Table]:
    """The section's tables: per site (``supervision_totals``), the effect per site with its
    assumptions (``supervision_effect``) and per night and site (``supervision_nights``; in the
    CSV with each night's effect and the site's assumptions)."""
    totals: list[list[Cell]] = [
        [site.site_name, *(getattr(site.totals, name) for name in TALLY_FIELDS)]
        for site in summary.sites
    ]
    effect: list[list[Cell]] = [
        [
            site.site_name,
            site.effect.visits_avoided,
            site.assumptions.visit_minutes,
            site.effect.staff_minutes_saved,
            site.effect.lock_visits,
            site.assumptions.key_handling_minutes,
            site.effect.key_minutes_saved,
        ]
        for site in summary.sites
    ]
    # Night by night, the sites of a night together (in the summary's order: by name).
    order = {site.site_id: index for index, site in enumerate(summary.sites)}
    listed = sorted(
        ((night, site) for site in summary.sites for night in site.nights),
        key=lambda pair: (pair[0].night, order[pair[1].site_id]),
    )
    nights: list[list[Cell]] = []
    for night, site in listed:
        row: list[Cell] = [night.night.isoformat(), site.site_name]
        row += [*(getattr(night, name) for name in TALLY_FIELDS), night.lock_visits]
        if for_csv:
            avoided, minutes = night.done_in_window + night.late, site.assumptions
            row += [
                avoided,
                avoided * minutes.visit_minutes,
                night.lock_visits * minutes.key_handling_minutes,
                minutes.visit_minutes,
                minutes.key_handling_minutes,
            ]
        nights.append(row)
    night_columns = [NIGHT_COLUMN, SITE_COLUMN, *TALLY_COLUMNS, LOCK_VISITS]
    if for_csv:
        night_columns += [AVOIDED, STAFF_SAVED, KEY_SAVED, VISIT_MINUTES, KEY_MINUTES]
    effect_columns = (
        SITE_COLUMN,
        AVOIDED,
        VISIT_MINUTES,
        STAFF_SAVED,
        LOCK_VISITS,
        KEY_MINUTES,
        KEY_SAVED,
    )
    return {
        "supervision_totals": make_table(
            "supervision_totals", (SITE_COLUMN, *TALLY_COLUMNS), totals
        ),
        "supervision_effect": make_table("supervision_effect", effect_columns, effect),
        "supervision_nights": make_table("supervision_nights", night_columns, nights),
    }


@dataclass(frozen=True, slots=True)
class SupervisionSection:
    """What the "Night supervision" section shows: its words, its tables, and whether there is
    anything to count (``planned``: checks were planned; ``lock_visits``: visits a lock proved)."""

    hint: str
    planned: bool
    lock_visits: bool
    summary_text: str
    effect_text: str
    tables: Mapping[str, Table]


def supervision_section(
    summary: SupervisionSummary, t: Mapping[str, Any], lang: str
) -> SupervisionSection:
    """The section of ``summary`` with words and numbers in ``lang``."""
    tally, effect = total_tally(summary), total_effect(summary)

    def n(value: float, decimals: int = 0) -> str:
        return format_number(value, lang, decimals)

    return SupervisionSection(
        hint=fill(t["supervision_hint"], first=summary.since.isoformat(),
                  last=summary.until.isoformat()),
        planned=tally.planned > 0,
        lock_visits=effect.lock_visits > 0,
        summary_text=fill(
            t["supervision_summary"], planned=n(tally.planned),
            by_camera=n(tally.done_in_window + tally.late), done=n(tally.done_in_window),
            late=n(tally.late), missed=n(tally.missed), not_seen=n(tally.not_seen),
            visits_needed=n(tally.visits_needed), replaced=n(tally.replaced_by_visits),
            paused=n(tally.paused),
        ),
        effect_text=fill(
            t["supervision_effect_summary"], avoided=n(effect.visits_avoided),
            staff_minutes=n(effect.staff_minutes_saved),
            staff_hours=n(effect.staff_minutes_saved / 60, 1),
            lock_visits=n(effect.lock_visits), key_minutes=n(effect.key_minutes_saved),
        ),
        tables=supervision_tables(summary),
    )  # fmt: skip
