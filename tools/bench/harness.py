"""What every benchmark run is built on: its directory, its signals, its services and its report.

A run (:func:`run_benchmark`) works in a fresh temporary directory, removed afterwards unless
``--keep``; progress goes to stderr whatever ``--log-level`` says, SIGTERM unwinds like Ctrl-C
so that every private instance is stopped, and a :class:`BenchError` becomes exit code 1.
The measured services run as production runs them (:func:`start_gateway`, :func:`start_api`)
and are waited for over HTTP (:func:`wait_ready`); the API is then used as a client would
(:func:`login`, :func:`answer_json`). The report (:func:`print_report`) is a table on stdout
and, with ``--json``, a last line of JSON that names the machine (:func:`machine`).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from types import FrameType
from typing import Any, Final

import httpx
import psycopg

from broker.mosquitto import mosquitto_binary
from carewatch import admin
from carewatch.processes import LOOPBACK
from carewatch.settings import Settings
from tools.bench.children import BenchChild
from tools.bench.errors import BenchError
from tools.bench.hardware import cpu_model, cpus_available
from tools.metrics import sample_sums

log = logging.getLogger(__name__)

# How long a service started for a measurement may take to answer.
START_TIMEOUT_S: Final = 60.0
_POLL_S: Final = 0.1
# The organisation and site every benchmark's devices and users belong to.
BENCH_ORG: Final = "bench-org"
BENCH_SITE: Final = "bench-site"
_CONNECTED_METRIC: Final = "carewatch_broker_connected"


class Terminated(BaseException):
    """SIGTERM during a run: unwinds like Ctrl-C so that every ``with`` block cleans up."""


# --- the run -------------------------------------------------------------------------------------


def configure_logging(level: str) -> None:
    """The log format of every benchmark command (progress has its own: progress_on_stderr)."""
    logging.basicConfig(
        level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # httpx logs every request at INFO: only its warnings, whatever the level of the rest.
    logging.getLogger("httpx").setLevel(logging.WARNING)


def module_main(
    prog: str,
    description: str | None,
    add_arguments: Callable[[argparse.ArgumentParser], None],
    run: Callable[[argparse.Namespace], int],
    argv: Sequence[str] | None,
) -> int:
    """``python -m tools.bench.NAME``: the options of ``carewatch bench NAME``, then ``run``."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    add_arguments(parser)
    args = parser.parse_args(argv)
    configure_logging(args.log_level)
    return run(args)


def run_benchmark(measure: Callable[[Path], int], *, dir_prefix: str, keep: bool) -> int:
    """Run ``measure(base_dir)`` in a fresh temporary directory; the exit code.

    ``measure`` returns its own code once it has printed its report; a :class:`BenchError`
    gives 1 and an interruption (Ctrl-C, SIGTERM) 130, after the directory is cleaned up.
    """
    with progress_on_stderr(), sigterm_unwinds():
        try:
            with _run_directory(dir_prefix, keep=keep) as base_dir:
                return measure(base_dir)
        except BenchError as error:
            log.error("benchmark failed: %s", error)
            return 1
        except (KeyboardInterrupt, Terminated):
            log.error("benchmark interrupted; cleaned up")
            return 130


@contextlib.contextmanager
def _run_directory(prefix: str, *, keep: bool) -> Iterator[Path]:
    base_dir = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield base_dir
    finally:
        if keep:
            log.info("kept %s", base_dir)
        else:
            shutil.rmtree(base_dir, ignore_errors=True)


@contextlib.contextmanager
def progress_on_stderr() -> Iterator[None]:
    """Progress lines on stderr whatever ``--log-level`` says for the other loggers."""
    bench_log = logging.getLogger("tools.bench")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s bench: %(message)s", "%H:%M:%S"))
    previous = (bench_log.level, bench_log.propagate)
    bench_log.addHandler(handler)
    bench_log.setLevel(logging.INFO)
    bench_log.propagate = False
    try:
        yield
    finally:
        bench_log.removeHandler(handler)
        bench_log.setLevel(previous[0])
        bench_log.propagate = previous[1]


@contextlib.contextmanager
def sigterm_unwinds() -> Iterator[None]:
    """Turn SIGTERM into an exception while we run, so the private instances are stopped."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def terminate(signum: int, frame: FrameType | None) -> None:
        raise Terminated

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def print_report(table: str, result: Mapping[str, Any], *, as_json: bool) -> None:
    """The table on stdout, and with ``as_json`` the result as a last line of JSON."""
    print(table)
    if as_json:
        print(json.dumps(result))


# --- the database --------------------------------------------------------------------------------


def default_retention_days() -> int:
    """The default retention, not the environment's: a CAREWATCH_* meant for the gateway must
    not stop a benchmark here."""
    return int(Settings.model_fields["retention_days"].default)


def add_bench_site(conn: psycopg.Connection[Any], devices: Iterable[tuple[str, str, str]]) -> None:
    """The benchmark's organisation and site, with ``(id, kind, label)`` devices in it."""
    admin.ensure_org(conn, BENCH_ORG, "Benchmark municipality")
    admin.ensure_site(conn, BENCH_SITE, BENCH_ORG, "Benchmark site")
    admin.add_devices_bulk(conn, ((id_, kind, BENCH_SITE, label) for id_, kind, label in devices))


# --- the services, as production runs them --------------------------------------------------------


def gateway_env(database_url: str, mqtt_url: str, metrics_port: int) -> dict[str, str]:
    """The environment of a measured gateway: this run's database, broker and metrics port."""
    # Other CAREWATCH_* variables pass through on purpose: they are the gateway's tuning knobs
    # (CAREWATCH_BATCH_MAX_MESSAGES=...), and a run with them should be possible.
    tuned = sorted(name for name in os.environ if name.startswith("CAREWATCH_"))
    if tuned:
        log.info("gateway inherits %s from the environment", ", ".join(tuned))
    return {
        **os.environ,
        "CAREWATCH_DATABASE_URL": database_url,
        "CAREWATCH_MQTT_URL": mqtt_url,
        "CAREWATCH_METRICS_PORT": str(metrics_port),
        "CAREWATCH_GATEWAY_CLIENT_ID": "bench-gateway",
    }


def start_gateway(env: Mapping[str, str], log_path: Path) -> BenchChild:
    """``python -m gateway`` with ``env`` (see :func:`gateway_env`)."""
    argv = [sys.executable, "-m", "gateway"]
    return BenchChild("gateway", argv, log_path=log_path, env=env, stdout="log", stdin_pipe=False)


def start_api(port: int, env: Mapping[str, str], log_path: Path) -> BenchChild:
    """``python -m api`` on ``127.0.0.1:port`` with ``env``; see :func:`api_url`."""
    argv = [sys.executable, "-m", "api", "--host", LOOPBACK, "--port", str(port)]
    return BenchChild("api", argv, log_path=log_path, env=env, stdout="log", stdin_pipe=False)


def api_url(port: int) -> str:
    """The base URL of the API that :func:`start_api` started on ``port``."""
    return f"http://{LOOPBACK}:{port}"


def wait_ready(url: str, child: BenchChild, timeout_s: float = START_TIMEOUT_S) -> None:
    """Poll ``url`` until it answers 200 (``/readyz``: the API reaches its database;
    ``/metrics``: the gateway is up), or fail when ``child`` exits or the time is up."""
    deadline = time.monotonic() + timeout_s
    with httpx.Client(timeout=1.0) as client:
        while True:
            with contextlib.suppress(httpx.TransportError):
                if client.get(url).status_code == 200:
                    return
            child.check_alive()
            if time.monotonic() > deadline:
                path = httpx.URL(url).path
                raise child.failed(f"{path} did not answer 200 within {timeout_s:.0f} s")
            time.sleep(_POLL_S)


def wait_connected(url: str, child: BenchChild, timeout_s: float = START_TIMEOUT_S) -> None:
    """Poll a gateway's ``/metrics`` at ``url`` until ``carewatch_broker_connected`` is 1: it
    has a broker session and its subscriptions are granted (it sets the gauge after SUBACK)."""
    deadline = time.monotonic() + timeout_s
    with httpx.Client(timeout=2.0) as client:
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if sample_sums(client, url).get(_CONNECTED_METRIC) == 1.0:
                    return
            child.check_alive()
            time.sleep(_POLL_S)
    raise child.failed(f"had no broker session within {timeout_s:.0f} s")


def login(base_url: str, username: str, password: str) -> str:
    """A bearer token from ``POST /api/v1/auth/token``."""
    response = httpx.post(
        f"{base_url}/api/v1/auth/token",
        data={"username": username, "password": password},
        timeout=10.0,
    )
    token: str = answer_json(response, "login")["access_token"]
    return token


def answer_json(response: httpx.Response, what: str) -> Any:
    """The JSON of a successful answer; :class:`BenchError` saying ``what`` failed otherwise."""
    if not response.is_success:
        raise BenchError(f"{what} answered {response.status_code}: {response.content[:500]!r}")
    return response.json()


# --- the report ----------------------------------------------------------------------------------


def machine(database_url: str, *, with_mosquitto: bool = True) -> dict[str, Any]:
    """What the numbers were measured on: CPUs, platform, Python, PostgreSQL (and Mosquitto)."""
    facts: dict[str, Any] = {
        "cpu_model": cpu_model(),
        "cpus": os.cpu_count(),
        "cpus_available": cpus_available(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "postgres": server_version(database_url),
    }
    if with_mosquitto:
        facts["mosquitto"] = mosquitto_version()
    return facts


def server_version(url: str) -> str:
    """PostgreSQL's major version."""
    with psycopg.connect(url) as conn:
        return str(conn.info.server_version // 10000)


def mosquitto_version() -> str:
    """Mosquitto's version, from ``mosquitto -h``; ``unknown`` if it does not say."""
    try:
        result = subprocess.run(
            [mosquitto_binary(), "-h"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except OSError:
        return "unknown"
    first = (result.stdout or result.stderr).splitlines()[:1]
    return first[0].removeprefix("mosquitto version ").strip() if first else "unknown"
