"""``carewatch demo``: the whole system on one machine, private instances under ``./.carewatch/``.

Starts PostgreSQL (reusing its data on the next run), migrates, then runs the broker with its
identities synced from the database, the gateway, the API and the simulator as child
processes — the same commands as production (``carewatch broker run``, ``gateway``, ``api``) —
and prints a live line of ingest figures read from the gateway's own ``/metrics``. Ctrl-C (or
SIGTERM) stops the children gracefully, then PostgreSQL.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

import psycopg
from prometheus_client.parser import text_string_to_metric_families

from broker.accounts import set_account
from carewatch import admin
from carewatch.db.migrate import migrate
from carewatch.passwords import hash_password
from carewatch.processes import free_port, wait_until_listening
from carewatch.roles import ROLES
from carewatch.settings import Settings
from tools.local.identities import GATEWAY_USERNAME, SIMULATOR_USERNAME, LocalIdentities
from tools.local.postgres import PostgresInstance
from tools.simulate import DEMO_ORG_ID, DEMO_ORG_NAME

DEMO_SITE_ID = "demo-site"  # the simulator's default --site

DATABASE = "carewatch"
BACKFILL = "30d"  # history written on the demo's first run
LIVE_LINE_EVERY_S = 2.0


@dataclass
class Child:
    name: str
    process: subprocess.Popen[bytes]

    def alive(self) -> bool:
        return self.process.poll() is None


def run(args: argparse.Namespace) -> int:
    base = Path(args.dir).absolute()
    base.mkdir(parents=True, exist_ok=True)
    stop = threading.Event()
    with _stop_on_signals(stop), contextlib.ExitStack() as stack:
        print(f"carewatch demo: private instances under {base}", flush=True)
        pg = stack.enter_context(PostgresInstance(base / "postgres"))
        database_url = _ensure_database(pg)
        migrate(database_url, retention_days=Settings().retention_days)
        logins = _ensure_demo_logins(database_url, base / "demo-logins.json")
        identities = LocalIdentities()
        with psycopg.connect(database_url, autocommit=True) as conn:
            for account in identities.accounts():
                password = (
                    identities.gateway_password
                    if account.username == GATEWAY_USERNAME
                    else identities.simulator_password
                )
                set_account(conn, account.username, account.role, password)
        metrics_port = free_port()
        broker_port = free_port()
        broker_address = f"127.0.0.1:{broker_port}"
        env = dict(os.environ)
        env.update(
            CAREWATCH_DATABASE_URL=database_url,
            CAREWATCH_METRICS_PORT=str(metrics_port),
            CAREWATCH_GATEWAY_CLIENT_ID="carewatch-demo-gateway",
        )
        gateway_url = f"mqtt://{GATEWAY_USERNAME}:{identities.gateway_password}@{broker_address}"
        simulator_url = (
            f"mqtt://{SIMULATOR_USERNAME}:{identities.simulator_password}@{broker_address}"
        )
        logs = base / "logs"
        logs.mkdir(exist_ok=True)
        _backfill_once(database_url, args.devices, env, logs)
        children: list[Child] = []
        # Stopped in reverse order: the simulator first, the broker last.
        stack.callback(_stop_children, children)
        children.append(
            _spawn(
                "broker",
                ["-m", "app.cli", "broker", "run", "--dir", str(base / "mosquitto"),
                 "--host", "127.0.0.1", "--port", str(broker_port)],
                env,
                logs,
            )
        )  # fmt: skip
        if not wait_until_listening(broker_port, timeout_s=15, still_starting=children[0].alive):
            print(f"the broker did not start; see {logs / 'broker.log'}", file=sys.stderr)
            return 1
        children += [
            _spawn("gateway", ["-m", "gateway"], {**env, "CAREWATCH_MQTT_URL": gateway_url}, logs),
            _spawn("api", ["-m", "api", "--port", str(args.port)],
                   # The API has no broker identity: it never connects to the broker.
                   {**env, "CAREWATCH_DEVICE_MQTT_URL": f"mqtt://{broker_address}"}, logs),
            _spawn(
                "simulator",
                [
                    "-m", "app.cli", "simulate",
                    "--devices", str(args.devices),
                    "--speed", str(args.speed),
                    "--site", DEMO_SITE_ID,
                    "--register",
                ],
                {**env, "CAREWATCH_MQTT_URL": simulator_url},
                logs,
            ),
        ]  # fmt: skip
        print(
            f"""
  alert board   http://127.0.0.1:{args.port}/   (API: /docs; health: /healthz, /readyz)
  gateway       http://127.0.0.1:{metrics_port}/metrics
  database      {database_url}
  broker        mqtt://{broker_address}   (devices onboarded at /onboarding connect here)
  logs          {logs}/
  simulator     {args.devices} devices, {args.speed:g}x real time

  logins        (organisation "{DEMO_ORG_NAME}"; also in {base / "demo-logins.json"})
{_format_logins(logins)}

Ctrl-C stops everything.
""",
            flush=True,
        )
        return _watch(children, metrics_port, stop)


def _ensure_demo_logins(database_url: str, path: Path) -> dict[str, str]:
    """One user per role in the demo organisation; their passwords are kept in ``path``
    (readable by the owner only) so that the demo's logins stay the same across runs."""
    logins: dict[str, str] = json.loads(path.read_text()) if path.exists() else {}
    with psycopg.connect(database_url) as conn:
        admin.ensure_org(conn, DEMO_ORG_ID, DEMO_ORG_NAME)
        admin.ensure_site(conn, DEMO_SITE_ID, DEMO_ORG_ID, f"Simulerat boende {DEMO_SITE_ID}")
        for role in ROLES:
            username = f"demo-{role}"
            exists = conn.execute("SELECT 1 FROM users WHERE username = %s", (username,))
            if exists.fetchone() is not None:
                if username in logins:
                    continue
                conn.execute("DELETE FROM auth_tokens USING users WHERE users.username = %s"
                             " AND auth_tokens.user_id = users.id", (username,))  # fmt: skip
                logins[username] = secrets.token_urlsafe(12)
                conn.execute(
                    "UPDATE users SET password_hash = %s WHERE username = %s",
                    (hash_password(logins[username]), username),
                )
                continue
            logins[username] = secrets.token_urlsafe(12)
            admin.add_user(conn, username, DEMO_ORG_ID, role, logins[username])
        conn.commit()
    path.write_text(json.dumps(logins, indent=2))
    path.chmod(0o600)
    return logins


def _format_logins(logins: dict[str, str]) -> str:
    return "\n".join(
        f"    {username:<22} {password}" for username, password in sorted(logins.items())
    )


def _backfill_once(database_url: str, devices: int, env: dict[str, str], logs: Path) -> None:
    """On the first run, 30 days of the same fleet's history, so the managers' dashboards have
    something to show; the live simulator then carries on from now. Not fatal if it fails."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        has_events = conn.execute("SELECT EXISTS (SELECT 1 FROM events)").fetchone()
    if has_events is not None and has_events[0]:
        return
    print(f"  first run: backfilling {BACKFILL} of history for the dashboards ...", flush=True)
    with (logs / "backfill.log").open("ab") as log:
        done = subprocess.run(
            [sys.executable, "-m", "app.cli", "simulate", "--backfill", BACKFILL,
             "--devices", str(devices), "--site", DEMO_SITE_ID],
            env=env, stdout=log, stderr=subprocess.STDOUT, check=False,
        )  # fmt: skip
    if done.returncode != 0:
        print(f"  backfill failed (exit {done.returncode}); see {logs / 'backfill.log'}")


def _ensure_database(pg: PostgresInstance) -> str:
    with psycopg.connect(pg.url("postgres"), autocommit=True) as conn:
        exists = conn.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,)
        ).fetchone()
    if exists is None:
        return pg.create_database(DATABASE)
    return pg.url(DATABASE)


def _spawn(name: str, argv: list[str], env: dict[str, str], logs: Path) -> Child:
    with (logs / f"{name}.log").open("ab") as log:
        process = subprocess.Popen(
            [sys.executable, *argv], env=env, stdout=log, stderr=subprocess.STDOUT
        )
    return Child(name, process)


def _watch(children: list[Child], metrics_port: int, stop: threading.Event) -> int:
    previous: tuple[float, float] | None = None
    while not stop.wait(LIVE_LINE_EVERY_S):
        for child in children:
            if child.process.poll() is not None:
                print(f"\n{child.name} exited with {child.process.returncode}; see its log")
                return 1
        figures = _gateway_figures(metrics_port)
        if figures is None:
            continue
        now = time.monotonic()
        stored = figures["stored"]
        rate = 0.0 if previous is None else (stored - previous[1]) / (now - previous[0])
        previous = (now, stored)
        print(
            f"\r{time.strftime('%H:%M:%S')}  stored {stored:,.0f} events ({rate:,.0f}/s)"
            f"  duplicates {figures['duplicates']:,.0f}  dead letters {figures['dead']:,.0f}"
            f"  devices online {figures['online']:,.0f}  alerts {figures['alerts']:,.0f}"
            f"  mean ingest delay {figures['delay_ms']:,.0f} ms   ",
            end="",
            flush=True,
        )
    print()
    return 0


def _gateway_figures(port: int) -> dict[str, float] | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=1) as response:
            text = response.read().decode()
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return None
    sums: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            sums[sample.name] = sums.get(sample.name, 0.0) + sample.value
    delay_count = sums.get("carewatch_ingest_delay_seconds_count", 0.0)
    return {
        "stored": sums.get("carewatch_events_stored_total", 0.0),
        "duplicates": sums.get("carewatch_events_duplicate_total", 0.0),
        "dead": sums.get("carewatch_dead_letters_total", 0.0),
        "online": sums.get("carewatch_devices_online", 0.0),
        "alerts": sums.get("carewatch_alerts_open", 0.0),
        "delay_ms": 1000 * sums.get("carewatch_ingest_delay_seconds_sum", 0.0) / delay_count
        if delay_count
        else 0.0,
    }


def _stop_children(children: list[Child]) -> None:
    # The simulator first so the gateway can drain what is left, then the others.
    for child in reversed(children):
        if child.process.poll() is None:
            child.process.send_signal(signal.SIGTERM)
            try:
                child.process.wait(45)
            except subprocess.TimeoutExpired:
                child.process.kill()
                child.process.wait()


@contextlib.contextmanager
def _stop_on_signals(stop: threading.Event) -> Iterator[None]:
    def handler(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)
