"""Residences and their supervision plans: ``/residences`` (every residence of the caller's
sites, by site, with its plan and current absence; adding one) and ``/residences/{id}`` (its
devices, its plan with the form that records a new version and the versions recorded, its
absences with the forms that record and end one).

Who plans and who records absences is :mod:`carewatch.roles`' table: managers and admins plan
(``PLAN_SUPERVISION``); care staff record absences too (``RECORD_ABSENCE``: the night staff pause
the checks when a resident is taken to hospital at 1 a.m.), so the page opens for them with the
plan read-only and only the absence forms. Technicians set a device's residence on the
onboarding page instead.

Server-rendered, no script, as the onboarding page: the forms post with the session cookie and
are refused unless they come from our own pages; a change answers with a redirect to the page
(reloading it does not post twice), a refused one with the page and why. Every change is made
by :mod:`api.residence_queries`, as for the API, and so audited there.
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, tzinfo
from typing import Annotated, Any, Final, get_args

from fastapi import APIRouter, Path, Request, Response, status
from fastapi.responses import HTMLResponse, RedirectResponse
from pydantic import ValidationError

from api import residence_queries, site_queries
from api.auth import UserContext
from api.deps import PoolDep, SettingsDep, client_address
from api.errors import AbsenceOver, ResidenceLabelTaken, UnknownSite
from api.schemas import (
    MAX_SUPERVISION_S,
    MIN_SUPERVISION_S,
    AbsenceCreate,
    AbsencePublic,
    AbsenceReason,
    PlanChange,
    PlanVersionPublic,
    ResidenceCreate,
    ResidencePublic,
    SitePublic,
)
from carewatch.roles import Permission, may
from carewatch.site_time import site_tz
from dashboards.formatting import DASH, fill
from dashboards.kit import (
    choose_language,
    from_our_pages,
    page_user,
    render_page,
    request_language,
    strings,
    switchable_context,
)
from devices.supervision import DEFAULT_RETRY_S, DEFAULT_WINDOW_S, FollowUp

router = APIRouter(include_in_schema=False)

# Whoever may record an absence may open the pages (care staff, managers, admins); the plan's
# forms are for those who may plan.
PERMISSION: Final = Permission.RECORD_ABSENCE
PLANNING: Final = Permission.PLAN_SUPERVISION
HERE: Final = "/residences"
ResidenceId = Annotated[int, Path(ge=1, le=2**63 - 1)]
AbsenceId = Annotated[int, Path(ge=1, le=2**63 - 1)]

REASONS: Final[tuple[str, ...]] = get_args(AbsenceReason)
FOLLOW_UPS: Final = tuple(FollowUp)
WEEKDAYS: Final = tuple(range(7))  # Monday = 0, as the API
_WEEKDAY_VALUES: Final = frozenset(str(day) for day in WEEKDAYS)
# What a redirect after a change says on the page (``?done=``), by the string that says it.
DONE: Final = {
    "created": "residences_done_created",
    "plan": "residences_done_plan",
    "absence": "residences_done_absence",
    "ended": "residences_done_ended",
}
_TIMES_SEPARATOR: Final = re.compile(r"[\s,;]+")
_LOCAL_MINUTE: Final = "%Y-%m-%dT%H:%M"  # what <input type="datetime-local"> posts


class FormError(ValueError):
    """A form value the page cannot read; ``reason`` is shown beside the form."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


# --- reading the forms (pure) ------------------------------------------------------------------


def _minutes(value: str, field: str) -> int:
    # A few ASCII digits: the model checks the range, but int() of any length is not free.
    text = value.strip()
    if not (text.isascii() and text.isdigit() and len(text) <= 5):
        raise FormError(f"{field}: whole minutes")
    return int(text) * 60


def plan_from_form(form: Mapping[str, str], weekdays: Sequence[str]) -> PlanChange:
    """The plan version the plan form asks for: check times ``22:00, 02:00`` (commas or spaces
    between; none is a plan without checks), the weekdays ticked, dates, minutes. FormError, or
    pydantic's ValidationError: the API's own checks of a body, applied to the same values."""
    times = [part for part in _TIMES_SEPARATOR.split(form.get("check_times", "")) if part]
    # 2:00 is 02:00: the API wants two digits, a person types one.
    times = [f"0{part}" if re.fullmatch(r"\d:\d\d", part) else part for part in times]
    if not weekdays:
        raise FormError("weekdays: at least one")
    if not all(day in _WEEKDAY_VALUES for day in weekdays):
        raise FormError("weekdays: 0 (Monday) to 6")
    return PlanChange.model_validate(
        {
            "check_times": times,
            "weekdays": [int(day) for day in weekdays],
            "valid_from": form.get("valid_from", "").strip() or None,
            "valid_to": form.get("valid_to", "").strip() or None,
            "window_s": _minutes(form.get("window_min", ""), "window"),
            "retry_s": _minutes(form.get("retry_min", ""), "retry"),
            "follow_up": form.get("follow_up", ""),
            "note": form.get("note", "").strip(),
        }
    )


def local_moment(value: str, tz: tzinfo, field: str) -> datetime | None:
    """A ``datetime-local`` field's ``YYYY-MM-DDTHH:MM`` as a time in the site's zone (the
    residence's clock, not the browser's); None when blank."""
    text = value.strip()
    if not text:
        return None
    try:
        naive = datetime.strptime(text[:16], _LOCAL_MINUTE)  # noqa: DTZ007 - zone given below
    except ValueError:
        raise FormError(f"{field}: a date and time") from None
    return naive.replace(tzinfo=tz)


def absence_from_form(form: Mapping[str, str], tz: tzinfo) -> AbsenceCreate:
    """The absence the absence form asks for (start blank: now; end blank: until ended)."""
    return AbsenceCreate.model_validate(
        {
            "reason": form.get("reason", ""),
            "starts_at": local_moment(form.get("starts_at", ""), tz, "starts_at"),
            "expected_end": local_moment(form.get("expected_end", ""), tz, "expected_end"),
            "note": form.get("note", "").strip(),
        }
    )


def why_not(error: ValidationError | FormError) -> str:
    """What was wrong with a form, one line: ``field: reason; ...`` (as the API says it)."""
    if isinstance(error, FormError):
        return error.reason
    parts = []
    for item in error.errors():
        where = ".".join(str(part) for part in item["loc"])
        message = str(item["msg"]).removeprefix("Value error, ")
        parts.append(f"{where}: {message}" if where else message)
    return "; ".join(parts)


def plan_form_values(version: PlanVersionPublic | None) -> dict[str, Any]:
    """The plan form filled in with the version in force (the defaults when there is none)."""
    if version is None:
        return {
            "check_times": "",
            "weekdays": [str(day) for day in WEEKDAYS],
            "valid_from": "",
            "valid_to": "",
            "window_min": str(DEFAULT_WINDOW_S // 60),
            "retry_min": str(DEFAULT_RETRY_S // 60),
            "follow_up": FollowUp.PHYSICAL_VISIT.value,
            "note": "",
        }
    return {
        "check_times": ", ".join(version.check_times),
        "weekdays": [str(day) for day in version.weekdays],
        "valid_from": version.valid_from.isoformat() if version.valid_from else "",
        "valid_to": version.valid_to.isoformat() if version.valid_to else "",
        "window_min": str(version.window_s // 60),
        "retry_min": str(version.retry_s // 60),
        "follow_up": version.follow_up.value,
        "note": version.note,
    }


# --- showing them (pure) -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Shown:
    """The words and times of one language and one site's clock, for the templates."""

    t: Mapping[str, Any]
    tz: tzinfo

    def time(self, value: datetime | None) -> str:
        """A moment on the site's clock, to the minute; a dash for none."""
        return DASH if value is None else value.astimezone(self.tz).strftime("%Y-%m-%d %H:%M")

    def weekdays(self, days: Sequence[int]) -> str:
        """``alla dagar`` / ``mån, ons, fre``."""
        if sorted(days) == list(WEEKDAYS):
            return str(self.t["residences_every_day"])
        names = self.t["residences_weekday_short"]
        return ", ".join(names[day] for day in sorted(days))

    def nights(self, version: PlanVersionPublic) -> str:
        """The nights the version covers: ``from 2026-12-01 to 2026-12-31``, or empty."""
        if version.valid_from is None and version.valid_to is None:
            return ""
        return fill(
            self.t["residences_nights_between"],
            start=version.valid_from.isoformat() if version.valid_from else "…",
            end=version.valid_to.isoformat() if version.valid_to else "…",
        )

    def plan(self, version: PlanVersionPublic | None) -> str:
        """One line: ``22:00, 02:00 · alla dagar · ±15 min``; ``no plan`` when there is none."""
        if version is None:
            return str(self.t["residences_no_plan"])
        if not version.check_times:
            return str(self.t["residences_no_checks"])
        parts = [", ".join(version.check_times), self.weekdays(version.weekdays)]
        parts.append(fill(self.t["residences_window_short"], n=str(version.window_s // 60)))
        nights = self.nights(version)
        if nights:
            parts.append(nights)
        return " · ".join(parts)

    def absence(self, absence: AbsencePublic) -> str:
        """``Sjukhus, till 2026-12-08 10:00`` (or until further notice)."""
        until = absence.expected_end if absence.ended_at is None else absence.ended_at
        reason = self.t["residences_reason"][absence.reason]
        if until is None:
            return fill(self.t["residences_absent_open"], reason=reason)
        return fill(self.t["residences_absent_until"], reason=reason, until=self.time(until))


def current_absence(absences: Sequence[AbsencePublic]) -> AbsencePublic | None:
    """The absence the resident is in now, if any (the latest started)."""
    return next((absence for absence in absences if absence.state == "current"), None)


# --- pages -------------------------------------------------------------------------------------


def _context(request: Request, user: UserContext, **values: object) -> dict[str, Any]:
    lang = request_language(request, user)
    query_lang = request.query_params.get("lang")
    return switchable_context(
        request,
        user,
        HERE,
        heading_key="residences_title",
        may_plan=may(user.role, PLANNING),
        # The forms post to an address that keeps a ?lang= the page was opened with.
        lang_suffix=f"?{urllib.parse.urlencode({'lang': lang})}" if query_lang else "",
        reasons=REASONS,
        follow_ups=[value.value for value in FOLLOW_UPS],
        weekdays=WEEKDAYS,
        minutes_min=MIN_SUPERVISION_S // 60,
        minutes_max=MAX_SUPERVISION_S // 60,
        **values,
    )


def _message(
    request: Request, user: UserContext, title_key: str, text_key: str, status_code: int
) -> HTMLResponse:
    context = _context(request, user, title_key=title_key, text_key=text_key)
    return render_page(request, "fleet_message.html", context, status_code)


def _forbidden(request: Request, user: UserContext) -> Response:
    return _message(request, user, "fleet_forbidden_title", "residences_forbidden", 403)


def _not_found(request: Request, user: UserContext) -> Response:
    return _message(request, user, "residences_not_found_title", "residences_not_found", 404)


def _refused_cross_site() -> Response:
    return Response("cross-site form refused", status.HTTP_403_FORBIDDEN)


def _back(request: Request, path: str, done: str) -> Response:
    """303 to ``path`` saying what was done, in the language the form was posted in."""
    query = {"done": done}
    if "lang" in request.query_params:
        query["lang"] = choose_language(request.query_params["lang"])
    return RedirectResponse(f"{path}?{urllib.parse.urlencode(query)}", status.HTTP_303_SEE_OTHER)


def _done_text(request: Request, t: Mapping[str, Any]) -> str:
    key = DONE.get(request.query_params.get("done", ""))
    return str(t[key]) if key else ""


def _site_zone(sites: Sequence[SitePublic], site_id: str) -> tzinfo:
    return site_tz(next((site.timezone for site in sites if site.id == site_id), None))


async def _list_page(
    request: Request,
    pool: PoolDep,
    user: UserContext,
    *,
    message: str = "",
    form: Mapping[str, str] | None = None,
    status_code: int = status.HTTP_200_OK,
) -> HTMLResponse:
    """Every residence of the caller's sites (of ``?site=``), grouped by site."""
    lang = request_language(request, user)
    t = strings()[lang]
    sites = await site_queries.list_sites(pool, user)
    chosen = request.query_params.get("site") or None
    if chosen not in {site.id for site in sites}:
        chosen = None
    residences = await residence_queries.list_residences(pool, user, site_id=chosen)
    groups = []
    for site in sites:
        if chosen is not None and site.id != chosen:
            continue
        shown = Shown(t, site_tz(site.timezone))
        rows = []
        # A plan and the absences per residence: a care home has dozens of residences.
        for residence in (item for item in residences if item.site_id == site.id):
            plan = await residence_queries.get_plan(pool, user, residence.id)
            absences = await residence_queries.list_absences(pool, user, residence.id) or []
            absent = current_absence(absences)
            rows.append(
                {
                    "residence": residence,
                    "plan": shown.plan(plan.in_force if plan is not None else None),
                    "absence": shown.absence(absent) if absent is not None else "",
                }
            )
        groups.append({"site": site, "rows": rows})
    context = _context(
        request,
        user,
        sites=sites,
        chosen_site=chosen,
        groups=groups,
        total=len(residences),
        message=message,
        done=_done_text(request, t),
        form=form or {},
    )
    return render_page(request, "residences.html", context, status_code)


async def _detail_page(
    request: Request,
    pool: PoolDep,
    user: UserContext,
    residence: ResidencePublic,
    *,
    plan_message: str = "",
    plan_form: Mapping[str, Any] | None = None,
    absence_message: str = "",
    absence_form: Mapping[str, str] | None = None,
    status_code: int = status.HTTP_200_OK,
) -> HTMLResponse:
    """One residence: devices, plan (form and versions), absences (forms and list)."""
    lang = request_language(request, user)
    t = strings()[lang]
    sites = await site_queries.list_sites(pool, user)
    tz = _site_zone(sites, residence.site_id)
    plan = await residence_queries.get_plan(pool, user, residence.id)
    absences = await residence_queries.list_absences(pool, user, residence.id) or []
    in_force = plan.in_force if plan is not None else None
    context = _context(
        request,
        user,
        residence=residence,
        tz_name=getattr(tz, "key", str(tz)),
        shown=Shown(t, tz),
        in_force=in_force,
        history=plan.history if plan is not None else [],
        absences=absences,
        plan_message=plan_message,
        plan_form=plan_form or plan_form_values(in_force),
        absence_message=absence_message,
        absence_form=absence_form or {},
        done=_done_text(request, t),
    )
    return render_page(request, "residences_detail.html", context, status_code)


async def _text_form(request: Request) -> tuple[dict[str, str], list[str]]:
    """The posted form's text fields (the last of a repeated name) and its ticked weekdays."""
    form = await request.form()
    values = {key: value for key, value in form.items() if isinstance(value, str)}
    weekdays = [value for value in form.getlist("weekday") if isinstance(value, str)]
    return values, weekdays


async def _residence_asked(
    request: Request, pool: PoolDep, settings: SettingsDep, residence_id: int, *, posted: bool
) -> tuple[UserContext, ResidencePublic] | Response:
    """The signed-in user and the residence of the URL; else the page that says why not: the
    login redirect, 403, a form not posted from our pages (``posted``), or 404 (a residence
    of another organisation is not found either)."""
    user = await page_user(request, pool, settings, PERMISSION, _forbidden)
    if isinstance(user, Response):
        return user
    if posted and not from_our_pages(request):
        return _refused_cross_site()
    residence = await residence_queries.get_residence(pool, user, residence_id)
    if residence is None:
        return _not_found(request, user)
    return user, residence


@router.get("/residences", response_class=HTMLResponse)
async def residences_page(request: Request, pool: PoolDep, settings: SettingsDep) -> Response:
    """Every residence of the caller's sites, with its plan and current absence."""
    user = await page_user(request, pool, settings, PERMISSION, _forbidden)
    if isinstance(user, Response):
        return user
    return await _list_page(request, pool, user)


@router.post("/residences", response_class=HTMLResponse)
async def create_residence(request: Request, pool: PoolDep, settings: SettingsDep) -> Response:
    """Add a residence (managers and admins); off to its page, or the list with why not."""
    user = await page_user(request, pool, settings, PLANNING, _forbidden)
    if isinstance(user, Response):
        return user
    if not from_our_pages(request):
        return _refused_cross_site()
    form, _ = await _text_form(request)
    t = strings()[request_language(request, user)]
    try:
        new = ResidenceCreate.model_validate(
            {
                "site": form.get("site", ""),
                "label": form.get("label", ""),
                "external_ref": form.get("external_ref", ""),
            }
        )
        residence = await residence_queries.create_residence(
            pool, user, new, client=client_address(request)
        )
    except (ValidationError, UnknownSite, ResidenceLabelTaken) as error:
        reason = why_not(error) if isinstance(error, ValidationError) else str(error)
        return await _list_page(
            request,
            pool,
            user,
            message=fill(t["residences_refused"], reason=reason),
            form=form,
            status_code=status.HTTP_422_UNPROCESSABLE_CONTENT,
        )
    return _back(request, f"/residences/{residence.id}", "created")


@router.get("/residences/{residence_id}", response_class=HTMLResponse)
async def residence_page(
    request: Request, pool: PoolDep, settings: SettingsDep, residence_id: ResidenceId
) -> Response:
    """One residence: its devices, its plan and the versions recorded, its absences."""
    found = await _residence_asked(request, pool, settings, residence_id, posted=False)
    if isinstance(found, Response):
        return found
    return await _detail_page(request, pool, *found)


@router.post("/residences/{residence_id}/plan", response_class=HTMLResponse)
async def change_plan(
    request: Request, pool: PoolDep, settings: SettingsDep, residence_id: ResidenceId
) -> Response:
    """Record a new version of the plan (managers and admins), in force from now."""
    found = await _residence_asked(request, pool, settings, residence_id, posted=True)
    if isinstance(found, Response):
        return found
    user, residence = found
    if not may(user.role, PLANNING):
        return _forbidden(request, user)
    form, weekdays = await _text_form(request)
    try:
        plan = plan_from_form(form, weekdays)
    except (ValidationError, FormError) as error:
        t = strings()[request_language(request, user)]
        return await _detail_page(
            request,
            pool,
            user,
            residence,
            plan_message=fill(t["residences_refused"], reason=why_not(error)),
            plan_form={**form, "weekdays": weekdays},
            status_code=status.HTTP_422_UNPROCESSABLE_CONTENT,
        )
    await residence_queries.change_plan(
        pool, user, residence_id, plan, client=client_address(request)
    )
    return _back(request, f"/residences/{residence_id}", "plan")


@router.post("/residences/{residence_id}/absences", response_class=HTMLResponse)
async def record_absence(
    request: Request, pool: PoolDep, settings: SettingsDep, residence_id: ResidenceId
) -> Response:
    """Record that the resident is away (care staff, managers and admins)."""
    found = await _residence_asked(request, pool, settings, residence_id, posted=True)
    if isinstance(found, Response):
        return found
    user, residence = found
    form, _ = await _text_form(request)
    tz = _site_zone(await site_queries.list_sites(pool, user), residence.site_id)
    try:
        absence = absence_from_form(form, tz)
    except (ValidationError, FormError) as error:
        t = strings()[request_language(request, user)]
        return await _detail_page(
            request,
            pool,
            user,
            residence,
            absence_message=fill(t["residences_refused"], reason=why_not(error)),
            absence_form=form,
            status_code=status.HTTP_422_UNPROCESSABLE_CONTENT,
        )
    await residence_queries.create_absence(
        pool, user, residence_id, absence, client=client_address(request)
    )
    return _back(request, f"/residences/{residence_id}", "absence")


@router.post("/residences/{residence_id}/absences/{absence_id}/end", response_class=HTMLResponse)
async def end_absence(
    request: Request,
    pool: PoolDep,
    settings: SettingsDep,
    residence_id: ResidenceId,
    absence_id: AbsenceId,
) -> Response:
    """End an absence now: the resident came back early (an upcoming one is cancelled)."""
    found = await _residence_asked(request, pool, settings, residence_id, posted=True)
    if isinstance(found, Response):
        return found
    user, residence = found
    try:
        ended = await residence_queries.end_absence(
            pool, user, residence_id, absence_id, client=client_address(request)
        )
    except AbsenceOver as error:
        t = strings()[request_language(request, user)]
        return await _detail_page(
            request,
            pool,
            user,
            residence,
            absence_message=fill(t["residences_refused"], reason=str(error)),
            status_code=status.HTTP_409_CONFLICT,
        )
    if ended is None:
        return _not_found(request, user)
    return _back(request, f"/residences/{residence_id}", "ended")
