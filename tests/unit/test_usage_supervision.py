"""The night supervision section's pure parts (dashboards/usage_supervision.py): its tables, the
CSV of the nights with the assumptions on every row, its words, and an empty period."""

from __future__ import annotations

from datetime import date
from zoneinfo import ZoneInfo

from api.schemas import (
    SupervisionAssumptions,
    SupervisionEffect,
    SupervisionNight,
    SupervisionSiteSummary,
    SupervisionSummary,
    SupervisionTally,
)
from dashboards.kit import strings
from dashboards.usage_supervision import (
    supervision_section,
    supervision_tables,
    total_effect,
    total_tally,
)
from dashboards.usage_tables import to_csv

SV, EN = strings()["sv"], strings()["en"]
STOCKHOLM = ZoneInfo("Europe/Stockholm")
NBSP = "\N{NO-BREAK SPACE}"


def site(
    site_id: str, name: str, nights: list[SupervisionNight], visit: int, key: int
) -> SupervisionSiteSummary:
    """A site's summary as api.supervision_queries builds it (totals and effect from nights)."""
    fields = tuple(SupervisionTally.model_fields)
    totals = SupervisionTally(**{f: sum(getattr(n, f) for n in nights) for f in fields})
    avoided = totals.done_in_window + totals.late
    locks = sum(n.lock_visits for n in nights)
    return SupervisionSiteSummary(
        site_id=site_id,
        site_name=name,
        timezone="Europe/Stockholm",
        nights=nights,
        totals=totals,
        effect=SupervisionEffect(
            visits_avoided=avoided,
            staff_minutes_saved=avoided * visit,
            lock_visits=locks,
            key_minutes_saved=locks * key,
        ),
        assumptions=SupervisionAssumptions(visit_minutes=visit, key_handling_minutes=key),
    )


def summary(*sites: SupervisionSiteSummary) -> SupervisionSummary:
    return SupervisionSummary(
        since=date(2026, 3, 1), until=date(2026, 3, 31), sites=list(sites),
        assumptions_explained={},
    )  # fmt: skip


NIGHT_1 = SupervisionNight(
    night=date(2026, 3, 1), planned=6, paused=1, done_in_window=2, late=1, missed=1,
    not_seen=2, visits_needed=1, replaced_by_visits=0, lock_visits=2,
)  # fmt: skip
NIGHT_2 = SupervisionNight(night=date(2026, 3, 2), planned=3, done_in_window=3)
OTHER_NIGHT_1 = SupervisionNight(night=date(2026, 3, 1), planned=1, done_in_window=1)
TWO_SITES = summary(
    site("site-b", "Björkbacken", [OTHER_NIGHT_1], visit=35, key=0),
    site("site-a", "=Solgården", [NIGHT_1, NIGHT_2], visit=20, key=3),
)


def test_totals_and_effect_add_the_sites() -> None:
    """The section's totals are the sum of every site's; each site's minutes its own."""
    tally = total_tally(TWO_SITES)
    assert (tally.planned, tally.done_in_window, tally.late, tally.paused) == (10, 6, 1, 1)
    effect = total_effect(TWO_SITES)
    assert effect == SupervisionEffect(
        visits_avoided=7, staff_minutes_saved=1 * 35 + 6 * 20, lock_visits=2, key_minutes_saved=6
    )


def test_the_nights_table_lists_night_by_night_with_the_sites_of_a_night_together() -> None:
    """Rows by night, then in the summary's site order; counts in NightTally's order."""
    nights = supervision_tables(TWO_SITES)["supervision_nights"]
    assert [row[:2] for row in nights.rows] == [
        ("2026-03-01", "Björkbacken"),
        ("2026-03-01", "=Solgården"),
        ("2026-03-02", "=Solgården"),
    ]
    assert nights.rows[1][2:] == (6, 1, 2, 1, 1, 2, 1, 0, 2)
    assert [c.key for c in nights.columns][-1] == "supervision_col_lock_visits"


def test_the_effect_table_has_the_assumptions_beside_the_figures() -> None:
    """Per site: visits avoided, minutes per visit, staff time, lock visits, key minutes, saved."""
    effect = supervision_tables(TWO_SITES)["supervision_effect"]
    assert effect.rows == (("Björkbacken", 1, 35, 35, 0, 0, 0), ("=Solgården", 6, 20, 120, 2, 3, 6))


def test_the_nights_csv_carries_each_nights_effect_and_the_sites_assumptions() -> None:
    """Excel's CSV (BOM, ``;``, CRLF) with the effect and both assumptions on every row, and a
    site name that starts like a formula neutralised."""
    table = supervision_tables(TWO_SITES, for_csv=True)["supervision_nights"]
    text = to_csv(table, SV, STOCKHOLM).decode("utf-8")
    assert text.startswith("\ufeff")
    lines = text.removeprefix("\ufeff").split("\r\n")
    assert lines[0].split(";") == [
        "Natt", "Boende/område", "Planerade", "Pausade (frånvaro)", "Inom tidsfönstret", "Sena",
        "Missade", "Inte sedd", "Besök behövdes", "Ersatta av besök (kamerafel)",
        "Besök med digitalt lås", "Undvikna nattbesök", "Sparad personaltid (min)",
        "Sparad nyckelhantering (min)", "Tid per nattbesök, antagande (min)",
        "Nyckelhantering per besök, antagande (min)",
    ]  # fmt: skip
    # Minutes as the other exports write them: a decimal comma, even when whole.
    assert lines[1] == "2026-03-01;Björkbacken;1;0;1;0;0;0;0;0;0;1;35,0;0,0;35,0;0,0"
    assert lines[2] == "2026-03-01;'=Solgården;6;1;2;1;1;2;1;0;2;3;60,0;6,0;20,0;3,0"
    assert lines[3] == "2026-03-02;'=Solgården;3;0;3;0;0;0;0;0;0;3;60,0;0,0;20,0;3,0"
    assert lines[4:] == [""]


def test_the_section_says_the_figures_and_the_estimate_in_words() -> None:
    """The summary sentence and the estimate with hours, in Swedish and in English."""
    section = supervision_section(TWO_SITES, SV, "sv")
    assert section.planned
    assert section.lock_visits
    assert section.hint.startswith("Planerade tillsyner nätterna 2026-03-01\N{EN DASH}2026-03-31")
    assert section.summary_text.startswith(
        "10 planerade tillsyner: 7 gjorda med kamera (6 inom tidsfönstret, 1 sena), 1 missade"
    )
    assert "7 fysiska nattbesök undvikna, 155 min (2,6 timmar)" in section.effect_text
    assert "2 besök med digitalt lås sparade 6 min nyckelhantering" in section.effect_text
    english = supervision_section(TWO_SITES, EN, "en")
    assert "7 physical night visits avoided, 155 min (2.6 hours)" in english.effect_text


def test_an_empty_period_has_nothing_planned() -> None:
    """No nights: the section knows there was nothing planned (the page says so) and no rows."""
    empty = summary(site("site-a", "Solgården", [], visit=20, key=3))
    section = supervision_section(empty, SV, "sv")
    assert not section.planned
    assert not section.lock_visits
    assert section.tables["supervision_nights"].rows == ()
    thousands = summary(
        site("site-a", "A", [SupervisionNight(night=date(2026, 3, 1), planned=1234)], 20, 3)
    )
    assert supervision_section(thousands, SV, "sv").summary_text.startswith(f"1{NBSP}234 ")
