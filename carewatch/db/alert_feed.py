"""The alert change feed: the one way any process records that an alert changed.

Every change of an alert (opened, updated, escalated, acknowledged, resolved) is a row in
``alert_changes`` and a ``NOTIFY`` on :data:`CHANNEL` carrying that row's id, both in the
caller's transaction: listeners (the API's SSE hub) hear of a change exactly when it commits,
and a reconnecting listener catches up by reading ``alert_changes`` after the last id it saw.
The gateway, the API and the onboarding service all write through :func:`record_changes`.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Final

import psycopg
from psycopg.rows import tuple_row

CHANNEL: Final = "carewatch_alerts"

# WITH ORDINALITY keeps the changes in the order given, so their ids (and so the order in
# which listeners apply them) follow the order in which they happened.
_RECORD: Final = """
INSERT INTO alert_changes (alert_id, change, changed_at)
SELECT c.alert_id, c.change, coalesce(%(at)s, now())
  FROM unnest(%(alert_ids)s::bigint[], %(changes)s::text[]) WITH ORDINALITY
       AS c(alert_id, change, n)
 ORDER BY c.n
RETURNING id
"""

_NOTIFY: Final = "SELECT pg_notify(%s, c::text) FROM unnest(%s::bigint[]) AS c"


async def record_changes(
    conn: psycopg.AsyncConnection[Any],
    changes: Sequence[tuple[int, str]],
    *,
    at: datetime | None = None,
) -> list[int]:
    """Record ``(alert_id, change)`` pairs in order and announce them at commit.

    ``at`` is when they happened (the gateway's batch time); None is the transaction's time.
    Returns the new change ids, ascending.
    """
    if not changes:
        return []
    async with conn.cursor(row_factory=tuple_row) as cur:
        await cur.execute(
            _RECORD,
            {
                "at": at,
                "alert_ids": [alert_id for alert_id, _ in changes],
                "changes": [change for _, change in changes],
            },
        )
        change_ids = sorted(row[0] for row in await cur.fetchall())
        # Delivered to the listeners when (and only if) this transaction commits.
        await cur.execute(_NOTIFY, (CHANNEL, change_ids))
    return change_ids
