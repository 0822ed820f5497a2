"""Alert rules in the gateway: applied in the transaction that stores the batch.

An alert is therefore never opened for an event that was not stored, and never lost for one
that was. The rules themselves are pure (``devices.rules``); this module loads what they need
(each device's rule state, its site's settings, its alerts on the board), runs them, and writes
the outcome: the new rule state, the alert rows, and each change through the kernel's alert
feed (:func:`carewatch.db.alert_feed.record_changes`: an ``alert_changes`` row and a
``NOTIFY`` carrying its id, delivered when the transaction commits). The statements of the
rules (loading their inputs, writing alerts and rule states) are the constants of this module;
the rest of the gateway's SQL is in :mod:`gateway.store`.

Several gateways may evaluate the same device at once (a shared subscription spreads one
device's messages over them). The partial unique index on alerts (one unresolved alert per
device and rule) is the hard guarantee: a second Open becomes a repeat of the first.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, tzinfo
from functools import lru_cache
from typing import Any

import orjson
import psycopg
from psycopg.types.json import Jsonb

from carewatch.db.alert_feed import record_changes
from carewatch.site_time import site_tz
from devices.catalog import HEARTBEAT, Catalog, Rule, Severity
from devices.envelope import Event, StatusReport
from devices.reasons import Reason
from devices.rules import (
    DEFAULT_SITE_TZ,
    AlertChange,
    AlertState,
    Clear,
    DeviceState,
    Escalate,
    Open,
    OpenAlert,
    Repeat,
    SiteRuleSettings,
    Upgrade,
    apply_changes,
    clear_resolves,
    evaluate_event,
    evaluate_tick,
)

log = logging.getLogger(__name__)

# in_maintenance: a maintenance window ("in repair") is in force now (migration 0007); read with
# every load, so every gateway sees a window begin and end without a cache to keep in step.
LOAD_DEVICES = """
SELECT d.id, d.kind, d.created_at, s.id, s.rule_settings, r.state, d.last_seen, s.timezone,
       EXISTS (SELECT 1 FROM device_maintenance AS m
               WHERE m.device_id = d.id AND m.starts_at <= %(now)s
                 AND %(now)s < least(m.ends_at, m.ended_at)) AS in_maintenance
FROM devices AS d
JOIN sites AS s ON s.id = d.site_id
LEFT JOIN device_rule_state AS r ON r.device_id = d.id
WHERE d.id = ANY(%(ids)s) AND d.status = 'active'
"""

# The device rules' alerts only (a supervision alert, with planned_at, is about a planned check
# and has its own evaluation); the predicate is the partial unique index's (migration 0007).
LOAD_BOARD = """
SELECT id, device_id, rule, severity, state, opened_at, count,
       cleared_at IS NOT NULL, escalated_at IS NOT NULL, raised_at
FROM alerts
WHERE device_id = ANY(%s) AND state <> 'resolved' AND planned_at IS NULL
"""

# The states travel as one JSON object {device id: state}: psycopg quotes every element of a
# text or jsonb array with a regular expression, which cost more than the rules themselves.
# Rows go in id order so that two gateways lock them in the same order.
SAVE_STATES = """
INSERT INTO device_rule_state AS r (device_id, state, updated_at)
SELECT key, value, now() FROM jsonb_each(%s::jsonb) ORDER BY key
ON CONFLICT (device_id) DO UPDATE SET state = EXCLUDED.state, updated_at = now()
"""

# Every reason is written three ways (migration 0012): the English text, its code and its
# arguments (devices.reasons; reason_params gives the three parameters).
OPEN_ALERT = """
INSERT INTO alerts (device_id, rule, severity, state, opened_at, reason, reason_code, reason_args,
                    last_event_at)
VALUES (%(device)s, %(rule)s, %(severity)s, 'open', %(now)s, %(reason)s, %(reason_code)s,
        %(reason_args)s, %(now)s)
ON CONFLICT (device_id, rule) WHERE state <> 'resolved' AND planned_at IS NULL
DO UPDATE SET count = alerts.count + 1, last_event_at = EXCLUDED.last_event_at,
              reason = EXCLUDED.reason, reason_code = EXCLUDED.reason_code,
              reason_args = EXCLUDED.reason_args, updated_at = now()
RETURNING id, xmax = 0
"""

REPEAT_ALERT = """
UPDATE alerts SET count = count + 1, cleared_at = NULL, cleared_reason = NULL,
       cleared_reason_code = NULL, cleared_reason_args = NULL,
       reason = %(reason)s, reason_code = %(reason_code)s, reason_args = %(reason_args)s,
       last_event_at = %(now)s, updated_at = now()
WHERE id = %(id)s
"""

UPGRADE_ALERT = """
UPDATE alerts SET severity = %(severity)s, raised_at = %(now)s, reason = %(reason)s,
       reason_code = %(reason_code)s, reason_args = %(reason_args)s,
       last_event_at = %(now)s, updated_at = now()
WHERE id = %(id)s
"""

RESOLVE_ALERT = """
UPDATE alerts SET state = 'resolved', resolved_at = %(now)s, resolved_by = 'system',
       cleared_at = coalesce(cleared_at, %(now)s), cleared_reason = %(reason)s,
       cleared_reason_code = %(reason_code)s, cleared_reason_args = %(reason_args)s,
       updated_at = now()
WHERE id = %(id)s
"""

CLEAR_ALERT = """
UPDATE alerts SET cleared_at = %(now)s, cleared_reason = %(reason)s,
       cleared_reason_code = %(reason_code)s, cleared_reason_args = %(reason_args)s,
       updated_at = now()
WHERE id = %(id)s
"""

ESCALATE_ALERT = """
UPDATE alerts SET escalated_at = %(now)s, updated_at = now() WHERE id = %(id)s
"""


@dataclass(slots=True)
class DeviceRules:
    """Everything the rules need about one device, as loaded, and where evaluation left it."""

    kind: str
    settings: SiteRuleSettings
    state: DeviceState
    stored: dict[str, Any] | None
    site_tz: tzinfo = DEFAULT_SITE_TZ  # night hours (door_left_open) are the site's
    in_maintenance: bool = False  # device-health rules silent (devices.rules)
    board: dict[Rule, OpenAlert] = field(default_factory=dict)
    alert_ids: dict[Rule, int] = field(default_factory=dict)


@dataclass(slots=True)
class AlertOutcome:
    """What a run of the rules wrote: the alert change ids in order, and how many alerts opened."""

    change_ids: list[int] = field(default_factory=list)
    opened: int = 0


async def evaluate_messages(
    cur: psycopg.AsyncCursor[Any],
    messages: Sequence[Event | StatusReport],
    now: datetime,
    catalog: Catalog,
) -> AlertOutcome:
    """Run the event rules over a batch's new messages (arrival order) and write the outcome."""
    outcome = AlertOutcome()
    device_ids = sorted({m.device_id for m in messages})
    if not device_ids:
        return outcome
    devices = await load_rules(cur, device_ids, now, catalog)
    for message in messages:
        rules = devices.get(message.device_id)
        if rules is None:
            continue
        rules.state, changes = evaluate_event(
            rules.state,
            rules.board,
            message,
            rules.settings,
            now,
            catalog=catalog,
            site_tz=rules.site_tz,
            in_maintenance=rules.in_maintenance,
        )
        await apply(cur, message.device_id, rules, changes, now, outcome)
    await save_states(cur, devices)
    return outcome


# Devices whose next heartbeat can change something: an alert on the board, or a state the
# rules are watching (offline, a low-battery episode).
NEEDING_ATTENTION = """
SELECT device_id FROM alerts
WHERE device_id = ANY(%(ids)s) AND state <> 'resolved' AND planned_at IS NULL
UNION
SELECT device_id FROM device_rule_state
WHERE device_id = ANY(%(ids)s)
  AND (state->>'online' = 'false' OR state->>'battery_alerted' IS NOT NULL)
"""

# Any battery override of any site: a superset of the levels that can open battery_low there
# (a site's overrides may move the defaults around them; resolved_at is above them all).
BATTERY_WATCH_BELOW = """
SELECT coalesce(max(greatest((rule_settings->>'battery_warning_below')::int,
                             (rule_settings->>'battery_high_below')::int,
                             (rule_settings->>'battery_resolved_at')::int)), 0)
FROM sites
"""


async def select_for_rules(
    cur: psycopg.AsyncCursor[Any],
    messages: Sequence[Event | StatusReport],
    battery_watch_below: int,
) -> list[Event | StatusReport]:
    """The messages the rules must see: all but routine heartbeats.

    Heartbeats are nearly all of the traffic and nearly never change anything: a heartbeat
    matters only when its battery is low enough to open an alert, or when its device has
    something on the board or in the rules' watch (one indexed query per batch tells). The
    rest skip the rules; their one effect, "the device spoke", is in devices.last_seen, which
    load_rules folds in. This keeps ingest within a few percent of its speed without rules.
    """
    # One pass: a heartbeat is "routine" unless its battery is low enough to matter.
    routine: list[bool] = []
    routine_devices: set[str] = set()
    for m in messages:
        if type(m) is Event and m.type == HEARTBEAT:
            battery = m.data.get("battery")
            if type(battery) is not int or battery >= battery_watch_below:
                routine.append(True)
                routine_devices.add(m.device_id)
                continue
        routine.append(False)
    if not routine_devices:
        return list(messages)
    await cur.execute(NEEDING_ATTENTION, {"ids": sorted(routine_devices)})
    attention = {row[0] for row in await cur.fetchall()}
    return [
        m
        for m, is_routine in zip(messages, routine, strict=True)
        if not is_routine or m.device_id in attention
    ]


async def evaluate_ticks(
    cur: psycopg.AsyncCursor[Any], device_ids: Sequence[str], now: datetime, catalog: Catalog
) -> AlertOutcome:
    """Run the clock-driven rules (silence, door left unlocked, inactivity, escalation)."""
    outcome = AlertOutcome()
    devices = await load_rules(cur, sorted(device_ids), now, catalog)
    for device_id, rules in devices.items():
        rules.state, changes = evaluate_tick(
            rules.state,
            rules.board,
            rules.settings,
            now,
            catalog=catalog,
            site_tz=rules.site_tz,
            in_maintenance=rules.in_maintenance,
        )
        await apply(cur, device_id, rules, changes, now, outcome)
    await save_states(cur, devices)
    return outcome


async def load_rules(
    cur: psycopg.AsyncCursor[Any], device_ids: Sequence[str], now: datetime, catalog: Catalog
) -> dict[str, DeviceRules]:
    """What the rules need of each active device of ``device_ids``: state, settings, board."""
    await cur.execute(LOAD_DEVICES, {"ids": list(device_ids), "now": now})
    devices: dict[str, DeviceRules] = {}
    for row in await cur.fetchall():
        device_id, kind, created_at, site_id, site_settings, stored, last_seen, timezone = row[:8]
        if kind not in catalog:
            continue
        settings = _site_settings(site_id, orjson.dumps(site_settings or {}))
        state = DeviceState(kind, since=created_at)
        if stored:
            try:
                state = DeviceState.from_record(stored)
            except (ValueError, KeyError, TypeError) as error:
                log.warning("rule state of %s unreadable, starting afresh: %s", device_id, error)
        # Routine heartbeats skip the rules (see select_for_rules), so the state's idea of
        # when the device last spoke can be behind devices.last_seen: take the later.
        if last_seen is not None and (
            state.last_message_at is None or last_seen > state.last_message_at
        ):
            state = replace(state, last_message_at=last_seen)
            # Compare later against the state as loaded, overlay included: taking last_seen
            # in is not a change worth a write (it is re-read on every load anyway).
            stored = state.to_record()
        devices[device_id] = DeviceRules(
            kind, settings, state, stored, site_tz(timezone), in_maintenance=row[8]
        )
    await cur.execute(LOAD_BOARD, (list(devices),))
    for row in await cur.fetchall():
        alert_id, device_id, rule, severity, state, opened_at, count, cleared, escalated = row[:9]
        rules = devices[device_id]
        rules.board[Rule(rule)] = OpenAlert(
            Rule(rule),
            Severity(severity),
            AlertState(state),
            opened_at,
            count,
            cleared,
            escalated,
            row[9],
        )
        rules.alert_ids[Rule(rule)] = alert_id
    return devices


async def apply(
    cur: psycopg.AsyncCursor[Any],
    device_id: str,
    rules: DeviceRules,
    changes: Sequence[AlertChange],
    now: datetime,
    outcome: AlertOutcome,
) -> None:
    """Write each change in order and record it in the alert feed (alert_changes + NOTIFY)."""
    for change in changes:
        alert_id, kind = await _write_change(cur, device_id, rules, change, now)
        if kind == "alert.opened":
            outcome.opened += 1
        outcome.change_ids += await record_changes(cur.connection, [(alert_id, kind)], at=now)
        rules.board = apply_changes(rules.board, [change], now)
        if change.rule not in rules.board:
            rules.alert_ids.pop(change.rule, None)


async def _write_change(
    cur: psycopg.AsyncCursor[Any],
    device_id: str,
    rules: DeviceRules,
    change: AlertChange,
    now: datetime,
) -> tuple[int, str]:
    if isinstance(change, Open):
        await cur.execute(
            OPEN_ALERT,
            {
                "device": device_id,
                "rule": change.rule.value,
                "severity": change.severity.value,
                "now": now,
                **reason_params(change.reason),
            },
        )
        row = await cur.fetchone()
        assert row is not None
        alert_id, inserted = row
        rules.alert_ids[change.rule] = alert_id
        # Another gateway opened it a moment ago: ours counts as a repeat of it.
        return alert_id, "alert.opened" if inserted else "alert.updated"
    alert_id = rules.alert_ids[change.rule]
    params = {"id": alert_id, "now": now, **reason_params(change.reason)}
    if isinstance(change, Repeat):
        await cur.execute(REPEAT_ALERT, params)
    elif isinstance(change, Upgrade):
        await cur.execute(UPGRADE_ALERT, {**params, "severity": change.severity.value})
    elif isinstance(change, Clear):
        if clear_resolves(rules.board[change.rule], change):
            await cur.execute(RESOLVE_ALERT, params)
            return alert_id, "alert.resolved"
        await cur.execute(CLEAR_ALERT, params)
    elif isinstance(change, Escalate):
        await cur.execute(ESCALATE_ALERT, params)
    return alert_id, "alert.updated"


def reason_params(reason: Reason) -> dict[str, Any]:
    """The statements' parameters of a reason: its English text, its code, its arguments."""
    fields = reason.alert_fields()
    return {**fields, "reason_args": Jsonb(fields["reason_args"])}


async def save_states(cur: psycopg.AsyncCursor[Any], devices: dict[str, DeviceRules]) -> None:
    """Write back the rule states that changed."""
    changed: dict[str, dict[str, Any]] = {}
    for device_id, rules in devices.items():
        record = rules.state.to_record()
        if record != rules.stored:
            changed[device_id] = record
            rules.stored = record
    if changed:
        await cur.execute(SAVE_STATES, (orjson.dumps(changed).decode(),))


@lru_cache(maxsize=1024)
def _site_settings(site_id: str, record: bytes) -> SiteRuleSettings:
    """A site's overrides as the rules apply them: every valid one (the API refuses the
    others, but a row may predate a bound). Cached per site and record, so a problem is logged
    once when the record is first seen, not for every device at every tick."""
    settings, problems = SiteRuleSettings.usable_part(orjson.loads(record))
    for problem in problems:
        log.warning("site %s: rule setting left at its default: %s", site_id, problem)
    return settings
