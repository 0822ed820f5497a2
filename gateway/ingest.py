"""One batch: parse every message, store the batch in one transaction, then acknowledge it.

Nothing a device sends can stop this: bad input becomes a dead letter (a value, not an
exception), and a database that went away is retried with backoff while the batch stays
unacknowledged, so the broker keeps it and stops sending more (its Receive Maximum is reached).
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TypeVar

import psycopg
import psycopg_pool

from carewatch.backoff import Backoff
from devices import zigbee2mqtt
from devices.catalog import Catalog
from devices.envelope import Event, Rejected, RejectReason, StatusReport, device_id_of, parse
from devices.zigbee2mqtt_bridges import parse_announcement
from gateway import discovery, lanes, store
from gateway.device_state import DeviceUpdate, fold_batch, remember, worth_writing
from gateway.errors import RuleStateConflictError, StoreError
from gateway.metrics import GatewayMetrics
from gateway.registry import DeviceRegistry
from gateway.rule_states import RuleStates
from gateway.transport import BrokerSession, Message

log = logging.getLogger(__name__)

_T = TypeVar("_T")

# A batch whose rule states another transaction wrote meanwhile is tried again at once this
# often, then with the backoff of a database error.
IMMEDIATE_RETRIES_ON_CONFLICT = 3

# A batch is split into lanes (gateway.lanes) from this many messages: below, the time its
# one transaction holds shared rows is short, and parts would only add commits (measured: the
# alert latency of `bench alerts`, at 2,000 events/s in batches of about 100, rose by some 10 %
# with every batch split).
SPLIT_FROM_MESSAGES = 500


@dataclass(frozen=True, slots=True)
class IngestOptions:
    """The ingest loop's knobs, from Settings."""

    max_clock_skew_s: float
    retry_min_s: float
    retry_max_s: float
    last_seen_resolution_s: float
    lanes: int = 1  # see gateway.lanes


@dataclass(slots=True)
class ParsedBatch:
    """A batch of MQTT messages parsed: what to store, what to dead-letter, who was unknown."""

    events: list[Event]
    statuses: list[StatusReport]
    messages: list[Event | StatusReport]  # both, in arrival order (the rules need it)
    dead_letters: list[store.DeadLetter]
    origin: dict[tuple[str, str], tuple[str, bytes]]  # (device, event id) -> (topic, payload)
    unknown_ids: set[str]  # devices the registry did not know
    unknown_zigbee_names: set[str] = field(default_factory=set)  # zigbee2mqtt names, likewise
    ignored: int = 0  # zigbee2mqtt's own bridge messages: acknowledged, not stored
    # The device lists bridges announced on <base>/bridge/devices (+#13).
    announcements: list[discovery.BridgeAnnouncement] = field(default_factory=list)


def classify(
    batch: Sequence[Message], registry: DeviceRegistry, catalog: Catalog, max_clock_skew_s: float
) -> ParsedBatch:
    """Pure: turn a batch of messages into events, status reports and dead letters."""
    events: list[Event] = []
    statuses: list[StatusReport] = []
    accepted: list[Event | StatusReport] = []
    dead: list[store.DeadLetter] = []
    origin: dict[tuple[str, str], tuple[str, bytes]] = {}
    unknown: set[str] = set()
    parsed = ParsedBatch(events, statuses, accepted, dead, origin, unknown)
    devices = registry.devices
    for m in batch:
        result = parse(
            m.topic,
            m.payload,
            m.received_at,
            devices,
            catalog=catalog,
            max_clock_skew_s=max_clock_skew_s,
        )
        if isinstance(result, Event):
            events.append(result)
            accepted.append(result)
            origin[(result.device_id, result.event_id)] = (m.topic, m.payload)
        elif isinstance(result, StatusReport):
            # A retained status replayed on subscribe says how the device was, not how it is.
            if not m.retained:
                statuses.append(result)
                accepted.append(result)
        elif (
            result.reason is RejectReason.BAD_TOPIC
            and (base := registry.bridges.base_of(m.topic)) is not None
        ):
            # Off the hot path: only a message the envelope parser refused gets here.
            _classify_zigbee2mqtt(m, base, registry, catalog, parsed)
        else:
            if result.reason is RejectReason.UNKNOWN_DEVICE:
                device_id = device_id_of(m.topic)
                if device_id is not None:
                    unknown.add(device_id)
            dead.append(
                store.DeadLetter(m.received_at, m.topic, m.payload, result.reason, result.detail)
            )
    return parsed


def _classify_zigbee2mqtt(
    m: Message, base: str, registry: DeviceRegistry, catalog: Catalog, parsed: ParsedBatch
) -> None:
    """One message under a bridge's base topic: its events, status, device list, ignore or
    dead letter into ``parsed``."""
    if registry.bridges.is_announcement(m.topic):
        _classify_announcement(m, registry.bridges, parsed)
        return
    result = zigbee2mqtt.parse(
        m.topic, m.payload, m.received_at, registry.zigbee, catalog=catalog, base_topic=base
    )
    if isinstance(result, tuple):
        parsed.events.extend(result)
        parsed.messages.extend(result)
        for event in result:
            parsed.origin[(event.device_id, event.event_id)] = (m.topic, m.payload)
    elif isinstance(result, StatusReport):
        # zigbee2mqtt publishes availability retained: a replay on subscribe is old news.
        if not m.retained:
            parsed.statuses.append(result)
            parsed.messages.append(result)
    elif isinstance(result, Rejected):
        if result.reason is RejectReason.UNKNOWN_DEVICE:
            name = zigbee2mqtt.zigbee_name_of(m.topic, base)
            if name is not None:
                parsed.unknown_zigbee_names.add(name)
        parsed.dead_letters.append(
            store.DeadLetter(m.received_at, m.topic, m.payload, result.reason, result.detail)
        )
    else:
        parsed.ignored += 1


def _classify_announcement(m: Message, bridges: discovery.Bridges, parsed: ParsedBatch) -> None:
    """``<base>/bridge/devices``: the device list of the one bridge on that base, or ignored.

    Retained or not, it is the bridge's current list: the broker replays it on subscribe, and
    that replay is how a gateway learns the list of a bridge that announced before it started.
    """
    bridge = bridges.announcing_bridge(m.topic)
    if bridge is None:
        # The shared default base (or one no bridge has any more): whose list is unknown.
        parsed.ignored += 1
        return
    announcement = parse_announcement(m.payload)
    if isinstance(announcement, Rejected):
        parsed.dead_letters.append(
            store.DeadLetter(
                m.received_at, m.topic, m.payload, announcement.reason, announcement.detail
            )
        )
        return
    parsed.announcements.append(discovery.BridgeAnnouncement(bridge, m.received_at, announcement))


@dataclass(frozen=True, slots=True)
class _Part:
    """One lane's part of a parsed batch (gateway.lanes)."""

    messages: list[Event | StatusReport]
    updates: dict[str, DeviceUpdate]
    dead_letters: list[store.DeadLetter]
    origin: dict[tuple[str, str], tuple[str, bytes]]


def _device_of(message: Event | StatusReport) -> str:
    return message.device_id


def _merged(outcomes: list[store.BatchOutcome]) -> store.BatchOutcome:
    """The outcome of a batch from its parts'."""
    merged = store.BatchOutcome()
    for outcome in outcomes:
        merged.stored_by_kind.update(outcome.stored_by_kind)
        merged.duplicates += outcome.duplicates
        merged.dead_letters += outcome.dead_letters
        merged.alerts.change_ids += outcome.alerts.change_ids
        merged.alerts.opened += outcome.alerts.opened
    return merged


class Ingestor:
    """Turns batches of MQTT messages into stored events, alerts and acknowledgements."""

    def __init__(
        self,
        pool: psycopg_pool.AsyncConnectionPool[psycopg.AsyncConnection[object]],
        registry: DeviceRegistry,
        catalog: Catalog,
        metrics: GatewayMetrics,
        rule_states: RuleStates,
        options: IngestOptions,
    ) -> None:
        self.pool = pool
        self.registry = registry
        self.catalog = catalog
        self.metrics = metrics
        self.rule_states = rule_states  # shared with the watchdog's ticks
        self.options = options
        self.lane_order = lanes.LaneOrder(options.lanes)
        # What this gateway last wrote to each device row (see gateway.device_state).
        self._written: dict[str, DeviceUpdate] = {}

    async def handle(
        self, session: BrokerSession, batch: list[Message], *, deadline: float | None = None
    ) -> bool:
        """Store and acknowledge one batch. False if it was abandoned (it will be redelivered)."""
        started = time.perf_counter()
        outcome = await self.store_batch(session, batch, deadline=deadline)
        return self.acknowledge(session, batch, outcome, started)

    async def store_batch(
        self, session: BrokerSession, batch: list[Message], *, deadline: float | None = None
    ) -> store.BatchOutcome | None:
        """Parse and commit one batch, retrying while the database is away.

        None if the broker session ended meanwhile (the batch will be redelivered on the next
        one). ``deadline`` (monotonic seconds) bounds the retries while draining; past it the
        batch stays unacknowledged and StoreError is raised.
        """
        self.metrics.messages_received.inc(len(batch))
        return await self._store(session, batch, deadline)

    def acknowledge(
        self,
        session: BrokerSession,
        batch: list[Message],
        outcome: store.BatchOutcome | None,
        started: float,
    ) -> bool:
        """After commit: PUBACK the batch and count it. Call in the order batches arrived."""
        if outcome is None:
            return False
        session.ack(batch)
        self.metrics.held_messages.set(session.pending)
        self._observe(batch, outcome, started)
        return True

    async def _store(
        self, session: BrokerSession, batch: list[Message], deadline: float | None
    ) -> store.BatchOutcome | None:
        # Before anything is awaited: this batch's place in every lane (gateway.lanes).
        turns = self.lane_order.reserve()
        try:
            parsed = await self._retrying(session, batch, deadline, lambda c: self._parse(c, batch))
            if parsed is None:
                return None
            folded = fold_batch(parsed.events, parsed.statuses)
            updates = worth_writing(folded, self._written, self.options.last_seen_resolution_s)
            # A small batch (the usual, at a few thousand events a second) is one part that
            # takes every lane's turn: split, its commits would only add up.
            split = len(parsed.messages) >= SPLIT_FROM_MESSAGES
            count = self.lane_order.lanes if split else 1
            parts = lanes.split(parsed.messages, _device_of, count)
            # The dead letters (no device to speak of) go with the first lane.
            results = await asyncio.gather(
                *(
                    self._store_part(
                        session,
                        batch,
                        deadline,
                        [turns[lane]] if split else turns,
                        _Part(
                            part,
                            {
                                m.device_id: updates[m.device_id]
                                for m in part
                                if m.device_id in updates
                            },
                            parsed.dead_letters if lane == 0 else [],
                            parsed.origin,
                        ),
                    )
                    for lane, part in enumerate(parts)
                ),
                return_exceptions=True,
            )
        finally:
            for turn in turns:
                turn.finish()
        for result in results:
            if isinstance(result, BaseException):
                raise result
        if any(result is None for result in results):
            return None  # the session ended: the batch is redelivered, stored parts absorb it
        return _merged([r for r in results if isinstance(r, store.BatchOutcome)])

    async def _parse(
        self, conn: psycopg.AsyncConnection[object], batch: list[Message]
    ) -> ParsedBatch:
        parsed = classify(batch, self.registry, self.catalog, self.options.max_clock_skew_s)
        # A device onboarded since the last registry refresh: ask, then look again.
        learnt = bool(parsed.unknown_ids) and await self.registry.resolve(conn, parsed.unknown_ids)
        if parsed.unknown_zigbee_names and await self.registry.resolve_zigbee(
            conn, parsed.unknown_zigbee_names
        ):
            learnt = True
        if learnt:
            parsed = classify(batch, self.registry, self.catalog, self.options.max_clock_skew_s)
        if parsed.announcements:
            # Their own transaction, before the batch's: storing a list again on a retry
            # replaces it with itself.
            await discovery.store_announcements(conn, parsed.announcements)
        return parsed

    async def _store_part(
        self,
        session: BrokerSession,
        batch: list[Message],
        deadline: float | None,
        turns: list[lanes.Turn],
        part: _Part,
    ) -> store.BatchOutcome | None:
        """A part of a batch, once the parts of the batch before in its lanes (one, or all
        for a batch not split) are done."""
        try:
            if not part.messages and not part.dead_letters:
                return store.BatchOutcome()
            for turn in turns:
                await turn.wait()
            return await self._retrying(
                session, batch, deadline, lambda conn: self._write_part(conn, part)
            )
        finally:
            for turn in turns:
                turn.finish()

    async def _write_part(
        self, conn: psycopg.AsyncConnection[object], part: _Part
    ) -> store.BatchOutcome:
        try:
            outcome = await store.write_batch(
                conn,
                part.messages,
                part.updates,
                part.dead_letters,
                self.catalog,
                self.registry.battery_watch_below,
                self.rule_states,
            )
            remember(self._written, part.updates)
            return outcome
        except psycopg.errors.DataError as error:
            # Validation let through something PostgreSQL refuses; find the row.
            log.warning("batch refused (%s); storing it row by row", error)
            # The memory of written device rows may now be off: start afresh.
            self._written.clear()
            return await store.write_batch_row_by_row(
                conn, part.messages, part.dead_letters, part.origin, self.catalog, self.rule_states
            )

    async def _retrying(
        self,
        session: BrokerSession,
        batch: list[Message],
        deadline: float | None,
        attempt: Callable[[psycopg.AsyncConnection[object]], Awaitable[_T]],
    ) -> _T | None:
        """``attempt`` on a pooled connection until it succeeds, retried as the error asks.

        None if the broker session ended meanwhile (the batch will be redelivered). Past
        ``deadline`` (monotonic seconds) StoreError is raised instead of waiting again.
        """
        backoff = Backoff(self.options.retry_min_s, self.options.retry_max_s)
        conflicts = 0
        while True:
            self.metrics.held_messages.set(len(batch) + session.pending)
            try:
                async with self.pool.connection() as conn:
                    return await attempt(conn)
            except RuleStateConflictError as conflict:
                # Another transaction wrote a state this batch's rules started from: again at
                # once, from fresh states (the conflicting ones were forgotten); with backoff
                # only if that keeps happening.
                self.metrics.rule_state_conflicts.labels("ingest").inc()
                conflicts += 1
                if conflicts <= IMMEDIATE_RETRIES_ON_CONFLICT:
                    continue
                log.warning("batch of %s evaluated again: %s", len(batch), conflict)
            except (psycopg.OperationalError, psycopg_pool.PoolTimeout) as error:
                self.metrics.store_errors.labels(type(error).__name__).inc()
                log.warning("database unavailable (%s); batch of %s held", error, len(batch))
            except psycopg.Error as error:
                # Not a passing outage (a schema or permission problem, say). Dropping the batch
                # would lose accepted data, so keep retrying, loudly.
                self.metrics.store_errors.labels(type(error).__name__).inc()
                log.error("cannot store batch of %s: %r", len(batch), error)
            except Exception as error:  # a bug of ours: keep the service up and the batch held
                self.metrics.store_errors.labels(type(error).__name__).inc()
                log.exception("unexpected error storing a batch of %s; retrying", len(batch))
            if session.is_closed:
                log.info("broker session ended; %s messages will be redelivered", len(batch))
                return None
            delay = backoff.next()
            if deadline is not None and time.monotonic() + delay > deadline:
                raise StoreError(f"could not store {len(batch)} messages before the deadline")
            await asyncio.sleep(delay)

    def _observe(self, batch: list[Message], outcome: store.BatchOutcome, started: float) -> None:
        m = self.metrics
        committed_at = datetime.now(UTC)
        m.batch_seconds.observe(time.perf_counter() - started)
        m.batch_size.observe(len(batch))
        # Messages of one network read share a received_at (and arrive together): one
        # observation per run of equal values.
        for received_at, run in itertools.groupby(msg.received_at for msg in batch):
            m.delay_seconds.observe(
                (committed_at - received_at).total_seconds(), sum(1 for _ in run)
            )
        for kind, count in outcome.stored_by_kind.items():
            m.events_stored.labels(kind).inc(count)
        if outcome.duplicates:
            m.events_duplicate.inc(outcome.duplicates)
        for reason, count in collections.Counter(d.reason for d in outcome.dead_letters).items():
            m.dead_letters.labels(reason.value).inc(count)
