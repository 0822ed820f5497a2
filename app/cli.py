"""The ``carewatch`` console script: one entry point for every process and admin task.

Each subcommand imports its module lazily, so ``carewatch migrate`` does not pay for FastAPI
and no service imports the tools (demo, simulator, benchmarks): ``carewatch bench`` hands its
arguments to ``tools.bench.command``, which describes its own options.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from typing import Any, Final

from carewatch.settings import Settings

# What add_subparsers returns (argparse's private _SubParsersAction).
Subcommands = Any


def _add_common(parser: argparse.ArgumentParser) -> None:
    """The options every command that reaches the database or the broker takes."""
    parser.add_argument("--database-url", help="overrides CAREWATCH_DATABASE_URL")
    parser.add_argument("--mqtt-url", help="overrides CAREWATCH_MQTT_URL")
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING (default INFO)")


def build_parser() -> argparse.ArgumentParser:
    """The whole command line: one subcommand per process, tool and administrative task."""
    parser = argparse.ArgumentParser(prog="carewatch", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (
        _add_services,
        _add_simulate,
        _add_usage,
        _add_demo,
        _add_bench,
        _add_broker,
        _add_grafana,
        _add_admin,
        _add_restore,
    ):
        add(commands)
    return parser


def _add_services(commands: Subcommands) -> None:
    """``migrate``, ``gateway``, ``api`` and ``notifier``: what production runs."""
    p = commands.add_parser("migrate", help="apply the database schema (idempotent)")
    _add_common(p)

    p = commands.add_parser("gateway", help="the MQTT ingest service")
    _add_common(p)
    p.add_argument("--metrics-port", type=int, help="overrides CAREWATCH_METRICS_PORT")
    p.add_argument("--client-id", help="overrides CAREWATCH_GATEWAY_CLIENT_ID (stable per gateway)")

    p = commands.add_parser("api", help="the HTTP API and web pages")
    _add_common(p)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)

    p = commands.add_parser("notifier", help="outgoing webhooks: signed, retried, logged")
    _add_common(p)
    p.add_argument(
        "--metrics-port",
        dest="notifier_metrics_port",
        type=int,
        help="overrides CAREWATCH_NOTIFIER_METRICS_PORT",
    )


def _add_simulate(commands: Subcommands) -> None:
    """``simulate``: live traffic from simulated devices, or a backfilled history."""
    p = commands.add_parser("simulate", help="realistic traffic from N simulated devices")
    _add_common(p)
    p.add_argument("--devices", type=int, required=True, help="how many devices (all four kinds)")
    p.add_argument("--rate", type=float, help="cap on messages per second (default: no cap)")
    p.add_argument("--duration", type=float, help="stop after this many wall-clock seconds")
    p.add_argument("--speed", type=float, default=1.0, help="simulated seconds per real second")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--site", default="demo-site", help="site the devices are registered in")
    p.add_argument(
        "--register",
        action="store_true",
        help="register the simulated devices in the database first (needs the database URL)",
    )
    p.add_argument(
        "--backfill",
        metavar="DURATION",
        help="instead of publishing, write this much history (365d, 30d, 12h) straight into the"
        " database and rebuild its usage rollups; registers the devices; heartbeats thinned to"
        " one per --heartbeat-every seconds (a year of 1,000 devices: about 33 M events)",
    )
    p.add_argument(
        "--until", help="with --backfill: when the history ends (ISO 8601; default: this hour)"
    )
    p.add_argument(
        "--heartbeat-every", type=int, default=900, help="with --backfill: heartbeat seconds"
    )
    p.add_argument("--id-prefix", help="device ids are PREFIX-lock-0001, ... (default sim)")


def _add_usage(commands: Subcommands) -> None:
    """``usage rebuild``: recompute the usage rollups from the stored events."""
    p = commands.add_parser("usage", help="the usage rollups")
    verbs = p.add_subparsers(dest="verb", required=True, metavar="VERB")
    p = verbs.add_parser(
        "rebuild", help="recompute the usage rollups of a period from the stored events"
    )
    _add_common(p)
    p.add_argument("--since", help="ISO 8601 (default: 30 days before --until)")
    p.add_argument("--until", help="ISO 8601 (default: now)")


def _add_demo(commands: Subcommands) -> None:
    """``demo``: everything on one machine."""
    p = commands.add_parser("demo", help="everything on one machine, under ./.carewatch/")
    p.add_argument("--dir", default=".carewatch", help="where the private instances live")
    p.add_argument("--devices", type=int, default=200)
    p.add_argument("--speed", type=float, default=60.0, help="simulated seconds per real second")
    p.add_argument("--port", type=int, default=8000, help="port of the API and web pages")
    p.add_argument("--log-level", default="INFO")


def _add_bench(commands: Subcommands) -> None:
    """``bench``: listed here for ``--help``; :func:`main` hands its arguments to the tools."""
    bench = commands.add_parser(
        "bench", help="the benchmarks (carewatch bench --help)", add_help=False
    )
    bench.add_argument("bench_args", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)


def _add_broker(commands: Subcommands) -> None:
    """``broker run``, ``broker account set|remove`` and ``broker clear-announcement``."""
    broker = commands.add_parser("broker", help="the MQTT broker and its identities")
    verbs = broker.add_subparsers(dest="verb", required=True, metavar="VERB")
    p = verbs.add_parser(
        "run", help="Mosquitto with the shipped configuration, identities synced from the database"
    )
    _add_common(p)
    p.add_argument("--dir", default="/var/lib/carewatch/broker", help="config, data, identities")
    # Plaintext on loopback by default: passwords must not cross a network in clear.
    p.add_argument("--host", default="127.0.0.1", help="address of the plaintext listener")
    p.add_argument("--port", type=int, default=1883, help="port of the plaintext listener")
    # MQTT over TLS (devices, the gateway): on when --tls-port is given (docker-compose.yml).
    p.add_argument("--tls-port", type=int, help="port of the TLS listener (e.g. 8883)")
    p.add_argument("--tls-host", default="0.0.0.0", help="address of the TLS listener")  # noqa: S104
    p.add_argument("--certfile", help="the broker's certificate (PEM), re-read on SIGHUP")
    p.add_argument("--keyfile", help="its private key (PEM), re-read on SIGHUP")
    p.add_argument("--cafile", help="the CA certificate that signed it (PEM)")
    p = verbs.add_parser("account", help="broker accounts of services (gateway, bridge, simulator)")
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    p = actions.add_parser("set", help="create or update an account (idempotent)")
    _add_common(p)
    p.add_argument("username", metavar="USERNAME", help="with a dot, e.g. carewatch.gateway")
    p.add_argument(
        "--role", required=True, help="gateway, zigbee2mqtt_bridge, simulator or operator"
    )
    p.add_argument("--org", help="the organisation of a zigbee2mqtt bridge")
    p.add_argument(
        "--base-topic", help="a zigbee2mqtt bridge's mqtt.base_topic (new: zigbee2mqtt; +#13)"
    )
    p.add_argument("--label", default="")
    p.add_argument(
        "--password-stdin",
        action="store_true",
        required=True,
        help="read the password from the first line of standard input",
    )
    p = actions.add_parser("remove", help="remove an account (it is disconnected at once)")
    _add_common(p)
    p.add_argument("username", metavar="USERNAME")
    p = verbs.add_parser(
        "clear-announcement",
        help="delete the retained device list a bridge left on a base topic, so that another"
        " organisation's bridge may take it (+#13)",
    )
    _add_common(p)
    p.add_argument("base_topic", metavar="BASE_TOPIC", help="e.g. zigbee2mqtt-hus-a")
    p.add_argument(
        "--username",
        default="carewatch.operator",
        help="a broker account of role operator (default carewatch.operator); --mqtt-url's"
        " host and port are used, its credentials not",
    )
    p.add_argument(
        "--password-stdin",
        action="store_true",
        required=True,
        help="read the account's password from the first line of standard input",
    )


def _add_grafana(commands: Subcommands) -> None:
    """``grafana role``: Grafana's read-only database role."""
    grafana = commands.add_parser("grafana", help="Grafana's access to the database")
    verbs = grafana.add_subparsers(dest="verb", required=True, metavar="VERB")
    p = verbs.add_parser("role", help="create or update Grafana's read-only role (idempotent)")
    _add_common(p)
    p.add_argument("--name", default="carewatch_grafana", help="the role's name")
    p.add_argument(
        "--password-stdin",
        action="store_true",
        required=True,
        help="read the role's password from the first line of standard input",
    )


def _add_admin(commands: Subcommands) -> None:
    """``org``, ``site``, ``device`` and ``user``: bootstrap administration from a shell."""
    for noun in ("org", "site", "device", "user"):
        group = commands.add_parser(noun, help=f"administer {noun}s from a shell")
        verbs = group.add_subparsers(dest="verb", required=True, metavar="VERB")
        p = verbs.add_parser("add", help=f"add a {noun}")
        _add_common(p)
        if noun == "org":
            p.add_argument("org_id", metavar="ORG_ID")
            p.add_argument("--name", required=True)
        elif noun == "site":
            p.add_argument("site_id", metavar="SITE_ID")
            p.add_argument("--org", required=True)
            p.add_argument("--name", required=True)
            p.add_argument("--timezone", default="Europe/Stockholm")
        elif noun == "device":
            _add_device_verbs(p, verbs)
        else:
            p.add_argument("username", metavar="USERNAME")
            p.add_argument("--org", required=True)
            p.add_argument("--role", required=True, help="caregiver, technician, manager or admin")
            p.add_argument(
                "--site",
                action="append",
                default=[],
                dest="sites",
                metavar="SITE_ID",
                help="limit the user to this site (repeatable; default: every site of the org)",
            )
            p.add_argument(
                "--password-stdin",
                action="store_true",
                help="read the password from the first line of standard input",
            )
            p.add_argument("--display-name", default="")
            p.add_argument("--language", default="sv", help="sv or en (default sv)")


def _add_restore(commands: Subcommands) -> None:
    """``restore report``: what a point-in-time restore lost (docs/backup.md)."""
    restore = commands.add_parser("restore", help="after a point-in-time restore")
    verbs = restore.add_subparsers(dest="verb", required=True, metavar="VERB")
    p = verbs.add_parser(
        "report", help="where the restored data ends and the window lost, per site"
    )
    _add_common(p)
    p.add_argument("--failed-at", help="when the old database failed (ISO 8601; default: now)")
    p.add_argument("--json", action="store_true", help="as JSON")


def _add_device_verbs(add: argparse.ArgumentParser, verbs: Subcommands) -> None:
    """``device add`` (prints the MQTT credentials) and the other onboarding verbs."""
    add.add_argument("device_id", metavar="DEVICE_ID")
    add.add_argument("--kind", required=True)
    add.add_argument("--site", required=True)
    add.add_argument("--label", default="")
    add.add_argument("--source", default="mqtt", choices=("mqtt", "zigbee2mqtt"))
    add.add_argument("--zigbee-name", help="zigbee2mqtt's friendly name (source zigbee2mqtt)")
    add.add_argument("--zigbee-model", help="the model as zigbee2mqtt names it")
    add.add_argument("--bridge", help="the bridge id (zigbee2mqtt.<id>) that publishes for it")
    p = verbs.add_parser("decommission", help="take a device out of service (revokes it)")
    _add_common(p)
    p.add_argument("device_id", metavar="DEVICE_ID")
    p = verbs.add_parser("credentials", help="issue a new MQTT password (the old one stops)")
    _add_common(p)
    p.add_argument("device_id", metavar="DEVICE_ID")
    p = verbs.add_parser("import", help="onboard the devices of a CSV file; credentials as CSV")
    _add_common(p)
    p.add_argument("file", metavar="FILE.csv", help="id,kind,site,label[,source,...] rows")
    p.add_argument("--org", required=True, help="the organisation whose sites the rows name")


def settings_from(args: argparse.Namespace) -> Settings:
    """Environment first, then the flags that were given."""
    overrides: dict[str, object] = {}
    for flag, field in (
        ("database_url", "database_url"),
        ("mqtt_url", "mqtt_url"),
        ("metrics_port", "metrics_port"),
        ("client_id", "gateway_client_id"),
        ("notifier_metrics_port", "notifier_metrics_port"),
    ):
        value = getattr(args, flag, None)
        if value is not None:
            overrides[field] = value
    return Settings(**overrides)  # type: ignore[arg-type]


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the command line and run the command; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["bench"]:
        # The benchmarks parse their own options (``carewatch bench --help`` included).
        from tools.bench.command import main as bench_main

        return bench_main(argv[1:])
    args = build_parser().parse_args(argv)
    command: str = args.command
    logging.basicConfig(
        level=getattr(args, "log_level", "INFO").upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    return _RUNNERS.get(command, _run_admin)(args)


# Each runner imports what it runs only when it runs, so that no process loads more than its own.
def _run_demo(args: argparse.Namespace) -> int:
    from tools import demo

    return demo.run(args)


def _run_migrate(args: argparse.Namespace) -> int:
    from carewatch.db import migrate

    settings = settings_from(args)
    applied = migrate.migrate(settings.database_url, retention_days=settings.retention_days)
    print(f"schema up to date ({len(applied)} migration(s) applied now)")
    return 0


def _run_gateway(args: argparse.Namespace) -> int:
    from gateway import service

    return service.run(settings_from(args))


def _run_api(args: argparse.Namespace) -> int:
    from app import server

    return server.run(settings_from(args), host=args.host, port=args.port)


def _run_notifier(args: argparse.Namespace) -> int:
    from notifier import service

    return service.run(settings_from(args))


def _run_simulate(args: argparse.Namespace) -> int:
    from tools import simulate

    return simulate.run(settings_from(args), args)


def _run_usage(args: argparse.Namespace) -> int:
    from carewatch import rollup_rebuild

    return rollup_rebuild.run(settings_from(args), args)


def _run_broker(args: argparse.Namespace) -> int:
    from broker import commands

    return commands.run(settings_from(args), args)


def _run_grafana(args: argparse.Namespace) -> int:
    from carewatch.db import grafana_role

    return grafana_role.run(settings_from(args), args)


def _run_restore(args: argparse.Namespace) -> int:
    from carewatch import restore_report

    return restore_report.run(settings_from(args), args)


def _run_admin(args: argparse.Namespace) -> int:
    from carewatch import admin

    return admin.run(settings_from(args), args)


_RUNNERS: Final[dict[str, Callable[[argparse.Namespace], int]]] = {
    "demo": _run_demo,
    "migrate": _run_migrate,
    "gateway": _run_gateway,
    "api": _run_api,
    "notifier": _run_notifier,
    "simulate": _run_simulate,
    "usage": _run_usage,
    "broker": _run_broker,
    "grafana": _run_grafana,
    "restore": _run_restore,
}

if __name__ == "__main__":
    sys.exit(main())
