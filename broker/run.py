"""``carewatch broker run``: Mosquitto with the shipped configuration, its identities kept in
step with the database.

One process owns both the broker (a child) and the sync (broker.sync), so the sync
can signal the broker without sharing a PID namespace across containers, and docker-compose,
the demo and the tests start the broker the same way. If the broker dies, this process exits
with an error and the supervisor (Docker, systemd) restarts both.

A SIGHUP to this process is passed on to Mosquitto, which re-reads its identities and its TLS
certificate and key: renewing the certificate is replacing the files and ``kill -HUP`` (or
``docker compose kill -s HUP broker``), without a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from pathlib import Path

import psycopg

from broker.mosquitto import MosquittoInstance, TlsListener
from broker.sync import run_sync, sync_once

log = logging.getLogger(__name__)

_WATCH_INTERVAL_S = 1.0


def run(
    database_url: str, directory: Path, *, host: str, port: int, tls: TlsListener | None = None
) -> int:
    """Run ``carewatch broker run`` until stopped; the exit code."""
    return asyncio.run(serve(database_url, directory, host=host, port=port, tls=tls))


async def serve(
    database_url: str, directory: Path, *, host: str, port: int, tls: TlsListener | None = None
) -> int:
    """Mosquitto on ``host:port`` (and with TLS as ``tls`` says) with its identities kept in
    step, until it or we stop."""
    # The broker's log goes to our stdout, where a container's log belongs.
    broker = MosquittoInstance(directory, host=host, port=port, log_to_stdout=True, tls=tls)
    try:
        # Identities before the first client: otherwise devices reconnecting after a restart
        # would be refused until the first sync. If the database is away, the files of the
        # last run (kept in the directory) serve until it is back.
        with psycopg.connect(database_url, autocommit=True, connect_timeout=5) as conn:
            sync_once(conn, broker.auth_paths)
    except psycopg.Error as error:
        log.warning("database unreachable at start (%s); using the identities last written", error)
    # Handlers first: a SIGTERM that arrived between starting Mosquitto and installing them
    # would end this process at once and leave the broker running without its owner.
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    loop.add_signal_handler(signal.SIGHUP, _reload, broker)
    broker.start()
    log.info("broker listening on %s:%s", host, broker.port)
    if tls is not None:
        log.info("broker listening with TLS on %s:%s (%s)", tls.host, tls.port, tls.certfile)
    sync = asyncio.create_task(run_sync(database_url, broker.auth_paths, broker.reload))
    try:
        while not stop.is_set() and broker.is_running():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(_WATCH_INTERVAL_S):
                    await stop.wait()
    finally:
        sync.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sync
        crashed = not broker.is_running()
        broker.stop()
    if crashed:
        log.error("mosquitto exited unexpectedly; see %s", broker.log_path)
        return 1
    return 0


def _reload(broker: MosquittoInstance) -> None:
    """Our SIGHUP, passed on: Mosquitto re-reads identities, certificate and key."""
    log.info("SIGHUP: reloading the broker (identities, TLS certificate and key)")
    broker.reload()
