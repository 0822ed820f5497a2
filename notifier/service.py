"""The notifier process: its loops in one TaskGroup, ended cleanly by SIGTERM.

Loops: ``listen`` (LISTEN on the alert and escalation channels, reconnecting with backoff;
each NOTIFY wakes the enqueuer with the row's id), ``enqueue`` (sources become deliveries,
on a wake-up or every ``notifier_poll_s``: the catch-up after a missed NOTIFY), ``deliver``
(claim due deliveries, POST each signed body, record the outcome; up to
``webhook_concurrency`` at once). Several notifiers may run: enqueueing is serialised by the
cursor's row lock and claims skip what another notifier holds (:mod:`notifier.outbox`).
With a VAPID key, ``push`` sends Web Push to caregivers' phones (:mod:`notifier.push`).

Nothing a receiver does (an error, a timeout, a redirect, a closed port) and no database
outage ends the process: each is logged, counted and retried.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import signal
import time
from typing import Any, Final

import httpx
import psycopg
import psycopg_pool
from prometheus_client import start_http_server
from psycopg import sql

from carewatch.backoff import Backoff
from carewatch.settings import Settings
from carewatch.vapid import VapidKeyError
from notifier import outbox, signing
from notifier.metrics import NotifierMetrics
from notifier.outbox import Claimed, Source
from notifier.push import PushSender
from notifier.retry import RetryPolicy

log = logging.getLogger(__name__)

USER_AGENT: Final = "carewatch-notifier/1"
# A lease outlives the attempt's timeout by this much before another notifier may take it.
LEASE_MARGIN_S: Final = 30.0
# How long a loop waits for a pooled connection before it gives up this pass.
POOL_WAIT_S: Final = 2.0

Pool = psycopg_pool.AsyncConnectionPool[psycopg.AsyncConnection[Any]]


def attempt_headers(delivery: Claimed, *, now_s: int) -> dict[str, str]:
    """The headers of one attempt: the signature over this attempt's time, event, delivery id."""
    return {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        signing.HEADER: signing.sign(delivery.secret, delivery.body, now_s),
        "Carewatch-Event": delivery.event,
        "Carewatch-Delivery": str(delivery.id),
    }


class Notifier:
    """Outgoing webhooks: LISTEN, enqueue and deliver, until :attr:`stop` is set."""

    def __init__(self, settings: Settings, *, rng: random.Random | None = None) -> None:
        self.settings = settings
        self.metrics = NotifierMetrics()
        self.stop = asyncio.Event()
        self.policy = RetryPolicy(
            max_attempts=settings.webhook_max_attempts,
            base_s=settings.webhook_retry_base_s,
            cap_s=settings.webhook_retry_max_s,
        )
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not security
        self.pool: Pool = psycopg_pool.AsyncConnectionPool(
            settings.database_url,
            min_size=1,
            max_size=4,  # enqueue, claim, a few outcomes; attempts hold none while they wait
            open=False,
            name="notifier",
            reconnect_timeout=settings.db_reconnect_window_s,
            # A loop waits this long for a connection, then tries again on its next pass: each
            # new request renews the pool's reconnect attempt (measured: with the default 30 s,
            # delivery resumed 25 s after the database was back; with this, within seconds).
            timeout=POOL_WAIT_S,
            # Idle connections are dead after a database restart: checked before use, so the
            # first pass after an outage does not fail on one.
            check=psycopg_pool.AsyncConnectionPool.check_connection,
        )
        self._notified: dict[Source, set[int]] = {source: set() for source in outbox.SOURCES}
        # Web Push (+#12) only with a VAPID key and subject; a bad key stops the start.
        self.push: PushSender | None = None
        if settings.vapid_private_key and settings.vapid_subject:
            self.push = PushSender(
                settings, self.pool, self.policy, self.metrics.registry, self._rng
            )
        self._enqueue_wake = asyncio.Event()
        self._deliver_wake = asyncio.Event()

    async def run(self) -> None:
        """Run every loop until :attr:`stop` is set."""
        await self.pool.open(wait=False)
        timeout = httpx.Timeout(self.settings.webhook_timeout_s)
        try:
            # No redirects: a receiver that moved is a failed attempt its admin will see in the
            # delivery log, not a signed body sent somewhere nobody configured.
            async with (
                httpx.AsyncClient(timeout=timeout, follow_redirects=False) as client,
                asyncio.TaskGroup() as tasks,
            ):
                loops = [
                    tasks.create_task(self._listen_loop(), name="listen"),
                    tasks.create_task(self._enqueue_loop(), name="enqueue"),
                    tasks.create_task(self._deliver_loop(client), name="deliver"),
                ]
                if self.push is not None:
                    loops.append(tasks.create_task(self.push.run(client), name="push"))
                await self.stop.wait()
                for task in loops:
                    task.cancel()
        finally:
            await self.pool.close()
        log.info("notifier stopped")

    # -- listen ---------------------------------------------------------------------------------

    async def _listen_loop(self) -> None:
        backoff = Backoff(self.settings.reconnect_min_s, self.settings.reconnect_max_s)
        while True:
            try:
                await self._listen(backoff)
            except psycopg.Error as error:
                self.metrics.database_connected.set(0)
                delay = backoff.next()
                log.warning("listening failed (%s); reconnecting in %.1f s", error, delay)
                await asyncio.sleep(delay)

    async def _listen(self, backoff: Backoff) -> None:
        # TCP keepalives: a connection that died without a word (a network cut) is noticed in
        # about a minute; until then the poll's catch-up delivers without the NOTIFYs.
        async with await psycopg.AsyncConnection.connect(
            self.settings.database_url,
            autocommit=True,
            keepalives=1,
            keepalives_idle=30,
            keepalives_interval=10,
            keepalives_count=3,
        ) as conn:
            for channel in outbox.CHANNELS:
                await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
            backoff.reset()
            self.metrics.database_connected.set(1)
            log.info("listening on %s", ", ".join(outbox.CHANNELS))
            # Whatever happened while nobody listened: the catch-up reads it now.
            self._enqueue_wake.set()
            async for notify in conn.notifies():
                source = outbox.CHANNELS.get(notify.channel)
                if source is not None and notify.payload.isdigit():
                    self._notified[source].add(int(notify.payload))
                    self._enqueue_wake.set()

    # -- enqueue --------------------------------------------------------------------------------

    async def _enqueue_loop(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._enqueue_wake.wait(), self.settings.notifier_poll_s)
            self._enqueue_wake.clear()
            for source in outbox.SOURCES:
                notified, self._notified[source] = self._notified[source], set()
                try:
                    await self._enqueue(source, notified)
                except (psycopg.Error, psycopg_pool.PoolTimeout) as error:
                    # The ids are kept for the next pass; the cursor covers everything else.
                    self._notified[source] |= notified
                    log.warning("enqueueing from %s failed: %s", source, error)
            await self._refresh_queue_metrics()

    async def _enqueue(self, source: Source, notified: set[int]) -> None:
        more = True
        while more:
            async with self.pool.connection() as conn:
                enqueued = await outbox.enqueue(
                    conn, source, notified, pushes=self.push is not None
                )
            notified = set()
            more = enqueued.more
            for delivery_id, event in enqueued.deliveries:
                self.metrics.enqueued.labels(event).inc()
                log.debug("enqueued delivery %s (%s)", delivery_id, event)
            if enqueued.deliveries:
                self._deliver_wake.set()
            if enqueued.pushes and self.push is not None:
                self.push.wake.set()

    async def _refresh_queue_metrics(self) -> None:
        try:
            async with self.pool.connection() as conn:
                depth, oldest_s, dead = await outbox.queue_state(conn)
        except (psycopg.Error, psycopg_pool.PoolTimeout) as error:
            log.debug("queue metrics not refreshed: %s", error)
            return
        self.metrics.queue_depth.set(depth)
        self.metrics.oldest_pending.set(oldest_s)
        self.metrics.dead.set(dead)

    # -- deliver --------------------------------------------------------------------------------

    async def _deliver_loop(self, client: httpx.AsyncClient) -> None:
        in_flight: set[asyncio.Task[None]] = set()
        lease_s = self.settings.webhook_timeout_s + LEASE_MARGIN_S
        try:
            while True:
                # Cleared before the claim: a wake-up during it is not lost.
                self._deliver_wake.clear()
                free = self.settings.webhook_concurrency - len(in_flight)
                claimed: list[Claimed] = []
                if free > 0:
                    try:
                        async with self.pool.connection() as conn:
                            claimed = await outbox.claim(conn, free, lease_s=lease_s)
                    except (psycopg.Error, psycopg_pool.PoolTimeout) as error:
                        log.warning("claiming deliveries failed: %s", error)
                for delivery in claimed:
                    task = asyncio.create_task(
                        self._attempt(client, delivery), name=f"delivery-{delivery.id}"
                    )
                    in_flight.add(task)
                    task.add_done_callback(in_flight.discard)
                if claimed and len(claimed) == free:
                    continue  # more may be due right now
                wake = asyncio.create_task(self._deliver_wake.wait())
                await asyncio.wait(
                    {wake, *in_flight},
                    timeout=self.settings.notifier_poll_s,
                    return_when=asyncio.FIRST_COMPLETED,
                )
                wake.cancel()
        finally:
            # Stopped mid-attempt: the leases run out and another notifier (or the next start)
            # tries those deliveries again.
            for task in in_flight:
                task.cancel()
            await asyncio.gather(*in_flight, return_exceptions=True)

    async def _attempt(self, client: httpx.AsyncClient, delivery: Claimed) -> None:
        """One POST and its outcome; never raises (the lease covers a lost outcome)."""
        status: int | None = None
        try:
            headers = attempt_headers(delivery, now_s=int(time.time()))
            async with client.stream(
                "POST", delivery.url, content=delivery.body, headers=headers
            ) as response:
                status = response.status_code  # the body is not read: nobody needs it
            error = "" if response.is_success else f"HTTP {status}"
        except httpx.HTTPError as failure:
            error = (
                f"{type(failure).__name__}: {failure}" if str(failure) else type(failure).__name__
            )
        # Whatever a receiver's URL or answer raises must not end the loop (nor this task).
        except Exception as failure:
            log.exception("delivery %s: unexpected failure", delivery.id)
            error = f"{type(failure).__name__}: {failure}"
        try:
            await self._record(delivery, status, error)
        except (psycopg.Error, psycopg_pool.PoolTimeout) as failure:
            log.warning(
                "delivery %s: outcome not recorded (%s); tried again after its lease",
                delivery.id,
                failure,
            )

    async def _record(self, delivery: Claimed, status: int | None, error: str) -> None:
        async with self.pool.connection() as conn:
            if not error:
                assert status is not None
                waited_s = await outbox.record_delivered(conn, delivery, status)
                self.metrics.deliveries.labels("delivered").inc()
                if waited_s is not None:
                    self.metrics.delivery_seconds.observe(waited_s)
                log.info(
                    "delivery %s (%s) to webhook %s: delivered, attempt %s",
                    delivery.id,
                    delivery.event,
                    delivery.webhook_id,
                    delivery.attempts,
                )
                return
            wait_s = self.policy.wait_s(delivery.attempts, self._rng)
            await outbox.record_failed(conn, delivery, status=status, error=error, wait_s=wait_s)
        if wait_s is None:
            self.metrics.deliveries.labels("dead").inc()
            log.warning(
                "delivery %s (%s) to webhook %s: dead after %s attempts (%s)",
                delivery.id,
                delivery.event,
                delivery.webhook_id,
                delivery.attempts,
                error,
            )
        else:
            self.metrics.deliveries.labels("retry").inc()
            log.info(
                "delivery %s to webhook %s: attempt %s failed (%s); again in %.1f s",
                delivery.id,
                delivery.webhook_id,
                delivery.attempts,
                error,
                wait_s,
            )


async def serve(settings: Settings) -> None:
    """Run a notifier with its metrics endpoint until SIGTERM or SIGINT."""
    try:
        notifier = Notifier(settings)
    except VapidKeyError as error:
        raise SystemExit(f"notifier: {error}") from None
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, notifier.stop.set)
    port = settings.notifier_metrics_port
    try:
        start_http_server(port, registry=notifier.metrics.registry)
    except OSError as error:
        raise SystemExit(f"notifier: cannot serve metrics on port {port}: {error}") from None
    log.info("metrics on :%s/metrics", port)
    await notifier.run()


def run(settings: Settings) -> int:
    """Run ``carewatch notifier``; the exit code."""
    asyncio.run(serve(settings))
    return 0
