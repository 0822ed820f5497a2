"""The caller's scope in SQL: their organisation, and their sites if they are limited to some.

Every scoped statement in the API joins sites as ``s``, puts :data:`SCOPE` in its WHERE clause
and takes :func:`scope_params` among its parameters, so a row outside the caller's scope is
never read at all.
"""

from __future__ import annotations

from typing import Any, Final

from api.auth import UserContext

SCOPE: Final = (
    "s.org_id = %(org_id)s AND (%(site_ids)s::text[] IS NULL OR s.id = ANY (%(site_ids)s::text[]))"
)


def scope_params(user: UserContext) -> dict[str, Any]:
    """The named parameters :data:`SCOPE` takes, for this caller."""
    return {"org_id": user.org_id, "site_ids": user.site_list}
