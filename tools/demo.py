"""``carewatch demo``: the whole system on one machine, private instances under ``./.carewatch/``.

Starts PostgreSQL (reusing its data on the next run), migrates, then runs the broker with its
identities synced from the database, the gateway, the API and the simulator as child
processes — the same commands as production (``carewatch broker run``, ``gateway``, ``api``) —
and prints a live line of ingest figures read from the gateway's own ``/metrics``. Ctrl-C (or
SIGTERM) stops the children gracefully, then PostgreSQL.

MQTT goes over TLS as in production: the demo keeps a private CA in ``./.carewatch/tls/``
(``tools.local.certificates``; the CA stays across runs, the broker's certificate is issued
afresh on every start), the broker listens with TLS on a second loopback port, and the gateway
and the simulator connect by ``mqtts://`` verifying it against the CA (as devices onboarded at
``/onboarding`` are told to). The broker's plaintext listener stays on loopback because
``carewatch broker run`` always has one; nothing of the demo uses it, it is there for a
developer's ``mosquitto_sub``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import secrets
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx
import psycopg

from broker.accounts import set_account
from broker.auth_files import Role
from carewatch import admin
from carewatch.db.migrate import migrate
from carewatch.passwords import hash_password
from carewatch.processes import LOOPBACK, ChildProcess, free_port, wait_until_listening
from carewatch.roles import ROLES
from carewatch.settings import Settings
from tools.local.certificates import TlsFiles, local_tls
from tools.local.identities import GATEWAY_USERNAME, SIMULATOR_USERNAME, LocalIdentities
from tools.local.postgres import PostgresInstance
from tools.metrics import metrics_url, sample_sums
from tools.simulate import DEMO_ORG_ID, DEMO_ORG_NAME, stop_on_signals

DEMO_SITE_ID = "demo-site"  # the simulator's default --site

DATABASE = "carewatch"
BACKFILL = "30d"  # history written on the demo's first run
LIVE_LINE_EVERY_S = 2.0
_BROKER_START_TIMEOUT_S = 15.0
# The gateway drains for up to Settings.drain_timeout_s (30 s) on SIGTERM.
_CHILD_STOP_TIMEOUT_S = 45.0


@dataclass(frozen=True, slots=True)
class _Demo:
    """Where this demo's parts are: its directory, database, ports and broker identities."""

    base: Path
    database_url: str
    metrics_port: int
    broker_port: int
    broker_tls_port: int
    tls: TlsFiles
    identities: LocalIdentities

    @property
    def logs(self) -> Path:
        return self.base / "logs"

    @property
    def broker_address(self) -> str:
        """Where the broker's TLS listener is (the certificate names 127.0.0.1)."""
        return f"{LOOPBACK}:{self.broker_tls_port}"

    def broker_url(self, username: str, password: str) -> str:
        return f"mqtts://{username}:{password}@{self.broker_address}"

    def env(self) -> dict[str, str]:
        """What every child is started with: this demo's database, metrics port and CA."""
        return {
            **os.environ,
            "CAREWATCH_DATABASE_URL": self.database_url,
            "CAREWATCH_METRICS_PORT": str(self.metrics_port),
            "CAREWATCH_GATEWAY_CLIENT_ID": "carewatch-demo-gateway",
            "CAREWATCH_MQTT_CA_FILE": str(self.tls.ca_file),
        }


def run(args: argparse.Namespace) -> int:
    """``carewatch demo``: start everything, print a live line until Ctrl-C; the exit code."""
    base = Path(args.dir).absolute()
    base.mkdir(parents=True, exist_ok=True)
    # httpx logs every request at INFO; the live line reads /metrics every few seconds.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    stop = threading.Event()
    with stop_on_signals(stop), contextlib.ExitStack() as stack:
        print(f"carewatch demo: private instances under {base}", flush=True)
        database_url = _start_database(stack, base)
        logins = _ensure_demo_logins(database_url, base / "demo-logins.json")
        demo = _Demo(
            base=base,
            database_url=database_url,
            metrics_port=free_port(),
            broker_port=free_port(),
            broker_tls_port=free_port(),
            tls=local_tls(base / "tls"),
            identities=_broker_identities(database_url),
        )
        demo.logs.mkdir(exist_ok=True)
        _backfill_once(demo, args.devices)
        children = _start_children(stack, demo, args)
        if children is None:
            return 1
        _print_welcome(demo, args, logins)
        return _watch(children, demo.metrics_port, stop)


def _start_database(stack: contextlib.ExitStack, base: Path) -> str:
    """PostgreSQL (stopped when ``stack`` closes) with the migrated demo database; its URL."""
    pg = stack.enter_context(PostgresInstance(base / "postgres"))
    database_url = _ensure_database(pg)
    migrate(database_url, retention_days=Settings().retention_days)
    return database_url


def _broker_identities(database_url: str) -> LocalIdentities:
    """New passwords for the gateway and the simulator, in the database the broker syncs from."""
    identities = LocalIdentities()
    with psycopg.connect(database_url, autocommit=True) as conn:
        set_account(conn, GATEWAY_USERNAME, Role.GATEWAY, identities.gateway_password)
        set_account(conn, SIMULATOR_USERNAME, Role.SIMULATOR, identities.simulator_password)
    return identities


def _start_children(
    stack: contextlib.ExitStack, demo: _Demo, args: argparse.Namespace
) -> list[ChildProcess] | None:
    """The broker, then the gateway, the API and the simulator; None if the broker did not
    start. ``stack`` stops them in reverse order: the simulator first, so that the gateway can
    drain what is left, and the broker last."""

    def start(name: str, argv: list[str], env: dict[str, str]) -> ChildProcess:
        child = ChildProcess(
            name,
            [sys.executable, *argv],
            log_path=demo.logs / f"{name}.log",
            env=env,
            stop_timeout_s=_CHILD_STOP_TIMEOUT_S,
        )
        return stack.enter_context(child)

    env = demo.env()
    broker = start(
        "broker",
        ["-m", "app.cli", "broker", "run", "--dir", str(demo.base / "mosquitto"),
         "--host", LOOPBACK, "--port", str(demo.broker_port),
         "--tls-host", LOOPBACK, "--tls-port", str(demo.broker_tls_port),
         "--certfile", str(demo.tls.certfile), "--keyfile", str(demo.tls.keyfile),
         "--cafile", str(demo.tls.ca_file)],
        env,
    )  # fmt: skip
    for port in (demo.broker_port, demo.broker_tls_port):
        if not wait_until_listening(
            port, timeout_s=_BROKER_START_TIMEOUT_S, still_starting=broker.is_running
        ):
            print(f"the broker did not start; see {broker.log_path}", file=sys.stderr)
            return None
    gateway_url = demo.broker_url(GATEWAY_USERNAME, demo.identities.gateway_password)
    simulator_url = demo.broker_url(SIMULATOR_USERNAME, demo.identities.simulator_password)
    return [
        broker,
        start("gateway", ["-m", "gateway"], {**env, "CAREWATCH_MQTT_URL": gateway_url}),
        start("api", ["-m", "api", "--port", str(args.port)],
              # The API has no broker identity: it never connects to the broker.
              {**env, "CAREWATCH_DEVICE_MQTT_URL": f"mqtts://{demo.broker_address}",
               "CAREWATCH_DEVICE_MQTT_CA_FILE": str(demo.tls.ca_file)}),
        start(
            "simulator",
            [
                "-m", "app.cli", "simulate",
                "--devices", str(args.devices),
                "--speed", str(args.speed),
                "--site", DEMO_SITE_ID,
                "--register",
            ],
            {**env, "CAREWATCH_MQTT_URL": simulator_url},
        ),
    ]  # fmt: skip


def _print_welcome(demo: _Demo, args: argparse.Namespace, logins: dict[str, str]) -> None:
    """Where everything is, and who may log in."""
    print(
        f"""
  alert board   http://127.0.0.1:{args.port}/   (API: /docs; health: /healthz, /readyz)
  gateway       {metrics_url(demo.metrics_port)}
  database      {demo.database_url}
  broker        mqtts://{demo.broker_address}   (devices onboarded at /onboarding connect here)
  broker CA     {demo.tls.ca_file}
  plaintext     mqtt://{LOOPBACK}:{demo.broker_port}   (loopback, for local tools only)
  logs          {demo.logs}/
  simulator     {args.devices} devices, {args.speed:g}x real time

  logins        (organisation "{DEMO_ORG_NAME}"; also in {demo.base / "demo-logins.json"})
{_format_logins(logins)}

Ctrl-C stops everything.
""",
        flush=True,
    )


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


def _backfill_once(demo: _Demo, devices: int) -> None:
    """On the first run, 30 days of the same fleet's history, so the managers' dashboards have
    something to show: residences with supervision plans and their past nights too. It ends
    now, not on the hour, and the live simulator then carries on from it (its batteries, its
    plans): a check planned in the meantime would otherwise look missed. Not fatal if it
    fails."""
    with psycopg.connect(demo.database_url, autocommit=True) as conn:
        has_events = conn.execute("SELECT EXISTS (SELECT 1 FROM events)").fetchone()
    if has_events is not None and has_events[0]:
        return
    print(f"  first run: backfilling {BACKFILL} of history for the dashboards ...", flush=True)
    log_path = demo.logs / "backfill.log"
    with log_path.open("ab") as log:
        done = subprocess.run(
            [sys.executable, "-m", "app.cli", "simulate", "--backfill", BACKFILL,
             "--devices", str(devices), "--site", DEMO_SITE_ID,
             "--until", datetime.now(UTC).isoformat(timespec="seconds")],
            env=demo.env(), stdout=log, stderr=subprocess.STDOUT, check=False,
        )  # fmt: skip
    if done.returncode != 0:
        print(f"  backfill failed (exit {done.returncode}); see {log_path}")


def _ensure_database(pg: PostgresInstance) -> str:
    with psycopg.connect(pg.url("postgres"), autocommit=True) as conn:
        exists = conn.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,)
        ).fetchone()
    if exists is None:
        return pg.create_database(DATABASE)
    return pg.url(DATABASE)


def _watch(children: list[ChildProcess], metrics_port: int, stop: threading.Event) -> int:
    """The live line every few seconds until ``stop``; 1 if a child exited meanwhile."""
    previous: tuple[float, float] | None = None
    with httpx.Client(timeout=1.0) as client:
        while not stop.wait(LIVE_LINE_EVERY_S):
            for child in children:
                code = child.poll()
                if code is not None:
                    print(f"\n{child.name} exited with {code}; see its log")
                    return 1
            figures = _gateway_figures(client, metrics_port)
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


def _gateway_figures(client: httpx.Client, port: int) -> dict[str, float] | None:
    """The live line's figures from the gateway's /metrics; None while it does not answer."""
    try:
        sums = sample_sums(client, metrics_url(port))
    except httpx.HTTPError:
        return None
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
