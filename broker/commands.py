"""The ``carewatch broker ...`` subcommands: ``run`` (the broker with its identities in step),
``account set|remove`` (service accounts), ``clear-announcement`` (a left base topic's retained
device list, broker/left_base_topics.py)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import psycopg

import broker.run
from broker.accounts import remove_account, set_account
from broker.auth_files import Role
from broker.mosquitto import TlsListener
from carewatch.errors import AdminError
from carewatch.settings import Settings


def run(settings: Settings, args: argparse.Namespace) -> int:
    """Run one ``carewatch broker`` subcommand; 0 on success, 2 if refused."""
    if args.verb == "run":
        if args.tls_port is not None and not (args.certfile and args.keyfile):
            print(
                "carewatch broker run: --tls-port needs --certfile and --keyfile", file=sys.stderr
            )
            return 2
        return broker.run.run(
            settings.database_url,
            Path(args.dir),
            host=args.host,
            port=args.port,
            tls=tls_listener(args),
        )
    try:
        with psycopg.connect(settings.database_url, autocommit=True) as conn:
            if args.verb == "clear-announcement":
                # Here, not at the top: `broker run` need not load an MQTT client library.
                from broker.left_base_topics import clear_announcement

                password = sys.stdin.readline().rstrip("\n")
                topic = clear_announcement(
                    conn, settings.mqtt, args.username, password, args.base_topic,
                    ca_file=settings.mqtt_ca_file or None,
                )  # fmt: skip
                print(f"cleared {topic}; base topic {args.base_topic} is free for any bridge")
                return 0
            if args.action == "set":
                try:
                    role = Role(args.role)
                except ValueError:
                    raise AdminError(
                        f"unknown role {args.role!r}; one of {', '.join(r.value for r in Role)}"
                    ) from None
                password = sys.stdin.readline().rstrip("\n")
                created = set_account(
                    conn,
                    args.username,
                    role,
                    password,
                    org_id=args.org,
                    label=args.label,
                    base_topic=args.base_topic,
                )
                print(f"broker account {args.username} {'created' if created else 'updated'}")
                return 0
            if not remove_account(conn, args.username):
                raise AdminError(f"no broker account {args.username!r}")
            print(f"broker account {args.username} removed")
            return 0
    except AdminError as error:
        print(f"carewatch broker: {error}", file=sys.stderr)
        return 2


def tls_listener(args: argparse.Namespace) -> TlsListener | None:
    """The TLS listener ``broker run``'s options ask for (``--tls-port`` and the files), if any."""
    if args.tls_port is None:
        return None
    return TlsListener(
        port=args.tls_port,
        host=args.tls_host,
        certfile=Path(args.certfile),
        keyfile=Path(args.keyfile),
        cafile=Path(args.cafile) if args.cafile else None,
    )
