"""The gateway's storage: one transaction per batch, and the registry and housekeeping queries.

The statements are this module's constants, except those of the alert rules, which run inside
the batch's transaction and are :mod:`gateway.alerting`'s (their changes are recorded through
the kernel's :mod:`carewatch.db.alert_feed`), with the arrival by lock after them
(:mod:`gateway.response_arrival`), and the usage rollups', which the events insert takes from
:mod:`carewatch.db.rollups`.

A batch is written as: COPY into a session-local staging table; the alert rules over its
messages; ``INSERT ... SELECT ... ON CONFLICT DO NOTHING`` into ``events`` (a resent event
collides on (device_id, event_id, time) and is stored once) which, in the same statement, adds
the rows it inserted to the usage rollups (``carewatch.db.rollups``); one set-based UPDATE of
``devices`` (only the rows worth writing, see ``gateway.device_state``); COPY of the rejects
into ``dead_letters`` — and COMMIT. Only then are the messages acknowledged to the broker.

The rules come first and the rollups last because of what batches share. The gateway stores
the devices' messages in lanes (``gateway.lanes``): no two lanes hold one device, so the rows
of the rules (states, alerts) and of the device rollups are each lane's own, and lanes commit
side by side. What every lane writes is a site's rollup rows of the current hour and day:
those are locked by the events insert, so it comes as late as it can, and a lane holds them
for the insert and the commit only, not for its rules.
"""

from __future__ import annotations

import collections
import functools
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, TypeAlias

import orjson
import psycopg
from psycopg import sql
from psycopg.types.json import set_json_loads

from carewatch.db import rollups
from devices.catalog import Catalog
from devices.envelope import DeviceRef, Event, RejectReason, StatusReport
from devices.zigbee2mqtt import ZigbeeDeviceRef
from gateway import alerting, response_arrival
from gateway.device_state import DeviceUpdate, fold_batch
from gateway.rule_states import RuleStates

log = logging.getLogger(__name__)

STAGING_TABLE: Final = "events_staging"
_STAGING: Final = sql.Identifier(STAGING_TABLE)

# ON COMMIT DELETE ROWS empties it at every commit, so a batch never sees the previous one.
CREATE_STAGING: Final = sql.SQL(
    """
CREATE TEMP TABLE IF NOT EXISTS {} (
    time timestamptz NOT NULL,
    received_at timestamptz NOT NULL,
    device_id text NOT NULL,
    event_id text NOT NULL,
    type text NOT NULL,
    data jsonb NOT NULL
) ON COMMIT DELETE ROWS
"""
).format(_STAGING)

# Rendered once, as text: it runs for every batch.
COPY_STAGING: Final = (
    sql.SQL("COPY {} (time, received_at, device_id, event_id, type, data) FROM STDIN")
    .format(_STAGING)
    .as_string()
)

# Both insert into events and roll up what they inserted into the usage tables, in one
# statement (carewatch.db.rollups); both return (device_id, event_id, time) of the new rows.
# It runs before the devices update: a battery replacement compares with the level before it.
# The staged rows already stored: a batch with a resent event is written again, with these
# left out of the rules (the insert leaves them out of events and rollups itself).
STORED_BEFORE: Final = (
    sql.SQL(
        "SELECT s.device_id, s.event_id, s.time FROM {} AS s WHERE EXISTS (SELECT 1 FROM events"
        " AS e WHERE e.device_id = s.device_id AND e.event_id = s.event_id AND e.time = s.time)"
    )
    .format(_STAGING)
    .as_string()
)
MOVE_STAGED: Final = rollups.ingest_sql(
    sql.SQL("SELECT time, received_at, device_id, event_id, type, data FROM {}").format(_STAGING)
)

INSERT_ONE: Final = rollups.ingest_sql(
    sql.SQL("SELECT %s::timestamptz, %s::timestamptz, %s::text, %s::text, %s::text, %s::jsonb")
)

# Rows are sorted by id so that two gateways updating the same devices lock them in the same
# order and cannot deadlock. last_seen only moves forward; battery/firmware keep the old value
# when the batch did not carry one.
UPDATE_DEVICES = """
UPDATE devices AS d SET
    last_seen = GREATEST(d.last_seen, v.last_seen),
    online = CASE WHEN v.online IS NULL THEN d.online ELSE v.online END,
    battery = COALESCE(v.battery, d.battery),
    firmware = COALESCE(v.firmware, d.firmware)
FROM unnest(%s::text[], %s::timestamptz[], %s::boolean[], %s::smallint[], %s::text[])
    AS v(id, last_seen, online, battery, firmware)
WHERE d.id = v.id
"""

UPDATE_BATTERY = "UPDATE devices SET battery = %s WHERE id = %s"

COPY_DEAD_LETTERS = "COPY dead_letters (received_at, topic, payload, reason, detail) FROM STDIN"
# The broker lets through messages of up to 1 MiB (a bridge's device list, broker/mosquitto.conf),
# so a dead letter keeps the first 64 KiB of its payload: what the broker's limit was before,
# enough to see what a faulty device sends, and an envelope up to it is still kept whole.
DEAD_LETTER_PAYLOAD_MAX_BYTES: Final = 64 * 1024


@dataclass(slots=True)
class DeadLetter:
    """A message that is not an event, kept as received with why (table ``dead_letters``)."""

    received_at: datetime
    topic: str
    payload: bytes
    reason: RejectReason
    detail: str


@dataclass(slots=True)
class BatchOutcome:
    """What storing a batch did: events stored by kind, alerts, duplicates, dead letters."""

    stored_by_kind: collections.Counter[str] = field(default_factory=collections.Counter)
    alerts: alerting.AlertOutcome = field(default_factory=alerting.AlertOutcome)
    duplicates: int = 0
    dead_letters: list[DeadLetter] = field(default_factory=list)


async def prepare_connection(conn: psycopg.AsyncConnection[object]) -> None:
    """Pool ``configure`` hook: every ingest connection gets its own staging table, and
    decodes jsonb (the rules' device states) with orjson instead of the stdlib."""
    set_json_loads(orjson.loads, conn)
    await conn.execute(CREATE_STAGING)
    await conn.commit()


async def write_batch(
    conn: psycopg.AsyncConnection[object],
    messages: Sequence[Event | StatusReport],
    device_updates: Mapping[str, DeviceUpdate],
    dead_letters: Sequence[DeadLetter],
    catalog: Catalog,
    battery_watch_below: int,
    rule_states: RuleStates,
) -> BatchOutcome:
    """Store one batch in one transaction. Raises psycopg errors; the caller decides to retry.

    ``messages`` are the batch's events and status reports in arrival order: the new ones
    among them go through the alert rules in the same transaction, from the states
    ``rule_states`` holds (it learns the new ones once the transaction has committed).
    A ``psycopg.errors.DataError`` means PostgreSQL refused some row that validation let
    through; :func:`write_batch_row_by_row` then isolates it. A
    :class:`gateway.errors.RuleStateConflictError` means: try again at once.
    """
    attempt = functools.partial(
        _write_batch,
        conn,
        messages,
        device_updates,
        dead_letters,
        catalog,
        battery_watch_below,
        rule_states,
    )
    try:
        return await attempt()
    except _ResentEventsError:
        # Rare (a redelivery after a restart, a resend): again, with them looked up first.
        return await attempt(resent=True)


class _ResentEventsError(Exception):
    """The events insert stored fewer rows than the rules were run for: some were resent."""


async def _write_batch(
    conn: psycopg.AsyncConnection[object],
    messages: Sequence[Event | StatusReport],
    device_updates: Mapping[str, DeviceUpdate],
    dead_letters: Sequence[DeadLetter],
    catalog: Catalog,
    battery_watch_below: int,
    rule_states: RuleStates,
    *,
    resent: bool = False,
) -> BatchOutcome:
    """One try of :func:`write_batch`. Without ``resent`` every event is taken to be new, and
    if the insert finds otherwise, :class:`_ResentEventsError` rolls the transaction back."""
    outcome = BatchOutcome(dead_letters=list(dead_letters))
    events = [m for m in messages if type(m) is Event]
    new_messages: Sequence[Event | StatusReport] = messages
    async with conn.transaction(), conn.cursor() as cur:
        if events:
            async with cur.copy(COPY_STAGING) as copy:
                await copy.write(copy_text(events))
            if resent:
                await cur.execute(STORED_BEFORE)
                stored = {(r[0], r[1], r[2]) for r in await cur.fetchall()}  # type: ignore[index]
                new_messages = only_new(messages, stored)
        new_events = [m for m in new_messages if type(m) is Event]
        for_rules = await alerting.select_for_rules(cur, new_messages, battery_watch_below)
        now = datetime.now(UTC)
        outcome.alerts = await alerting.evaluate_messages(cur, for_rules, now, catalog, rule_states)
        # The door unlocked after the alarm was taken is the arrival (+#12): new events only.
        outcome.alerts.change_ids += await response_arrival.arrive_by_lock(cur, new_messages, now)
        if events:
            await cur.execute(MOVE_STAGED)
            if cur.rowcount != len(new_events):
                raise _ResentEventsError
            outcome.duplicates = len(events) - len(new_events)
            outcome.stored_by_kind.update(e.kind for e in new_events)
        await _update_devices(cur, device_updates)
        await _copy_dead_letters(cur, outcome.dead_letters)
    rule_states.remember(outcome.alerts.states)
    return outcome


def only_new(
    messages: Sequence[Event | StatusReport], stored: set[tuple[str, str, datetime]]
) -> list[Event | StatusReport]:
    """``messages`` without the events already ``stored`` (device_id, event_id, time) nor the
    repeats of an event earlier in the batch; status reports are all kept."""
    seen = set(stored)
    new: list[Event | StatusReport] = []
    for m in messages:
        if type(m) is Event:
            key = (m.device_id, m.event_id, m.time)
            if key in seen:
                continue
            seen.add(key)
        new.append(m)
    return new


async def write_batch_row_by_row(
    conn: psycopg.AsyncConnection[object],
    messages: Sequence[Event | StatusReport],
    dead_letters: Sequence[DeadLetter],
    topics: dict[tuple[str, str], tuple[str, bytes]],
    catalog: Catalog,
    rule_states: RuleStates,
) -> BatchOutcome:
    """The slow path after a DataError: each event in a savepoint, refused rows dead-lettered.

    ``topics`` maps (device_id, event_id) to the original topic and payload, so that a refused
    row is kept as received.
    """
    outcome = BatchOutcome(dead_letters=list(dead_letters))
    accepted: list[Event | StatusReport] = []
    async with conn.transaction(), conn.cursor() as cur:
        for m in messages:
            if type(m) is not Event:
                accepted.append(m)
                continue
            try:
                async with conn.transaction():
                    await cur.execute(
                        INSERT_ONE,
                        (m.time, m.received_at, m.device_id, m.event_id, m.type, _json(m.data)),
                    )
                    row = await cur.fetchone()
            except psycopg.errors.DataError as error:
                topic, payload = topics[(m.device_id, m.event_id)]
                detail = str(error).splitlines()[0][:500]
                outcome.dead_letters.append(
                    DeadLetter(m.received_at, topic, payload, RejectReason.STORAGE_REJECTED, detail)
                )
                continue
            if row is None:
                outcome.duplicates += 1
            else:
                accepted.append(m)
                outcome.stored_by_kind[m.kind] += 1
                if m.battery is not None:
                    # The next row's battery replacement compares with this level, as the
                    # batch statement compares with the previous heartbeat of the batch.
                    await cur.execute(UPDATE_BATTERY, (m.battery, m.device_id))
        events = [m for m in accepted if type(m) is Event]
        statuses = [m for m in accepted if type(m) is StatusReport]
        await _update_devices(cur, fold_batch(events, statuses))
        await _copy_dead_letters(cur, outcome.dead_letters)
        now = datetime.now(UTC)
        outcome.alerts = await alerting.evaluate_messages(cur, accepted, now, catalog, rule_states)
        outcome.alerts.change_ids += await response_arrival.arrive_by_lock(cur, accepted, now)
    rule_states.remember(outcome.alerts.states)
    return outcome


# COPY's text format: backslash, tab, newline and carriage return must be escaped in a value.
_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def copy_text(events: Sequence[Event]) -> bytes:
    """The staging rows in COPY's text format, built in one go.

    psycopg's ``write_row`` is correct and general, but it is a coroutine and a type dispatch
    per value; here the types are fixed and most values need no escaping, which profiling put
    at a sixth of the gateway's time. What may need it: the event id (any string but NUL) and
    the JSON (orjson escapes control characters, so only its backslashes). Device ids and
    event types passed the envelope's validation (ids match [a-z0-9_-], types the catalog).
    """
    received: dict[datetime, str] = {}
    lines: list[bytes] = []
    for e in events:
        at = received.get(e.received_at)
        if at is None:  # messages of one network read share it
            at = received[e.received_at] = e.received_at.isoformat()
        event_id = e.event_id
        if "\\" in event_id or "\t" in event_id or "\n" in event_id or "\r" in event_id:
            event_id = event_id.translate(_COPY_ESCAPES)
        data = orjson.dumps(e.data)
        if b"\\" in data:
            data = data.replace(b"\\", b"\\\\")
        lines.append(
            f"{e.time.isoformat()}\t{at}\t{e.device_id}\t{event_id}\t{e.type}\t".encode()
            + data
            + b"\n"
        )
    return b"".join(lines)


def _json(data: object) -> str:
    return orjson.dumps(data).decode()


async def _update_devices(
    cur: psycopg.AsyncCursor[object], updates: Mapping[str, DeviceUpdate]
) -> None:
    if not updates:
        return
    ids = sorted(updates)
    rows = [updates[i] for i in ids]
    await cur.execute(
        UPDATE_DEVICES,
        (
            ids,
            [u.last_seen for u in rows],
            [u.online for u in rows],
            [u.battery for u in rows],
            [u.firmware for u in rows],
        ),
    )


async def _copy_dead_letters(
    cur: psycopg.AsyncCursor[object], dead_letters: Iterable[DeadLetter]
) -> None:
    letters = list(dead_letters)
    if not letters:
        return
    async with cur.copy(COPY_DEAD_LETTERS) as copy:
        for d in letters:
            # The topic came off the wire: NUL cannot go into a text column, so escape it.
            topic = d.topic.replace("\x00", "\\0")
            payload, detail = d.payload, d.detail
            if len(payload) > DEAD_LETTER_PAYLOAD_MAX_BYTES:
                payload = payload[:DEAD_LETTER_PAYLOAD_MAX_BYTES]
                detail = f"{detail} (payload: the first {len(payload)} of {len(d.payload)} bytes)"
            await copy.write_row((d.received_at, topic, payload, d.reason.value, detail))


# --- registry ------------------------------------------------------------------------------

# zigbee_name and zigbee_model are NULL unless source = 'zigbee2mqtt' (a CHECK of 0004).
_DEVICE_COLUMNS: Final = "id, kind, status = 'active', updated_at, zigbee_name, zigbee_model"
LOAD_DEVICES: Final = f"SELECT {_DEVICE_COLUMNS} FROM devices"  # noqa: S608 - constant fragments
LOAD_CHANGED: Final = f"""
SELECT {_DEVICE_COLUMNS} FROM devices WHERE updated_at >= %s
"""  # noqa: S608 - constant fragments only
LOAD_SOME: Final = f"""
SELECT {_DEVICE_COLUMNS} FROM devices WHERE id = ANY(%s)
"""  # noqa: S608 - constant fragments only
# Active first: a decommissioned device may have left the name to a new one.
LOAD_ZIGBEE_NAMED: Final = f"""
SELECT {_DEVICE_COLUMNS} FROM devices
WHERE source = 'zigbee2mqtt' AND zigbee_name = ANY(%s)
ORDER BY status = 'active', updated_at
"""  # noqa: S608 - constant fragments only

ZigbeeRow: TypeAlias = tuple[str, ZigbeeDeviceRef] | None
"""A device's friendly name and what the gateway needs of it; None: not behind zigbee2mqtt."""


async def load_devices(
    conn: psycopg.AsyncConnection[object],
    *,
    changed_since: datetime | None = None,
    ids: Sequence[str] | None = None,
    zigbee_names: Sequence[str] | None = None,
) -> tuple[list[DeviceRef], dict[str, ZigbeeRow], datetime | None]:
    """Devices as the gateway needs them, what of them is behind zigbee2mqtt (by device id,
    in the order read), and the newest ``updated_at`` among them."""
    async with conn.cursor() as cur:
        if zigbee_names is not None:
            await cur.execute(LOAD_ZIGBEE_NAMED, (list(zigbee_names),))
        elif ids is not None:
            await cur.execute(LOAD_SOME, (list(ids),))
        elif changed_since is not None:
            await cur.execute(LOAD_CHANGED, (changed_since,))
        else:
            await cur.execute(LOAD_DEVICES)
        rows: list[Any] = await cur.fetchall()
    refs = [DeviceRef(r[0], r[1], r[2]) for r in rows]
    zigbee: dict[str, ZigbeeRow] = {
        r[0]: None if r[4] is None else (r[4], ZigbeeDeviceRef(r[0], r[1], r[5], r[2]))
        for r in rows
    }
    newest = max((r[3] for r in rows), default=None)
    return refs, zigbee, newest


# --- housekeeping --------------------------------------------------------------------------

# A device is offline once nothing was heard from it for its kind's silence (contract: three
# heartbeat intervals; the sleepy Zigbee sensors of issue 4 wait twenty).
MARK_SILENT_OFFLINE = sql.SQL(
    """
UPDATE devices SET online = false
WHERE online AND status = 'active' AND kind = %s
  AND last_seen < now() - make_interval(secs => %s)
"""
)

COUNT_ONLINE = """
SELECT kind, count(*) FILTER (WHERE online) FROM devices WHERE status = 'active' GROUP BY kind
"""


async def mark_silent_devices_offline(
    conn: psycopg.AsyncConnection[object], silence_s: dict[str, int]
) -> int:
    """``silence_s``: per kind, the silence after which its devices are offline (the kind's
    device_offline rule: after_heartbeats heartbeat intervals)."""
    changed = 0
    async with conn.transaction(), conn.cursor() as cur:
        for kind, seconds in silence_s.items():
            await cur.execute(MARK_SILENT_OFFLINE, (kind, seconds))
            changed += cur.rowcount
    return changed


async def count_online(conn: psycopg.AsyncConnection[object]) -> dict[str, int]:
    """Active devices online, by kind."""
    async with conn.cursor() as cur:
        await cur.execute(COUNT_ONLINE)
        return {row[0]: row[1] for row in await cur.fetchall()}  # type: ignore[index]


SITES_LAST_SEEN = """
SELECT site_id, max(last_seen) FROM devices
WHERE status = 'active' AND last_seen IS NOT NULL GROUP BY site_id
"""


async def sites_last_seen(conn: psycopg.AsyncConnection[object]) -> list[tuple[str, datetime]]:
    """Per site with active devices that have spoken: when the last of them was heard from."""
    async with conn.cursor() as cur:
        await cur.execute(SITES_LAST_SEEN)
        return [(row[0], row[1]) for row in await cur.fetchall()]  # type: ignore[index]


# --- the watchdog ------------------------------------------------------------------------------

# One watchdog pass at a time across all gateways: a session-level advisory lock, held for the
# pass and released at its end (or by PostgreSQL when the connection dies). The key is
# arbitrary but fixed ("cwwd").
TRY_WATCHDOG_LOCK = "SELECT pg_try_advisory_lock(x'63777764'::int)"
WATCHDOG_UNLOCK = "SELECT pg_advisory_unlock(x'63777764'::int)"
# The care watchdog's (night checks, escalation chains): a lock of its own, so that it runs
# beside the device rules' pass, not after it.
TRY_CARE_LOCK = "SELECT pg_try_advisory_lock(x'63776361'::int)"
CARE_UNLOCK = "SELECT pg_advisory_unlock(x'63776361'::int)"
ACTIVE_DEVICE_IDS = "SELECT id FROM devices WHERE status = 'active' ORDER BY id"
COUNT_OPEN_ALERTS = """
SELECT severity, count(*) FROM alerts WHERE state <> 'resolved' GROUP BY severity
"""
