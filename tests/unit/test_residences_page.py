"""The residences page's pure parts: reading the plan and absence forms into the API's own
bodies, and the one-line summaries of a plan and an absence."""

from __future__ import annotations

from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

import pytest
from pydantic import ValidationError

from api.schemas import AbsencePublic, PlanVersionPublic
from dashboards.formatting import DASH
from dashboards.kit import strings
from dashboards.residences import (
    FormError,
    Shown,
    absence_from_form,
    current_absence,
    local_moment,
    plan_form_values,
    plan_from_form,
    why_not,
)
from devices.supervision import FollowUp

STOCKHOLM = ZoneInfo("Europe/Stockholm")
ALL_DAYS = [str(day) for day in range(7)]
RECORDED = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


def _form(**values: str) -> dict[str, str]:
    base = {
        "check_times": "22:00, 02:00",
        "valid_from": "",
        "valid_to": "",
        "window_min": "15",
        "retry_min": "15",
        "follow_up": "physical_visit",
        "note": "",
    }
    return {**base, **values}


def _version(**values: object) -> PlanVersionPublic:
    base: dict[str, object] = {
        "id": 7,
        "recorded_at": RECORDED,
        "recorded_by": "maria",
        "check_times": ["22:00", "02:00"],
        "weekdays": list(range(7)),
        "valid_from": None,
        "valid_to": None,
        "window_s": 900,
        "retry_s": 900,
        "follow_up": "physical_visit",
        "note": "",
    }
    return PlanVersionPublic.model_validate({**base, **values})


def test_the_plan_form_becomes_the_apis_body() -> None:
    """Times as typed (one-digit hours too, commas or spaces), the days ticked, minutes as
    seconds, blank dates as none."""
    plan = plan_from_form(
        _form(check_times="22:00 2:00,05:30", window_min="20", retry_min="10", note=" ny "),
        ["0", "2", "4"],
    )
    assert plan.check_times == ["22:00", "02:00", "05:30"]
    assert plan.weekdays == [0, 2, 4]
    assert (plan.window_s, plan.retry_s) == (1200, 600)
    assert (plan.valid_from, plan.valid_to) == (None, None)
    assert plan.follow_up is FollowUp.PHYSICAL_VISIT
    assert plan.note == "ny"


def test_a_plan_without_times_is_a_plan_without_checks() -> None:
    """An empty times field records a version with no checks (the API's ``[]``)."""
    assert plan_from_form(_form(check_times=" "), ALL_DAYS).check_times == []


@pytest.mark.parametrize(
    ("values", "weekdays", "reason"),
    [
        pytest.param({"check_times": "25:00"}, ALL_DAYS, "check_times.0", id="no-such-hour"),
        pytest.param({"check_times": "22:00, 22:00"}, ALL_DAYS, "given twice", id="twice"),
        pytest.param({}, [], "weekdays: at least one", id="no-day"),
        pytest.param({}, ["7"], "weekdays: 0 (Monday) to 6", id="no-such-day"),
        pytest.param({}, ["0", "0"], "given twice", id="a-day-twice"),
        pytest.param({}, ["x"], "weekdays: 0 (Monday) to 6", id="not-a-day"),
        pytest.param({"window_min": "abc"}, ALL_DAYS, "window: whole minutes", id="window-text"),
        pytest.param({"retry_min": "9" * 5000}, ALL_DAYS, "retry: whole minutes", id="huge"),
        pytest.param({"retry_min": "0"}, ALL_DAYS, "retry_s", id="retry-too-short"),
        pytest.param({"window_min": "181"}, ALL_DAYS, "window_s", id="window-too-long"),
        pytest.param({"follow_up": "pray"}, ALL_DAYS, "follow_up", id="no-such-follow-up"),
        pytest.param({"valid_from": "2026-13-01"}, ALL_DAYS, "valid_from", id="bad-date"),
        pytest.param(
            {"valid_from": "2026-12-10", "valid_to": "2026-12-01"},
            ALL_DAYS,
            "valid_to is before valid_from",
            id="ends-before-it-starts",
        ),
    ],
)
def test_a_plan_form_the_api_would_refuse_says_why(
    values: dict[str, str], weekdays: list[str], reason: str
) -> None:
    """What the page refuses is what the API refuses, and the reason names the field."""
    with pytest.raises((FormError, ValidationError)) as caught:
        plan_from_form(_form(**values), weekdays)
    assert isinstance(caught.value, FormError | ValidationError)
    assert reason in why_not(caught.value)


def test_the_plan_form_starts_from_the_version_in_force() -> None:
    """Posting the form as shown records the same plan again; with none, the defaults."""
    version = _version(valid_from=date(2026, 12, 1), window_s=1200, follow_up="phone_then_visit")
    values = plan_form_values(version)
    plan = plan_from_form(
        {key: value for key, value in values.items() if isinstance(value, str)},
        values["weekdays"],
    )
    assert plan.check_times == version.check_times
    assert plan.valid_from == date(2026, 12, 1)
    assert (plan.window_s, plan.follow_up) == (1200, FollowUp.PHONE_THEN_VISIT)
    defaults = plan_form_values(None)
    assert (defaults["window_min"], defaults["retry_min"]) == ("15", "15")
    assert defaults["weekdays"] == ALL_DAYS


def test_absence_times_are_the_sites_clock() -> None:
    """A ``datetime-local`` value is read in the site's zone, whatever the server's."""
    assert local_moment("2026-12-06T01:30", STOCKHOLM, "starts_at") == datetime(
        2026, 12, 6, 1, 30, tzinfo=STOCKHOLM
    )
    assert local_moment(" ", STOCKHOLM, "starts_at") is None
    with pytest.raises(FormError, match="expected_end: a date and time"):
        local_moment("tomorrow", STOCKHOLM, "expected_end")


def test_an_absence_form_left_blank_starts_now_until_ended() -> None:
    """Only the reason is needed; an end before the start is the API's own refusal."""
    absence = absence_from_form({"reason": "hospital", "starts_at": "", "expected_end": ""}, UTC)
    assert absence.starts_at is not None
    assert absence.expected_end is None
    with pytest.raises(ValidationError, match="expected_end must be after starts_at"):
        absence_from_form(
            {"reason": "travel", "starts_at": "", "expected_end": "2000-01-01T00:00"}, UTC
        )
    with pytest.raises(ValidationError, match="reason"):
        absence_from_form({"reason": "holiday"}, UTC)


@pytest.mark.parametrize(
    ("lang", "version", "summary"),
    [
        pytest.param("sv", None, "Ingen plan", id="none"),
        pytest.param("sv", _version(check_times=[]), "Inga tillsyner", id="no-checks"),
        pytest.param("sv", _version(), "22:00, 02:00 · alla nätter · ±15 min", id="every-night"),
        pytest.param(
            "en",
            _version(weekdays=[4, 5], valid_to=date(2026, 12, 31), window_s=600),
            f"22:00, 02:00 · Fri, Sat · ±10 min · nights … {DASH} 2026-12-31",
            id="weekends-until",
        ),
    ],
)
def test_a_plan_in_one_line(lang: str, version: PlanVersionPublic | None, summary: str) -> None:
    """The list's plan column: times, nights, window and dates, in the page's language."""
    assert Shown(strings()[lang], STOCKHOLM).plan(version) == summary


def test_the_current_absence_and_its_line() -> None:
    """Of the listed absences the current one is shown, with its end on the site's clock."""
    base = {
        "residence_id": 1,
        "note": "",
        "created_by": "anna",
        "created_at": RECORDED,
        "ended_at": None,
        "starts_at": RECORDED,
    }
    upcoming = AbsencePublic.model_validate(
        {**base, "id": 2, "reason": "travel", "state": "upcoming", "expected_end": None}
    )
    current = AbsencePublic.model_validate(
        {
            **base,
            "id": 1,
            "reason": "hospital",
            "state": "current",
            "expected_end": datetime(2026, 12, 8, 9, 0, tzinfo=UTC),
        }
    )
    assert current_absence([upcoming]) is None
    assert current_absence([upcoming, current]) == current
    shown = Shown(strings()["sv"], STOCKHOLM)
    assert shown.absence(current) == "Sjukhus, till 2026-12-08 10:00"
    assert shown.absence(upcoming) == "Resa, tills vidare"
