"""The residences resource's SQL: residences, their supervision plans and absences, scoped by
the caller's organisation and sites (a residence is seen through its site, ``s``).

Every change is audited through :func:`carewatch.db.audit.write_audit` in the transaction of
the change, naming the residence: ``residence.create``, ``residence.update``, ``plan.change``,
``absence.create``, ``absence.end``, ``visit.record``. A plan is never changed in place: each
change is a new row of ``supervision_plans``, recorded while the residence's row is locked, so
the versions of one residence follow each other in the order they were recorded.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Final

import psycopg
import psycopg.errors
from psycopg.rows import dict_row

from api.auth import UserContext
from api.errors import AbsenceOver, ResidenceLabelTaken, UnknownSite, VisitRecorded
from api.pool import Pool
from api.schemas import (
    ABSENCES_LISTED_DAYS,
    PLAN_HISTORY_MAX,
    VISITS_LISTED_MAX,
    AbsenceCreate,
    AbsencePublic,
    PlanChange,
    PlanPublic,
    PlanVersionPublic,
    ResidenceCreate,
    ResidencePublic,
    ResidenceUpdate,
    VisitCreate,
    VisitPublic,
)
from api.scope import SCOPE, scope_params
from carewatch.db.audit import AuditEntry, write_audit

Conn = psycopg.AsyncConnection[Any]

_RESIDENCE: Final = """
    r.id, r.site_id, s.name AS site_name, r.label, r.external_ref, r.created_at,
    array(SELECT d.id FROM devices d
           WHERE d.residence_id = r.id AND d.status = 'active' ORDER BY d.id) AS device_ids
"""
_IN_SCOPE: Final = f"residences r JOIN sites s ON s.id = r.site_id WHERE {SCOPE}"

# --- statements (f-strings only join the constant fragments above; every value is a parameter)

_LIST: Final = f"""
    SELECT {_RESIDENCE} FROM {_IN_SCOPE}
       AND (%(site_id)s::text IS NULL OR r.site_id = %(site_id)s::text)
     ORDER BY s.name, s.id, r.label, r.id
"""  # noqa: S608 - constant fragments only

_ONE: Final = f"SELECT {_RESIDENCE} FROM {_IN_SCOPE} AND r.id = %(residence_id)s"  # noqa: S608 - constant fragments only

# The residence's row stays locked until the change commits: plan versions and label changes of
# one residence happen one after the other.
_LOCK: Final = f"SELECT r.id FROM {_IN_SCOPE} AND r.id = %(residence_id)s FOR UPDATE OF r"  # noqa: S608 - constant fragments only

_SITE: Final = f"SELECT s.id FROM sites s WHERE s.id = %(site_id)s AND {SCOPE}"  # noqa: S608 - constant fragments only

_CREATE: Final = """
    INSERT INTO residences (site_id, label, external_ref)
    VALUES (%(site_id)s, %(label)s, %(external_ref)s) RETURNING id
"""

_UPDATE: Final = """
    UPDATE residences SET
        label = coalesce(%(label)s::text, label),
        external_ref = CASE WHEN %(set_external_ref)s THEN %(external_ref)s::text
                            ELSE external_ref END
    WHERE id = %(residence_id)s
"""

_PLAN_VERSIONS: Final = """
    SELECT p.id, p.recorded_at, p.recorded_by, p.check_times, p.weekdays, p.valid_from,
           p.valid_to, p.window_s, p.retry_s, p.follow_up, p.note,
           p.recorded_at <= clock_timestamp() AS recorded
      FROM supervision_plans p
     WHERE p.residence_id = %(residence_id)s
     ORDER BY p.recorded_at DESC
     LIMIT %(limit)s
"""

_RECORD_PLAN: Final = """
    INSERT INTO supervision_plans (residence_id, recorded_by, check_times, weekdays, valid_from,
                                   valid_to, window_s, retry_s, follow_up, note)
    VALUES (%(residence_id)s, %(recorded_by)s, %(check_times)s::time[], %(weekdays)s::smallint[],
            %(valid_from)s, %(valid_to)s, %(window_s)s, %(retry_s)s, %(follow_up)s, %(note)s)
    RETURNING id
"""

# An absence covers [starts_at, least(expected_end, ended_at)): least() skips NULLs, and both
# NULL is an absence until someone ends it.
_ABSENCE: Final = """
    a.id, a.residence_id, a.reason, a.starts_at, a.expected_end, a.ended_at, a.note,
    a.created_by, a.created_at,
    CASE WHEN least(a.expected_end, a.ended_at) <= now() THEN 'over'
         WHEN a.starts_at > now() THEN 'upcoming'
         ELSE 'current' END AS state
"""

_ABSENCES: Final = f"""
    SELECT {_ABSENCE} FROM absences a
     WHERE a.residence_id = %(residence_id)s
       AND coalesce(least(a.expected_end, a.ended_at), 'infinity')
           > now() - make_interval(days => %(days)s)
     ORDER BY a.starts_at DESC, a.id DESC
"""  # noqa: S608 - constant fragments only

_ONE_ABSENCE: Final = f"SELECT {_ABSENCE} FROM absences a WHERE a.id = %(absence_id)s"  # noqa: S608 - constant fragments only

_CREATE_ABSENCE: Final = """
    INSERT INTO absences (residence_id, reason, starts_at, expected_end, note, created_by)
    VALUES (%(residence_id)s, %(reason)s, %(starts_at)s, %(expected_end)s, %(note)s,
            %(created_by)s)
    RETURNING id
"""

_LOCK_ABSENCE: Final = f"""
    SELECT a.ended_at IS NOT NULL AS ended,
           coalesce(a.expected_end <= now(), false) AS expired
      FROM absences a, {_IN_SCOPE}
       AND r.id = a.residence_id AND a.id = %(absence_id)s AND r.id = %(residence_id)s
       FOR UPDATE OF a
"""  # noqa: S608 - constant fragments only

_END_ABSENCE: Final = "UPDATE absences SET ended_at = now() WHERE id = %(absence_id)s"

_VISIT: Final = """
    v.id, v.residence_id, v.visited_at, v.source, v.recorded_by, v.note, v.lock_device_id,
    v.created_at
"""

# The constraint physical_visits_residence_time_source_key answers a repeat of the same instant:
# the caller hears 409 (VisitRecorded) instead of a second row.
_RECORD_VISIT: Final = f"""
    INSERT INTO physical_visits (residence_id, visited_at, source, recorded_by, note)
    VALUES (%(residence_id)s, %(visited_at)s, 'staff', %(recorded_by)s, %(note)s)
    ON CONFLICT (residence_id, visited_at, source) DO NOTHING
    RETURNING {_VISIT.replace("v.", "")}
"""  # noqa: S608 - constant fragments only

_VISITS: Final = f"""
    SELECT {_VISIT} FROM physical_visits v
     WHERE v.residence_id = %(residence_id)s AND v.visited_at >= %(since)s
     ORDER BY v.visited_at DESC, v.id DESC
     LIMIT %(limit)s
"""  # noqa: S608 - constant fragments only


# --- residences --------------------------------------------------------------------------------


async def list_residences(
    pool: Pool, user: UserContext, *, site_id: str | None = None
) -> list[ResidencePublic]:
    """The residences of the caller's sites (of one of them, with ``site_id``), by site and
    label."""
    async with pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(_LIST, {**scope_params(user), "site_id": site_id})
        return [ResidencePublic.model_validate(row) for row in await cur.fetchall()]


async def get_residence(pool: Pool, user: UserContext, residence_id: int) -> ResidencePublic | None:
    """The residence, if the caller may see it."""
    async with pool.connection() as conn:
        return await _residence(conn, user, residence_id)


async def create_residence(
    pool: Pool, user: UserContext, residence: ResidenceCreate, *, client: str | None = None
) -> ResidencePublic:
    """Add a residence at one of the caller's sites (UnknownSite if it is not theirs;
    ResidenceLabelTaken if the site has the label)."""
    try:
        async with pool.connection() as conn:
            async with conn.transaction():
                if not await _fetch_one(
                    conn, _SITE, {**scope_params(user), "site_id": residence.site}
                ):
                    raise UnknownSite(residence.site)
                row = await _fetch_one(
                    conn,
                    _CREATE,
                    {
                        "site_id": residence.site,
                        "label": residence.label,
                        "external_ref": residence.external_ref,
                    },
                )
                assert row is not None
                residence_id: int = row["id"]
                await _audit(
                    conn,
                    user,
                    client,
                    "residence.create",
                    residence_id,
                    f"{residence.label!r} at {residence.site}",
                )
            created = await _residence(conn, user, residence_id)
    except psycopg.errors.UniqueViolation:
        raise ResidenceLabelTaken(residence.site, residence.label) from None
    assert created is not None
    return created


async def update_residence(
    pool: Pool,
    user: UserContext,
    residence_id: int,
    change: ResidenceUpdate,
    *,
    client: str | None = None,
) -> ResidencePublic | None:
    """Change the label or external reference of a residence the caller may see (None if not;
    ResidenceLabelTaken if the new label is in use at the site)."""
    changed = change.model_dump(include=change.model_fields_set, exclude_none=False)
    if changed.get("label", "") is None:
        del changed["label"]  # null: leave the label as it is
    try:
        async with pool.connection() as conn:
            async with conn.transaction():
                if not await _lock_residence(conn, user, residence_id):
                    return None
                await conn.execute(
                    _UPDATE,
                    {
                        "residence_id": residence_id,
                        "label": change.label,
                        "set_external_ref": "external_ref" in change.model_fields_set,
                        "external_ref": change.external_ref,
                    },
                )
                if changed:
                    await _audit(conn, user, client, "residence.update", residence_id, f"{changed}")
            return await _residence(conn, user, residence_id)
    except psycopg.errors.UniqueViolation:
        current = await get_residence(pool, user, residence_id)
        site_id = current.site_id if current is not None else "?"
        raise ResidenceLabelTaken(site_id, change.label or "") from None


# --- plans -------------------------------------------------------------------------------------


async def get_plan(pool: Pool, user: UserContext, residence_id: int) -> PlanPublic | None:
    """The plan of a residence the caller may see (None if not): the version in force and the
    versions recorded, newest first."""
    async with pool.connection() as conn:
        if await _residence(conn, user, residence_id) is None:
            return None
        return await _plan(conn, residence_id)


async def change_plan(
    pool: Pool,
    user: UserContext,
    residence_id: int,
    plan: PlanChange,
    *,
    client: str | None = None,
) -> PlanPublic | None:
    """Record ``plan`` as the residence's new version, in force from now (None if the caller
    may not see the residence)."""
    times = plan.times()
    async with pool.connection() as conn:
        async with conn.transaction():
            if not await _lock_residence(conn, user, residence_id):
                return None
            row = await _fetch_one(
                conn,
                _RECORD_PLAN,
                {
                    "residence_id": residence_id,
                    "recorded_by": user.username,
                    "check_times": list(times),
                    "weekdays": sorted(plan.weekdays),
                    "valid_from": plan.valid_from,
                    "valid_to": plan.valid_to,
                    "window_s": plan.window_s,
                    "retry_s": plan.retry_s,
                    "follow_up": plan.follow_up.value,
                    "note": plan.note,
                },
            )
            assert row is not None
            at = ", ".join(t.strftime("%H:%M") for t in times) or "none"
            note = (
                f"version {row['id']}: checks {at}; weekdays {sorted(plan.weekdays)};"
                f" nights {plan.valid_from or '…'} to {plan.valid_to or '…'};"
                f" window_s {plan.window_s}; retry_s {plan.retry_s}; {plan.follow_up.value}"
            )
            await _audit(conn, user, client, "plan.change", residence_id, note)
        return await _plan(conn, residence_id)


async def _plan(conn: Conn, residence_id: int) -> PlanPublic:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(_PLAN_VERSIONS, {"residence_id": residence_id, "limit": PLAN_HISTORY_MAX})
        rows = await cur.fetchall()
    history = [PlanVersionPublic.model_validate(row) for row in rows]
    # The version in force: the latest recorded at or before now (devices.supervision.in_force).
    in_force = next(
        (version for version, row in zip(history, rows, strict=True) if row["recorded"]), None
    )
    return PlanPublic(residence_id=residence_id, in_force=in_force, history=history)


# --- absences ----------------------------------------------------------------------------------


async def list_absences(
    pool: Pool, user: UserContext, residence_id: int
) -> list[AbsencePublic] | None:
    """The residence's current and upcoming absences and those over in the last 30 days, the
    latest start first (None if the caller may not see the residence)."""
    async with pool.connection() as conn:
        if await _residence(conn, user, residence_id) is None:
            return None
        async with conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(
                _ABSENCES, {"residence_id": residence_id, "days": ABSENCES_LISTED_DAYS}
            )
            return [AbsencePublic.model_validate(row) for row in await cur.fetchall()]


async def create_absence(
    pool: Pool,
    user: UserContext,
    residence_id: int,
    absence: AbsenceCreate,
    *,
    client: str | None = None,
) -> AbsencePublic | None:
    """Record an absence of a residence the caller may see (None if not)."""
    async with pool.connection() as conn:
        async with conn.transaction():
            if not await _lock_residence(conn, user, residence_id):
                return None
            row = await _fetch_one(
                conn,
                _CREATE_ABSENCE,
                {
                    "residence_id": residence_id,
                    "reason": absence.reason,
                    "starts_at": absence.starts_at,
                    "expected_end": absence.expected_end,
                    "note": absence.note,
                    "created_by": user.username,
                },
            )
            assert row is not None
            absence_id: int = row["id"]
            note = (
                f"absence {absence_id}: {absence.reason} from {_when(absence.starts_at)}"
                f" until {_when(absence.expected_end)}"
            )
            await _audit(conn, user, client, "absence.create", residence_id, note)
        return await _absence(conn, absence_id)


async def end_absence(
    pool: Pool,
    user: UserContext,
    residence_id: int,
    absence_id: int,
    *,
    client: str | None = None,
) -> AbsencePublic | None:
    """End an absence now: the resident came back, or it will not happen (None if the caller may
    not see it; AbsenceOver if it was ended already or its expected end has passed)."""
    async with pool.connection() as conn, conn.transaction():
        row = await _fetch_one(
            conn,
            _LOCK_ABSENCE,
            {**scope_params(user), "residence_id": residence_id, "absence_id": absence_id},
        )
        if row is None:
            return None
        if row["ended"] or row["expired"]:
            raise AbsenceOver(absence_id, ended=row["ended"])
        await conn.execute(_END_ABSENCE, {"absence_id": absence_id})
        await _audit(conn, user, client, "absence.end", residence_id, f"absence {absence_id} ended")
        return await _absence(conn, absence_id)


# --- physical visits ---------------------------------------------------------------------------


async def record_visit(
    pool: Pool,
    user: UserContext,
    residence_id: int,
    visit: VisitCreate,
    *,
    client: str | None = None,
) -> VisitPublic | None:
    """Record a physical visit staff made to a residence the caller may see (None if not;
    VisitRecorded if one is recorded by staff at the same instant)."""
    async with pool.connection() as conn:
        async with conn.transaction():
            if not await _lock_residence(conn, user, residence_id):
                return None
            row = await _fetch_one(
                conn,
                _RECORD_VISIT,
                {
                    "residence_id": residence_id,
                    "visited_at": visit.visited_at,
                    "recorded_by": user.username,
                    "note": visit.note,
                },
            )
            if row is None:
                raise VisitRecorded(residence_id)
            note = f"visit {row['id']} at {_when(row['visited_at'])}"
            await _audit(conn, user, client, "visit.record", residence_id, note)
        return VisitPublic.model_validate(row)


async def list_visits(
    pool: Pool, user: UserContext, residence_id: int, *, since: datetime
) -> list[VisitPublic] | None:
    """The residence's visits (by staff and by lock) from ``since`` on, newest first, at most
    ``VISITS_LISTED_MAX`` (None if the caller may not see the residence)."""
    async with pool.connection() as conn:
        if await _residence(conn, user, residence_id) is None:
            return None
        async with conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(
                _VISITS,
                {"residence_id": residence_id, "since": since, "limit": VISITS_LISTED_MAX},
            )
            return [VisitPublic.model_validate(row) for row in await cur.fetchall()]


# --- shared ------------------------------------------------------------------------------------


async def _fetch_one(conn: Conn, query: str, params: dict[str, Any]) -> dict[str, Any] | None:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(query, params)
        return await cur.fetchone()


async def _residence(conn: Conn, user: UserContext, residence_id: int) -> ResidencePublic | None:
    row = await _fetch_one(conn, _ONE, {**scope_params(user), "residence_id": residence_id})
    return None if row is None else ResidencePublic.model_validate(row)


async def _lock_residence(conn: Conn, user: UserContext, residence_id: int) -> bool:
    """Lock the residence's row if the caller may see it; False if not."""
    row = await _fetch_one(conn, _LOCK, {**scope_params(user), "residence_id": residence_id})
    return row is not None


async def _absence(conn: Conn, absence_id: int) -> AbsencePublic:
    row = await _fetch_one(conn, _ONE_ABSENCE, {"absence_id": absence_id})
    assert row is not None
    return AbsencePublic.model_validate(row)


async def _audit(
    conn: Conn, user: UserContext, client: str | None, action: str, residence_id: int, note: str
) -> None:
    entry = AuditEntry(action=action, org_id=user.org_id, residence_id=residence_id, note=note)
    await write_audit(conn, user.auditor(client), [entry])


def _when(moment: datetime | None) -> str:
    return "further notice" if moment is None else moment.isoformat(timespec="minutes")
