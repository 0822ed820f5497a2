"""The kernel's shared writes (the alert change feed, the audit log) against a real PostgreSQL."""

from __future__ import annotations

import asyncio

import psycopg

from carewatch.db import alert_feed
from carewatch.db.audit import AuditEntry, Auditor, write_audit


def _seed(database_url: str) -> int:
    """One organisation, site and device with one alert; returns the alert's id."""
    with psycopg.connect(database_url) as conn:
        conn.execute("INSERT INTO organisations (id, name) VALUES ('org-a', 'A')")
        conn.execute("INSERT INTO sites (id, org_id, name) VALUES ('site-a', 'org-a', 'Site A')")
        conn.execute(
            "INSERT INTO devices (id, kind, site_id, label) VALUES"
            " ('cam-001', 'safety_camera', 'site-a', 'Lgh 1')"
        )
        row = conn.execute(
            "INSERT INTO alerts (device_id, rule, severity, state, reason, opened_at)"
            " VALUES ('cam-001', 'tamper', 'high', 'open', 'test', now()) RETURNING id"
        ).fetchone()
        assert row is not None
        return int(row[0])


def test_changes_are_recorded_in_order_and_announced_at_commit(database_url: str) -> None:
    """Two changes become two alert_changes rows in the order given, and their ids reach a
    listener only once the writing transaction commits."""
    alert_id = _seed(database_url)

    async def scenario() -> tuple[list[int], list[str], list[str], list[tuple[int, str]]]:
        listener = await psycopg.AsyncConnection.connect(database_url, autocommit=True)
        async with listener:
            await listener.execute(f"LISTEN {alert_feed.CHANNEL}")
            async with await psycopg.AsyncConnection.connect(database_url) as writer:
                ids = await alert_feed.record_changes(
                    writer, [(alert_id, "alert.opened"), (alert_id, "alert.updated")]
                )
                before = [n.payload async for n in listener.notifies(timeout=0.3)]
                await writer.commit()
            after = [n.payload async for n in listener.notifies(timeout=1.0, stop_after=2)]
        with psycopg.connect(database_url) as conn:
            rows = conn.execute(
                "SELECT id, change FROM alert_changes WHERE alert_id = %s ORDER BY id", (alert_id,)
            ).fetchall()
        return ids, before, after, rows

    ids, before, after, rows = asyncio.run(scenario())
    assert before == []
    assert after == [str(change_id) for change_id in ids]
    assert rows == [(ids[0], "alert.opened"), (ids[1], "alert.updated")]


def test_nothing_to_record_writes_nothing(database_url: str) -> None:
    """No changes: no rows, no ids."""

    async def scenario() -> list[int]:
        async with await psycopg.AsyncConnection.connect(database_url) as conn:
            return await alert_feed.record_changes(conn, [])

    assert asyncio.run(scenario()) == []


def test_audit_entries_take_the_devices_organisation_when_none_is_given(
    database_url: str,
) -> None:
    """An entry without an organisation is filed under its device's; entries keep their order,
    and the auditor's name, user and client are on each."""
    alert_id = _seed(database_url)

    async def scenario() -> None:
        async with await psycopg.AsyncConnection.connect(database_url) as conn:
            await write_audit(
                conn,
                Auditor(username="cli:root", client="cli"),
                [
                    AuditEntry("device.decommission", device_id="cam-001", note="broken"),
                    AuditEntry("alert.resolve", org_id="org-a", alert_id=alert_id),
                ],
            )

    asyncio.run(scenario())
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT username, user_id, org_id, action, alert_id, device_id, note, client"
            " FROM audit_log ORDER BY id"
        ).fetchall()
    assert rows == [
        ("cli:root", None, "org-a", "device.decommission", None, "cam-001", "broken", "cli"),
        ("cli:root", None, "org-a", "alert.resolve", alert_id, None, None, "cli"),
    ]
