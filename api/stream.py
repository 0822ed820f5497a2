"""The live alert stream: one LISTEN per process, fanned out to Server-Sent Events subscribers.

::

    PostgreSQL ──NOTIFY carewatch_alerts──► AlertHub._listen (one autocommit connection)
                                                 │ wakes
                                                 ▼
    alert_changes ◄── one query per wake ── AlertHub._fan_out ──► Subscriber queues (bounded)
                                                                      │
                                                   event_stream() ◄───┘  one per browser

A notification only wakes the fan-out task; it then reads every change above the last id it has
seen (however many notifications arrived meanwhile, one query), and offers each change to the
subscribers of its organisation and sites. A subscriber whose queue is full is dropped rather
than holding up the others: its browser reconnects with Last-Event-ID and gets what it missed
from the database. Change ids are taken when a transaction inserts, not when it commits, so a
change can commit after a higher one was delivered; ids skipped over are remembered for a while
and asked for again on the next wakes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Final

import psycopg
import psycopg_pool

from api import alert_queries
from api.alert_queries import AlertChange, Audience
from api.auth import UserContext
from api.pool import Pool
from carewatch.backoff import Backoff
from carewatch.db import alert_feed

log = logging.getLogger(__name__)

# The channel is the one the kernel's alert feed writer announces changes on.
_LISTEN: Final = f"LISTEN {alert_feed.CHANNEL}"
# Changes read per query; a longer backlog takes several.
_FETCH_BATCH: Final = 1000
# How long an id skipped over is waited for: a transaction that inserted it and has not
# committed yet. Ids of rolled-back transactions never appear; they are forgotten after this.
_MISSING_WAIT_S: Final = 30.0
# Beyond this many skipped ids (a mass rollback), stop tracking them rather than grow a huge
# ANY(...) list; at worst a late commit among them is seen only on a browser's resume.
_MISSING_MAX: Final = 10_000
KEEPALIVE: Final = b": keepalive\n\n"


def encode_event(change: AlertChange) -> bytes:
    """One SSE message: the change id (for Last-Event-ID), its kind, the alert as JSON."""
    return (
        f"id: {change.change_id}\nevent: {change.change}\n"
        f"data: {change.alert.model_dump_json()}\n\n"
    ).encode()


class Subscriber:
    """One open stream: whose it is, which audience it asked for (None: all), and the
    messages waiting to be sent to it."""

    __slots__ = ("audience", "dropped", "queue", "user")

    def __init__(self, user: UserContext, queue_max: int, audience: Audience | None = None) -> None:
        self.user = user
        self.audience = audience
        # (change id, encoded message); None: dropped for falling behind, end the stream.
        self.queue: asyncio.Queue[tuple[int, bytes] | None] = asyncio.Queue(queue_max + 1)
        self.dropped = False

    def wants(self, change: AlertChange) -> bool:
        """The same rule as the queries' scope: own organisation, and own sites if limited;
        and, if the stream asked for an audience, the alert is for it."""
        return (
            change.org_id == self.user.org_id
            and (self.user.site_ids is None or change.site_id in self.user.site_ids)
            and for_audience(change, self.audience)
        )

    def offer(self, change_id: int, message: bytes) -> None:
        """Queue the message, or drop the subscriber (ending its stream) if it fell behind."""
        if self.dropped:
            return
        # One slot is kept free for the end-of-stream marker.
        if self.queue.qsize() >= self.queue.maxsize - 1:
            self.dropped = True
            while not self.queue.empty():
                self.queue.get_nowait()
            self.queue.put_nowait(None)
            log.warning("SSE subscriber %s fell behind; disconnected", self.user.username)
            return
        self.queue.put_nowait((change_id, message))


def for_audience(change: AlertChange, audience: Audience | None) -> bool:
    """Whether the changed alert is for ``audience`` (None: anyone), as its ``audiences`` say:
    the same answer as the list's ``audience=`` (tests/integration/test_alert_audiences.py)."""
    return audience is None or audience in change.alert.audiences


class AlertHub:
    """The process's one LISTEN connection and its subscribers; ``run()`` in the lifespan."""

    def __init__(
        self,
        pool: Pool,
        database_url: str,
        *,
        queue_max: int,
        reconnect_min_s: float,
        reconnect_max_s: float,
    ) -> None:
        self._pool = pool
        self._database_url = database_url
        self._queue_max = queue_max
        self._reconnect_min_s = reconnect_min_s
        self._reconnect_max_s = reconnect_max_s
        self._subscribers: set[Subscriber] = set()
        self._wake = asyncio.Event()
        self._last_id: int | None = None
        self._missing: dict[int, float] = {}  # change id -> monotonic time to give up on it
        # Set while LISTEN is active (tests wait for it; a readiness probe could).
        self.listening = asyncio.Event()

    @property
    def subscriber_count(self) -> int:
        """How many streams are open now."""
        return len(self._subscribers)

    def subscribe(self, user: UserContext, audience: Audience | None = None) -> Subscriber:
        """A new subscriber for ``user``'s stream (of ``audience``'s alerts, if given); changes
        are offered to it from now on."""
        subscriber = Subscriber(user, self._queue_max, audience)
        self._subscribers.add(subscriber)
        return subscriber

    def unsubscribe(self, subscriber: Subscriber) -> None:
        """Stop offering changes to ``subscriber`` (its stream ended)."""
        self._subscribers.discard(subscriber)

    async def prime(self, timeout_s: float) -> None:
        """Start from the latest change now, before the app serves: a stream opened from the
        first request on then gets every change committed after it subscribed, even if LISTEN
        connects later (its first wake reads everything since). If the database does not
        answer in time, the fan-out starts from the latest change once it does."""
        try:
            async with asyncio.timeout(timeout_s):
                self._last_id = await alert_queries.latest_change_id(self._pool)
        except (TimeoutError, psycopg.Error, psycopg_pool.PoolTimeout) as error:
            log.warning("alert changes not readable at start (%r); continuing", error)

    async def run(self) -> None:
        """Listen and fan out until cancelled."""
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(self._listen(), name="alert-hub-listen")
            tasks.create_task(self._fan_out(), name="alert-hub-fan-out")

    async def _listen(self) -> None:
        backoff = Backoff(self._reconnect_min_s, self._reconnect_max_s)
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(
                    self._database_url, autocommit=True
                ) as conn:
                    await conn.execute(_LISTEN)
                    backoff.reset()
                    self.listening.set()
                    # Whatever committed while we were not listening is read now.
                    self._wake.set()
                    async for _notify in conn.notifies():
                        self._wake.set()
            except psycopg.OperationalError as error:
                self.listening.clear()
                delay = backoff.next()
                log.warning("alert LISTEN connection lost (%s); again in %.1f s", error, delay)
                await asyncio.sleep(delay)

    async def _fan_out(self) -> None:
        backoff = Backoff(self._reconnect_min_s, self._reconnect_max_s)
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                await self._deliver_new()
            except (psycopg.Error, psycopg_pool.PoolTimeout) as error:
                delay = backoff.next()
                log.warning("reading alert changes failed (%s); again in %.1f s", error, delay)
                self._wake.set()
                await asyncio.sleep(delay)
            else:
                backoff.reset()

    async def _deliver_new(self) -> None:
        if self._last_id is None:
            self._last_id = await alert_queries.latest_change_id(self._pool)
        while True:
            now = time.monotonic()
            self._missing = {i: until for i, until in self._missing.items() if until > now}
            changes = await alert_queries.changes_for_fanout(
                self._pool, self._last_id, sorted(self._missing), limit=_FETCH_BATCH
            )
            for change in changes:
                change_id = change.change_id
                if change_id > self._last_id:
                    skipped = change_id - self._last_id - 1
                    if skipped > 0 and len(self._missing) + skipped <= _MISSING_MAX:
                        for missing_id in range(self._last_id + 1, change_id):
                            self._missing[missing_id] = now + _MISSING_WAIT_S
                    self._last_id = change_id
                else:
                    self._missing.pop(change_id, None)
                self._publish(change)
            if len(changes) < _FETCH_BATCH:
                return

    def _publish(self, change: AlertChange) -> None:
        message = encode_event(change)
        for subscriber in list(self._subscribers):
            if subscriber.wants(change):
                subscriber.offer(change.change_id, message)


async def event_stream(
    hub: AlertHub,
    pool: Pool,
    user: UserContext,
    *,
    last_event_id: int | None,
    heartbeat_s: float,
    retry_ms: int,
    still_authorized: Callable[[], Awaitable[bool]] | None = None,
    recheck_s: float = 60.0,
    audience: Audience | None = None,
) -> AsyncIterator[bytes]:
    """The body of one ``GET /api/v1/alerts/stream``: the missed changes, then live ones;
    with ``audience``, only the changes of alerts for it.

    Subscribes before reading the backlog, so nothing committed in between is lost; what
    arrives live and was already in the backlog is skipped. Every ``recheck_s`` it asks
    ``still_authorized()`` and ends the stream if the answer is no (the browser's EventSource
    then reconnects, and is refused or gets its new scope).
    """
    subscriber = hub.subscribe(user, audience)
    try:
        # How long the browser's EventSource waits before it reconnects.
        yield f"retry: {retry_ms}\n\n".encode()
        already_sent: set[int] = set()
        if last_event_id is not None:
            after = last_event_id
            while True:
                backlog = await alert_queries.changes_after(pool, user, after, limit=_FETCH_BATCH)
                for change in backlog:
                    if not for_audience(change, audience):
                        continue
                    already_sent.add(change.change_id)
                    yield encode_event(change)
                if len(backlog) < _FETCH_BATCH:
                    break
                after = backlog[-1].change_id
        recheck_at = time.monotonic() + recheck_s
        while True:
            if still_authorized is not None and time.monotonic() >= recheck_at:
                if not await still_authorized():
                    return
                recheck_at = time.monotonic() + recheck_s
            try:
                async with asyncio.timeout(min(heartbeat_s, recheck_s)):
                    item = await subscriber.queue.get()
            except TimeoutError:
                yield KEEPALIVE
                continue
            if item is None:
                return
            change_id, message = item
            if change_id in already_sent:
                already_sent.discard(change_id)
                continue
            yield message
    finally:
        hub.unsubscribe(subscriber)
