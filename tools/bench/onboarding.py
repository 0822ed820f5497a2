"""``carewatch bench onboarding``: a CSV of N devices, from upload until every one can connect.

On a private PostgreSQL in a temporary directory, with the broker and the API started as
production starts them (``carewatch broker run``, ``python -m api``):

1. migrate; add an organisation, a site and a technician; log in (``POST /api/v1/auth/token``);
2. for each of ``--runs`` runs, a CSV of ``--devices`` new devices (the catalog's own kinds in
   turn, a location label each) is uploaded to ``POST /api/v1/devices/import`` as the
   technician. The clock starts just before the request is sent and stops when the broker
   accepts a CONNECT with the credentials of the *last* device of the answer. The broker
   applies a whole new password file in one reload, so from then on every device of the file
   can connect; the run then checks that (untimed): it connects as each of the N devices;
3. runs add to the installation, so run k starts with (k-1)·N devices already onboarded: the
   identity sync rewrites the files of the whole installation, and this shows what that costs.

Reported per run: the API's answer time (validation, N password hashes, one INSERT, the
audit log), the time until the broker accepted the last device (end to end), the created and
refused rows, and how many of the N devices then connected. Progress on stderr, the table
(and with ``--json`` a last line of JSON) on stdout.
"""

from __future__ import annotations

import argparse
import io
import logging
import os
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Final

import httpx
import paho.mqtt.client as mqtt
import psycopg
from paho.mqtt.enums import CallbackAPIVersion

from carewatch import admin
from carewatch.db.migrate import migrate
from carewatch.processes import LOOPBACK, free_port, wait_until_listening
from devices.catalog import load_catalog
from tools.bench.children import BenchChild
from tools.bench.errors import BenchError
from tools.bench.harness import (
    answer_json,
    api_url,
    default_retention_days,
    login,
    machine,
    print_report,
    run_benchmark,
    start_api,
    wait_ready,
)
from tools.local.postgres import PostgresInstance

log = logging.getLogger("tools.bench.onboarding")

_ORG: Final = "bench-kommun"
_SITE: Final = "bench-hemtjanst"
_USER: Final = "bench-technician"
_START_TIMEOUT_S: Final = 30.0
_READY_TIMEOUT_S: Final = 120.0
_CONNECT_TIMEOUT_S: Final = 5.0
_VERIFY_THREADS: Final = 8


@dataclass(frozen=True, slots=True)
class RunResult:
    """One CSV file's figures."""

    existing_devices: int
    api_s: float
    end_to_end_s: float
    created: int
    refused: int
    connected: int


def run(args: argparse.Namespace) -> int:
    """``carewatch bench onboarding``; the exit code."""
    if args.devices < 1 or args.runs < 1:
        print("carewatch bench onboarding: --devices and --runs must be positive", file=sys.stderr)
        return 2

    def measure_and_report(base_dir: Path) -> int:
        result = measure(base_dir, devices=args.devices, runs=args.runs)
        print_report(render_table(result), result, as_json=args.json)
        return 0

    return run_benchmark(
        measure_and_report, dir_prefix="carewatch-bench-onboarding-", keep=args.keep
    )


def measure(base_dir: Path, *, devices: int, runs: int) -> dict[str, Any]:
    """``runs`` CSV files of ``devices`` devices each, one after another; the JSON result."""
    with PostgresInstance(base_dir / "postgres") as postgres:
        url = postgres.create_database("carewatch")
        migrate(url, retention_days=default_retention_days())
        password = _seed(url)
        broker_port, api_port = free_port(), free_port()
        env = {**os.environ, "CAREWATCH_DATABASE_URL": url,
               "CAREWATCH_DEVICE_MQTT_URL": f"mqtt://{LOOPBACK}:{broker_port}"}  # fmt: skip
        env.pop("CAREWATCH_MQTT_URL", None)
        broker_argv = [sys.executable, "-m", "app.cli", "broker", "run", "--dir",
                       str(base_dir / "broker"), "--host", LOOPBACK,
                       "--port", str(broker_port)]  # fmt: skip
        with (
            BenchChild(
                "broker", broker_argv, log_path=base_dir / "broker.log", env=env,
                stdout="log", stdin_pipe=False,
            ) as broker,
            start_api(api_port, env, base_dir / "api.log") as api,
        ):  # fmt: skip
            if not wait_until_listening(
                broker_port, timeout_s=_START_TIMEOUT_S, still_starting=broker.is_running
            ):
                raise broker.failed("did not start listening")
            base_url = api_url(api_port)
            wait_ready(f"{base_url}/readyz", api)
            token = login(base_url, _USER, password)
            results = []
            with httpx.Client(
                base_url=base_url, headers={"Authorization": f"Bearer {token}"}, timeout=120.0
            ) as client:
                for index in range(runs):
                    log.info("run %d: %d devices onto %d", index + 1, devices, index * devices)
                    results.append(
                        _one_run(client, broker_port, index, devices, existing=index * devices)
                    )
        return {
            "benchmark": "onboarding",
            "devices_per_file": devices,
            "runs": [asdict(r) for r in results],
            "machine": machine(url),
        }


def _seed(url: str) -> str:
    password = "bench-" + os.urandom(12).hex()
    with psycopg.connect(url, autocommit=True) as conn:
        admin.add_org(conn, _ORG, "Benchkommun")
        admin.add_site(conn, _SITE, _ORG, "Hemtjänst Norr")
        admin.add_user(conn, _USER, _ORG, "technician", password)
    return password


def csv_file(run_index: int, count: int) -> bytes:
    """``id;kind;site;label`` rows (semicolons, as Swedish spreadsheets write them)."""
    kinds = sorted(load_catalog().kinds)
    out = io.StringIO()
    out.write("id;kind;site;label\r\n")
    for i in range(count):
        kind = kinds[i % len(kinds)]
        out.write(
            f"bench-r{run_index + 1}-{i:05d};{kind};{_SITE};Lägenhet {i + 1}, plan {i % 9}\r\n"
        )
    return out.getvalue().encode()


def _one_run(
    client: httpx.Client, broker_port: int, index: int, count: int, *, existing: int
) -> RunResult:
    body = csv_file(index, count)
    started = time.perf_counter()
    response = client.post(
        "/api/v1/devices/import", content=body, headers={"Content-Type": "text/csv"}
    )
    answer = answer_json(response, "import")
    api_s = time.perf_counter() - started
    credentials = [
        (row["credentials"]["username"], row["credentials"]["password"])
        for row in answer["created"]
        if row.get("credentials")
    ]
    if not credentials:
        raise BenchError(f"no device was created: {answer['refused'][:3]}")
    last_user, last_password = credentials[-1]
    deadline = started + _READY_TIMEOUT_S
    while not accepts(broker_port, last_user, last_password):
        if time.perf_counter() > deadline:
            raise BenchError(f"the broker did not accept {last_user} within {_READY_TIMEOUT_S} s")
        time.sleep(0.01)
    end_to_end_s = time.perf_counter() - started
    connected = count_accepted(broker_port, credentials)
    return RunResult(
        existing_devices=existing,
        api_s=round(api_s, 3),
        end_to_end_s=round(end_to_end_s, 3),
        created=int(answer["created_count"]),
        refused=int(answer["refused_count"]),
        connected=connected,
    )


def accepts(port: int, username: str, password: str) -> bool:
    """Whether the broker answers this CONNECT with success."""
    outcome: list[bool] = []
    done = threading.Event()

    def on_connect(_c: mqtt.Client, _u: object, _f: object, code: Any, _p: object) -> None:
        outcome.append(not code.is_failure)
        done.set()

    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=username, protocol=mqtt.MQTTv5)
    client.username_pw_set(username, password)
    client.on_connect = on_connect
    try:
        client.connect(LOOPBACK, port, clean_start=True)
    except OSError:
        return False
    try:
        deadline = time.monotonic() + _CONNECT_TIMEOUT_S
        while not done.is_set() and time.monotonic() < deadline:
            client.loop(timeout=0.01)
    finally:
        client.disconnect()
        client.loop(timeout=0.01)  # writes the DISCONNECT and closes the socket
    return outcome == [True]


def count_accepted(port: int, credentials: Sequence[tuple[str, str]]) -> int:
    """How many of these identities the broker accepts (a few threads: about a second per 1,000)."""
    chunks = [credentials[i::_VERIFY_THREADS] for i in range(_VERIFY_THREADS)]
    counts = [0] * len(chunks)

    def check(slot: int) -> None:
        counts[slot] = sum(accepts(port, user, password) for user, password in chunks[slot])

    threads = [threading.Thread(target=check, args=(slot,)) for slot in range(len(chunks))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(counts)


def render_table(result: dict[str, Any]) -> str:
    """The human-readable report of :func:`measure`'s result."""
    n = result["devices_per_file"]
    lines = [
        f"carewatch bench onboarding: CSV files of {n} devices, from upload until the broker"
        " accepts them",
        "",
        f"{'run':>3}  {'already onboarded':>17}  {'API answer s':>12}  {'end to end s':>12}"
        f"  {'created':>7}  {'refused':>7}  {'then connected':>14}",
    ]
    for i, run_ in enumerate(result["runs"], start=1):
        lines.append(
            f"{i:>3}  {run_['existing_devices']:>17}  {run_['api_s']:>12.2f}"
            f"  {run_['end_to_end_s']:>12.2f}  {run_['created']:>7}  {run_['refused']:>7}"
            f"  {run_['connected']:>14}"
        )
    return "\n".join(lines)
