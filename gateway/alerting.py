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
from dataclasses import dataclass, field
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
from gateway.errors import RuleStateConflictError
from gateway.rule_states import RuleStates, Versioned

log = logging.getLogger(__name__)

# in_maintenance: a maintenance window ("in repair") is in force now (migration 0007); read with
# every load, so every gateway sees a window begin and end without a cache to keep in step.
# The rule state comes back only where its version is not the one the gateway holds
# (gateway.rule_states); a site's settings come as text, the key of their parsed cache.
LOAD_DEVICES = """
SELECT d.id, d.kind, d.created_at, s.id, s.rule_settings::text, r.version,
       CASE WHEN r.version IS DISTINCT FROM k.version THEN r.state END,
       d.last_seen, s.timezone,
       EXISTS (SELECT 1 FROM device_maintenance AS m
               WHERE m.device_id = d.id AND m.starts_at <= %(now)s
                 AND %(now)s < least(m.ends_at, m.ended_at)) AS in_maintenance
FROM unnest(%(ids)s::text[], %(versions)s::bigint[]) AS k(id, version)
JOIN devices AS d ON d.id = k.id
JOIN sites AS s ON s.id = d.site_id
LEFT JOIN device_rule_state AS r ON r.device_id = d.id
WHERE d.status = 'active'
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
# Rows go in id order so that two gateways lock them in the same order. A row is written only
# if it is still at the version the evaluation started from ({device id: version}; a device
# that had no row has none there, so a row another transaction inserted meanwhile is not
# overwritten either); the rows written come back with their new versions.
SAVE_STATES = """
INSERT INTO device_rule_state AS r (device_id, state, version, updated_at)
SELECT key, value, nextval('device_rule_state_version'), now()
FROM jsonb_each(%(states)s::jsonb) ORDER BY key
ON CONFLICT (device_id) DO UPDATE
SET state = EXCLUDED.state, version = EXCLUDED.version, updated_at = now()
WHERE r.version = (%(versions)s::jsonb ->> r.device_id)::bigint
RETURNING device_id, version
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
    """Everything the rules need about one device, as loaded, and where evaluation left it.

    ``loaded`` is the state evaluation started from and ``version`` its row's (None: no row).
    """

    kind: str
    settings: SiteRuleSettings
    state: DeviceState
    loaded: DeviceState
    version: int | None
    site_tz: tzinfo = DEFAULT_SITE_TZ  # night hours (door_left_open) are the site's
    in_maintenance: bool = False  # device-health rules silent (devices.rules)
    board: dict[Rule, OpenAlert] = field(default_factory=dict)
    alert_ids: dict[Rule, int] = field(default_factory=dict)


@dataclass(slots=True)
class AlertOutcome:
    """What a run of the rules wrote: the alert change ids in order, how many alerts opened,
    and the rule states read or written, for :meth:`RuleStates.remember` after the commit."""

    change_ids: list[int] = field(default_factory=list)
    opened: int = 0
    states: dict[str, Versioned] = field(default_factory=dict)


async def evaluate_messages(
    cur: psycopg.AsyncCursor[Any],
    messages: Sequence[Event | StatusReport],
    now: datetime,
    catalog: Catalog,
    rule_states: RuleStates,
) -> AlertOutcome:
    """Run the event rules over a batch's new messages (arrival order) and write the outcome.

    Raises :class:`RuleStateConflictError` if another transaction wrote one of the states meanwhile:
    roll back and try again (the states it names are forgotten, so they are read afresh).
    """
    outcome = AlertOutcome()
    device_ids = sorted({m.device_id for m in messages})
    if not device_ids:
        return outcome
    devices = await load_rules(cur, device_ids, now, catalog, rule_states, outcome)
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
    await save_states(cur, devices, rule_states, outcome)
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
    cur: psycopg.AsyncCursor[Any],
    device_ids: Sequence[str],
    now: datetime,
    catalog: Catalog,
    rule_states: RuleStates,
) -> AlertOutcome:
    """Run the clock-driven rules (silence, door left unlocked, inactivity, escalation).

    Raises :class:`RuleStateConflictError` as :func:`evaluate_messages` does."""
    outcome = AlertOutcome()
    devices = await load_rules(cur, sorted(device_ids), now, catalog, rule_states, outcome)
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
    await save_states(cur, devices, rule_states, outcome)
    return outcome


async def load_rules(
    cur: psycopg.AsyncCursor[Any],
    device_ids: Sequence[str],
    now: datetime,
    catalog: Catalog,
    rule_states: RuleStates,
    outcome: AlertOutcome,
) -> dict[str, DeviceRules]:
    """What the rules need of each active device of ``device_ids``: state, settings, board.

    A state comes from ``rule_states`` where it holds the row's version, else from the row
    (into ``outcome.states``, to be remembered once committed)."""
    ids = list(device_ids)
    await cur.execute(LOAD_DEVICES, {"ids": ids, "versions": rule_states.versions(ids), "now": now})
    devices: dict[str, DeviceRules] = {}
    for row in await cur.fetchall():
        device_id, kind, created_at, site_id, site_settings, version, stored = row[:7]
        if kind not in catalog:
            continue
        settings = _site_settings(site_id, site_settings or "{}")
        state = None if version is None else rule_states.get(device_id, version)
        if state is None:
            state = _stored_state(device_id, kind, created_at, stored)
            if version is not None:
                outcome.states[device_id] = Versioned(version, state)
        # Routine heartbeats skip the rules (see select_for_rules), so the state's idea of
        # when the device last spoke can be behind devices.last_seen: take the later. It is
        # part of the state evaluation starts from, so taking it in alone is no change worth
        # a write (every load takes it in again).
        last_seen = row[7]
        if last_seen is not None and (
            state.last_message_at is None or last_seen > state.last_message_at
        ):
            state = state._replace(last_message_at=last_seen)
        devices[device_id] = DeviceRules(
            kind, settings, state, state, version, site_tz(row[8]), in_maintenance=row[9]
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


def _stored_state(
    device_id: str, kind: str, created_at: datetime, stored: dict[str, Any] | None
) -> DeviceState:
    if stored:
        try:
            return DeviceState.from_record(stored)
        except (ValueError, KeyError, TypeError) as error:
            log.warning("rule state of %s unreadable, starting afresh: %s", device_id, error)
    return DeviceState(kind, since=created_at)


async def save_states(
    cur: psycopg.AsyncCursor[Any],
    devices: dict[str, DeviceRules],
    rule_states: RuleStates,
    outcome: AlertOutcome,
) -> None:
    """Write back the rule states that changed, each only if its row is still at the version
    it was loaded at; else forget those states and raise :class:`RuleStateConflictError`."""
    changed: dict[str, dict[str, Any]] = {}
    expected: dict[str, int] = {}
    for device_id, rules in devices.items():
        if rules.state != rules.loaded:
            changed[device_id] = rules.state.record_fields()  # orjson writes the times
            if rules.version is not None:
                expected[device_id] = rules.version
    if not changed:
        return
    await cur.execute(
        SAVE_STATES,
        {"states": orjson.dumps(changed).decode(), "versions": orjson.dumps(expected).decode()},
    )
    for device_id, version in await cur.fetchall():
        rules = devices[device_id]
        outcome.states[device_id] = Versioned(version, rules.state)
        rules.loaded, rules.version = rules.state, version
        del changed[device_id]
    if changed:
        rule_states.forget(changed)
        raise RuleStateConflictError(sorted(changed))


@lru_cache(maxsize=1024)
def _site_settings(site_id: str, record: str) -> SiteRuleSettings:
    """A site's overrides as the rules apply them: every valid one (the API refuses the
    others, but a row may predate a bound). Cached per site and record, so a problem is logged
    once when the record is first seen, not for every device at every tick."""
    settings, problems = SiteRuleSettings.usable_part(orjson.loads(record))
    for problem in problems:
        log.warning("site %s: rule setting left at its default: %s", site_id, problem)
    return settings
