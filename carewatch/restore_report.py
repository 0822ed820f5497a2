"""``carewatch restore report``: what a point-in-time restore lost, said so that it is not lost
silently.

A restore to a point in time keeps everything committed up to the target and nothing after
it. The gateway had already acknowledged the messages it stored after the target, so the
broker no longer holds them either: they are gone from both. The restored database cannot
list what it never kept, but it knows where its data ends: its newest event receipt, alert
change and audit entry. Everything the gateway acknowledged between that moment and the
failure is lost; this report gives that window, per site with its devices and the alerts that
were open at the restore, for the operator to hand to care staff (re-check those alerts; look
in the vendors' own portals for that window).

Run it after the restore and before the gateway starts: once the gateway ingests again, the
data ends "now" and the window can no longer be read off the database. The window errs on the
safe side: a database that was quiet before the target reports from its last row, earlier
than the target; messages the gateway received up to one ingest delay (its batch wait and
commit) before the window opens may be in it too, as they were acknowledged after it.
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any, Final

import orjson
import psycopg

from carewatch.rollup_rebuild import parse_moment
from carewatch.settings import Settings

log = logging.getLogger(__name__)

# The newest row of each table the product writes as things happen. events.received_at has no
# index, so it is read over the events whose device time is within a day of the newest
# last_seen (chunk exclusion and the BRIN index on time keep that cheap); an event with an
# older device time still moved its device's last_seen, at most 5 s behind (the gateway skips
# smaller moves), which only makes the window start earlier: the safe side.
_DATA_UNTIL: Final = """
WITH seen AS (SELECT max(last_seen) AS at FROM devices)
SELECT greatest(
         (SELECT at FROM seen),
         (SELECT max(received_at) FROM events
           WHERE time >= (SELECT at FROM seen) - interval '1 day'),
         (SELECT max(changed_at) FROM alert_changes),
         (SELECT max(at) FROM audit_log))
"""

_SITES: Final = """
SELECT s.id, s.org_id, s.name,
       count(d.id) FILTER (WHERE d.status = 'active') AS devices,
       max(d.last_seen) AS last_seen,
       (SELECT count(*) FROM alerts a JOIN devices ad ON ad.id = a.device_id
         WHERE ad.site_id = s.id AND a.state <> 'resolved') AS open_alerts
  FROM sites s
  LEFT JOIN devices d ON d.site_id = s.id
 GROUP BY s.id, s.org_id, s.name
 ORDER BY s.org_id, s.id
"""


@dataclass(frozen=True, slots=True)
class SiteWindow:
    """One site's part of the report."""

    site_id: str
    org_id: str
    name: str
    devices: int
    last_seen: datetime | None
    open_alerts: int


@dataclass(frozen=True, slots=True)
class RestoreReport:
    """The restored database's data ends at ``data_until``; ``[data_until, failed_at]`` is lost."""

    data_until: datetime | None
    failed_at: datetime
    sites: tuple[SiteWindow, ...]

    @property
    def lost_s(self) -> float | None:
        """The length of the lost window in seconds (None for an empty database)."""
        if self.data_until is None:
            return None
        return max(0.0, (self.failed_at - self.data_until).total_seconds())

    def as_json(self) -> bytes:
        """The report as JSON (times in ISO 8601), for scripts and the restore drill."""
        return orjson.dumps({**asdict(self), "lost_s": self.lost_s}, option=orjson.OPT_INDENT_2)

    def as_text(self) -> str:
        """The report for a person."""
        if self.data_until is None:
            return "The database holds no events, alert changes or audit entries.\n"
        lines = [
            f"The restored database holds data up to {_when(self.data_until)}.",
            f"Lost: whatever the gateway acknowledged from then until the failure at "
            f"{_when(self.failed_at)} ({self.lost_s:.0f} s); the broker no longer holds it.",
            "Tell each site's staff: re-check the open alerts, and look in the vendors' portals",
            "for that window.",
            "",
            f"{'site':<24} {'organisation':<16} {'devices':>7} {'open alerts':>11}  last seen",
        ]
        for site in self.sites:
            lines.append(
                f"{site.site_id:<24} {site.org_id:<16} {site.devices:>7} {site.open_alerts:>11}  "
                f"{_when(site.last_seen) if site.last_seen else '-'}"
            )
        return "\n".join(lines) + "\n"


def build_report(conn: psycopg.Connection[Any], failed_at: datetime) -> RestoreReport:
    """Read the report off a restored database (before the gateway ingests into it again)."""
    row = conn.execute(_DATA_UNTIL).fetchone()
    data_until = row[0] if row is not None else None
    sites = tuple(SiteWindow(*site) for site in conn.execute(_SITES).fetchall())
    return RestoreReport(data_until, failed_at, sites)


def run(settings: Settings, args: argparse.Namespace) -> int:
    """Run ``carewatch restore report``: 0 when reported, 2 for bad arguments, 1 when the
    database was away."""
    try:
        failed_at = (
            parse_moment(args.failed_at, "--failed-at") if args.failed_at else datetime.now(UTC)
        )
    except ValueError as exc:
        log.error("%s", exc)
        return 2
    try:
        with psycopg.connect(settings.database_url, autocommit=True) as conn:
            report = build_report(conn, failed_at)
    except psycopg.Error as exc:
        log.error("cannot read the restored database: %s", exc)
        return 1
    if args.json:
        print(report.as_json().decode())
    else:
        print(report.as_text(), end="")
    return 0


def _when(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds")
