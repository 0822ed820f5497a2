"""The sites resource's SQL: list, read, create and change, scoped by the caller's organisation.

A change of a site is audited through :func:`carewatch.db.audit.write_audit`, in the same
transaction as the change.
"""

from __future__ import annotations

from typing import Any, Final

import psycopg
import psycopg.errors
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from api.auth import UserContext
from api.errors import SecondGroupRefused, SiteIdTaken
from api.pool import Pool
from api.schemas import SiteCreate, SiteDetail, SitePublic, SiteUpdate
from api.scope import SCOPE, scope_params
from carewatch.db.audit import AuditEntry, write_audit
from carewatch.roles import Permission, may

_SITE_DETAIL: Final = (
    "s.id, s.name, s.timezone, s.rule_settings, s.visit_minutes, s.key_handling_minutes,"
    " s.contact_promise_s, s.on_site_promise_s, s.escalation_steps, s.alert_audiences,"
    " (SELECT coalesce(array_agg(u.username ORDER BY u.username), '{}')"
    "    FROM site_second_group g JOIN users u ON u.id = g.user_id"
    "   WHERE g.site_id = s.id) AS second_group"
)

# --- statements (f-strings only join the constant fragments above; every value is a parameter)

_LIST: Final = f"SELECT s.id, s.name, s.timezone FROM sites s WHERE {SCOPE} ORDER BY s.name, s.id"  # noqa: S608 - constant fragments only

_ONE: Final = f"SELECT {_SITE_DETAIL} FROM sites s WHERE s.id = %(site_id)s AND {SCOPE}"  # noqa: S608 - constant fragments only

_UPDATE: Final = f"""
    UPDATE sites s SET
        name = coalesce(%(name)s, s.name),
        timezone = coalesce(%(timezone)s, s.timezone),
        rule_settings = coalesce(%(rule_settings)s, s.rule_settings),
        visit_minutes = coalesce(%(visit_minutes)s, s.visit_minutes),
        key_handling_minutes = coalesce(%(key_handling_minutes)s, s.key_handling_minutes),
        contact_promise_s = CASE WHEN %(set_contact_promise)s
                                 THEN %(contact_promise_s)s::integer ELSE s.contact_promise_s END,
        on_site_promise_s = CASE WHEN %(set_on_site_promise)s
                                 THEN %(on_site_promise_s)s::integer ELSE s.on_site_promise_s END,
        escalation_steps = coalesce(%(escalation_steps)s, s.escalation_steps),
        alert_audiences = coalesce(%(alert_audiences)s, s.alert_audiences)
    WHERE s.id = %(site_id)s AND {SCOPE}
    RETURNING {_SITE_DETAIL}
"""  # noqa: S608 - constant fragments only

_CREATE: Final = """
    INSERT INTO sites (id, org_id, name, timezone) VALUES (%s, %s, %s, %s)
    RETURNING id, name, timezone
"""

# Who may be in a site's second group (issue 12): users of the site's organisation, not
# disabled, allowed at the site (no site limit, or the site among theirs), as a colleague a
# response is forwarded to (api.response_queries); their roles are judged by carewatch.roles.
_MEMBERS: Final = """
    SELECT u.id, u.username, u.role FROM users u
     WHERE u.username = ANY (%(usernames)s::text[]) AND u.org_id = %(org_id)s AND NOT u.disabled
       AND (NOT EXISTS (SELECT 1 FROM user_sites us WHERE us.user_id = u.id)
            OR EXISTS (SELECT 1 FROM user_sites us
                        WHERE us.user_id = u.id AND us.site_id = %(site_id)s))
"""

_CLEAR_GROUP: Final = "DELETE FROM site_second_group WHERE site_id = %(site_id)s"

_ADD_MEMBERS: Final = """
    INSERT INTO site_second_group (site_id, user_id, added_by)
    SELECT %(site_id)s, unnest(%(user_ids)s::bigint[]), %(by)s
"""


async def list_sites(pool: Pool, user: UserContext) -> list[SitePublic]:
    """The sites the caller may see, by name."""
    async with pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(_LIST, scope_params(user))
        return [SitePublic.model_validate(row) for row in await cur.fetchall()]


async def get_site(pool: Pool, user: UserContext, site_id: str) -> SiteDetail | None:
    """The site with its rule settings, if the caller may see it."""
    async with pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(_ONE, {**scope_params(user), "site_id": site_id})
        row = await cur.fetchone()
    return None if row is None else SiteDetail.model_validate(row)


async def update_site(
    pool: Pool, user: UserContext, site_id: str, change: SiteUpdate, *, client: str | None = None
) -> SiteDetail | None:
    """Apply ``change`` to a site the caller may see (None if not), with an audit row naming
    what changed. The gateways read rule settings with every evaluation: no restart."""
    values = change.model_dump(exclude_none=True)
    values.update(  # a promise withdrawn is a change worth naming
        {
            name: None
            for name in ("contact_promise_s", "on_site_promise_s")
            if name in change.model_fields_set and getattr(change, name) is None
        }
    )
    async with pool.connection() as conn, conn.transaction():
        async with conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(
                _UPDATE,
                {
                    **scope_params(user),
                    "site_id": site_id,
                    "name": change.name,
                    "timezone": change.timezone,
                    "rule_settings": None
                    if change.rule_settings is None
                    else Jsonb(change.rule_settings.to_record()),
                    "visit_minutes": change.visit_minutes,
                    "key_handling_minutes": change.key_handling_minutes,
                    # A promise given as null is withdrawn; one not given stays.
                    "set_contact_promise": "contact_promise_s" in change.model_fields_set,
                    "contact_promise_s": change.contact_promise_s,
                    "set_on_site_promise": "on_site_promise_s" in change.model_fields_set,
                    "on_site_promise_s": change.on_site_promise_s,
                    "escalation_steps": None
                    if change.escalation_steps is None
                    else Jsonb(change.escalation_steps),
                    "alert_audiences": None
                    if change.alert_audiences is None
                    else Jsonb(change.alert_audiences),
                },
            )
            row = await cur.fetchone()
        if row is None:
            return None
        if change.second_group is not None:
            await _replace_second_group(conn, user, site_id, change.second_group)
            async with conn.cursor(row_factory=dict_row) as cur:
                await cur.execute(_ONE, {**scope_params(user), "site_id": site_id})
                row = await cur.fetchone()
            assert row is not None  # changed above, in this transaction
        entry = AuditEntry(action="site.update", org_id=user.org_id, note=f"{site_id}: {values}")
        await write_audit(conn, user.auditor(client), [entry])
    return SiteDetail.model_validate(row)


async def _replace_second_group(
    conn: psycopg.AsyncConnection[Any], user: UserContext, site_id: str, usernames: list[str]
) -> None:
    """Make ``usernames`` the site's second group; :class:`SecondGroupRefused` (and nothing
    changed: the caller's transaction rolls back) naming those who may not take its alarms."""
    wanted = sorted(set(usernames))
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            _MEMBERS, {"usernames": wanted, "org_id": user.org_id, "site_id": site_id}
        )
        found = {row["username"]: row for row in await cur.fetchall()}
    # Another organisation's user is refused as one who does not exist: nothing about them leaks.
    refused = [
        name
        for name in wanted
        if name not in found or not may(found[name]["role"], Permission.ACT_ON_ALERTS)
    ]
    if refused:
        raise SecondGroupRefused(site_id, refused)
    await conn.execute(_CLEAR_GROUP, {"site_id": site_id})
    if wanted:
        await conn.execute(
            _ADD_MEMBERS,
            {
                "site_id": site_id,
                "user_ids": [found[name]["id"] for name in wanted],
                "by": user.username,
            },
        )


async def create_site(pool: Pool, user: UserContext, site: SiteCreate) -> SitePublic:
    """Add a site to the caller's organisation; SiteIdTaken if the id is in use."""
    try:
        async with pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(_CREATE, (site.id, user.org_id, site.name, site.timezone))
            row = await cur.fetchone()
    except psycopg.errors.UniqueViolation:
        raise SiteIdTaken(site.id) from None
    assert row is not None
    return SitePublic.model_validate(row)
