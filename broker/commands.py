"""The ``carewatch broker ...`` subcommands: ``run`` (the broker with its identities in step),
``account set|remove`` (service accounts)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import psycopg

import broker.run
from broker.accounts import remove_account, set_account
from broker.auth_files import Role
from carewatch.errors import AdminError
from carewatch.settings import Settings


def run(settings: Settings, args: argparse.Namespace) -> int:
    """Run one ``carewatch broker`` subcommand; 0 on success, 2 if refused."""
    if args.verb == "run":
        return broker.run.run(settings.database_url, Path(args.dir), host=args.host, port=args.port)
    try:
        with psycopg.connect(settings.database_url, autocommit=True) as conn:
            if args.action == "set":
                try:
                    role = Role(args.role)
                except ValueError:
                    raise AdminError(
                        f"unknown role {args.role!r}; one of {', '.join(r.value for r in Role)}"
                    ) from None
                password = sys.stdin.readline().rstrip("\n")
                created = set_account(
                    conn, args.username, role, password, org_id=args.org, label=args.label
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
