"""``carewatch usage rebuild``: the operator's repair tool for the usage rollups.

Recomputes the rollups of a period from the stored events (carewatch.db.rollups.rebuild): after
a restore, a change of a device's site that should count retroactively, or anything else that
left the rollups out of step with ``events``. Safe while gateways run.
"""

from __future__ import annotations

import argparse
import logging
from datetime import UTC, datetime, timedelta

import psycopg

from carewatch.db import rollups
from carewatch.settings import Settings

log = logging.getLogger(__name__)


def parse_moment(text: str, what: str) -> datetime:
    """An ISO 8601 date or time; without an offset it is UTC. ValueError with the flag's name."""
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"{what}: not an ISO 8601 date or time: {text!r}") from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def run(settings: Settings, args: argparse.Namespace) -> int:
    """Run ``carewatch usage rebuild``: 0 when rebuilt, 2 for bad arguments, 1 when the database
    refused or was away."""
    try:
        until = parse_moment(args.until, "--until") if args.until else datetime.now(UTC)
        since = parse_moment(args.since, "--since") if args.since else until - timedelta(days=30)
        rollups.hour_range(since, until)  # checks the range before connecting
        horizon = datetime.now(UTC) - timedelta(days=settings.retention_days)
        if since < horizon:
            # The rollups outlive the events: rebuilding past the retention horizon would
            # replace counts with the nothing that is left.
            raise ValueError(
                f"--since {since.isoformat()} is before the events' retention horizon "
                f"({settings.retention_days} days, {horizon.isoformat(timespec='seconds')}): "
                "the rollups there cannot be rebuilt"
            )
    except ValueError as exc:
        log.error("%s", exc)
        return 2

    def progress(start: datetime, end: datetime, rows: int) -> None:
        print(
            f"usage rebuild: {start.isoformat()} .. {end.isoformat()}: {rows} counted", flush=True
        )

    try:
        with psycopg.connect(settings.database_url, autocommit=True) as conn:
            result = rollups.rebuild(conn, since, until, progress=progress)
    except psycopg.Error as exc:
        log.error("cannot rebuild the usage rollups: %s", exc)
        return 1
    print(
        f"usage rebuild: done, {result.since.isoformat()} .. {result.until.isoformat()} in "
        f"{result.chunks} chunk(s), {result.delta_rows} events, visits and replacements counted",
        flush=True,
    )
    return 0
