"""The audit log: the one way any process records who did what (``audit_log``).

Logins, alert views and actions, site changes, onboarding and decommissioning all write here,
in the same transaction as the change they describe, so an audited change and its entry commit
or roll back together.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import psycopg


@dataclass(frozen=True, slots=True)
class Auditor:
    """Who acts: the user (None for the shell), the name they act under, and from where."""

    username: str
    user_id: int | None = None
    client: str | None = None


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One line of the audit log.

    ``org_id`` None means the organisation of ``device_id``'s site (a command from the shell
    acts for no organisation of its own).
    """

    action: str
    org_id: str | None = None
    alert_id: int | None = None
    device_id: str | None = None
    note: str | None = None
    residence_id: int | None = None  # a residence, its supervision plan or an absence (+#11)


_INSERT: Final = """
INSERT INTO audit_log (user_id, username, org_id, action, alert_id, device_id, note, client,
                       residence_id)
SELECT %(user_id)s, %(username)s, coalesce(e.org_id, s.org_id), e.action, e.alert_id,
       e.device_id, e.note, %(client)s, e.residence_id
  FROM unnest(%(org_ids)s::text[], %(actions)s::text[], %(alert_ids)s::bigint[],
              %(device_ids)s::text[], %(notes)s::text[], %(residence_ids)s::bigint[])
       WITH ORDINALITY AS e(org_id, action, alert_id, device_id, note, residence_id, n)
  LEFT JOIN devices d ON d.id = e.device_id
  LEFT JOIN sites s ON s.id = d.site_id
 ORDER BY e.n
"""


async def write_audit(
    conn: psycopg.AsyncConnection[Any], auditor: Auditor, entries: Sequence[AuditEntry]
) -> None:
    """Append ``entries``, in order, as done by ``auditor``."""
    if not entries:
        return
    await conn.execute(
        _INSERT,
        {
            "user_id": auditor.user_id,
            "username": auditor.username,
            "client": auditor.client,
            "org_ids": [entry.org_id for entry in entries],
            "actions": [entry.action for entry in entries],
            "alert_ids": [entry.alert_id for entry in entries],
            "device_ids": [entry.device_id for entry in entries],
            "notes": [entry.note for entry in entries],
            "residence_ids": [entry.residence_id for entry in entries],
        },
    )
