"""Benchmarks: ``carewatch bench ingest|alerts|onboarding|dashboards|soak|supervision`` and their
pieces.

- ``workload``   the devices and the pre-encoded event envelopes every measurement shares
- ``publishers`` the publisher processes (mqtt5 over a raw socket, or ``mosquitto_pub -l``)
- ``limits``     what the broker and PostgreSQL can do alone (do-nothing subscribers, COPY)
- ``naive``      the bridge as people write it (paho callback, one INSERT per message)
- ``children``   subprocesses that always end with the benchmark, and their line protocol
- ``harness``    what every run shares: its directory, signals, services, HTTP client, report
- ``endpoints``  how clients reach the broker, and as whom (credentials kept off argv)
- ``errors``     why a run stopped
- ``ingest``     the run: start private instances, measure each part, print the comparison
                 (``ingest_options``, ``ingest_gateways``: one or several gateways,
                 ``ingest_report``: medians of the repetitions, the table and JSON)
- ``hardware``   the machine beside the figures: CPU model, the disk's fsync rate
- ``alerts``     publish to SSE latency of alerts under a paced background load
- ``onboarding`` a CSV of devices, from upload until the broker accepts every one
- ``dashboards`` the usage report over a backfilled year, against the same from raw events
- ``soak``       minutes of load through faults (``soak_services``, ``soak_faults``,
                 ``soak_publisher``, ``soak_stats``): lost, duplicated, latency, memory
- ``supervision`` a compressed night of planned camera checks: the watchdog's supervision
                 pass and how soon each missed check is alerted

This module stays light (argparse only) so that the CLI can describe the options without
importing the benchmark.
"""

from __future__ import annotations

import argparse

MEASUREMENTS = ("copy", "broker", "mosquitto_sub", "gateway", "naive")


def add_ingest_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``carewatch bench ingest``."""
    parser.add_argument("--events", type=int, default=200_000, help="events to publish (N)")
    parser.add_argument("--devices", type=int, default=1000, help="devices they come from")
    parser.add_argument("--publishers", type=int, default=4, help="publisher processes (P)")
    parser.add_argument(
        "--naive-events",
        type=int,
        help="events for the naive bridge, which is slow (default: min(N, 50000))",
    )
    parser.add_argument(
        "--other-share",
        type=_shares,
        metavar="SHARE[,SHARE...]",
        help="the mix: share of events that are not heartbeats, with alarm buttons sending "
        "heartbeats only (default 0.02, the simulator's fleet); several, comma-separated, are "
        "measured one after another (0.02,0.5: the default mix and a state-event storm)",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=3,
        help="repetitions of the gateway and limit measurements; the figures are medians "
        "(default 3)",
    )
    parser.add_argument(
        "--gateways",
        type=int,
        default=1,
        help="gateway processes on one shared subscription (default 1)",
    )
    parser.add_argument(
        "--publisher",
        choices=("mqtt5", "mosquitto_pub"),
        default="mqtt5",
        help="publisher program (default mqtt5: pre-encoded packets over a socket)",
    )
    parser.add_argument(
        "--skip",
        action="append",
        choices=MEASUREMENTS,
        default=[],
        help="leave out a measurement (repeatable); its numbers are null",
    )
    _add_output_arguments(parser)


def _shares(text: str) -> tuple[float, ...]:
    """``0.02`` or ``0.02,0.5``: the mixes of ``--other-share``."""
    try:
        return tuple(float(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not a comma-separated list of shares: {text!r}"
        ) from None


def add_alerts_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``carewatch bench alerts``."""
    parser.add_argument(
        "--rate", type=float, default=2000.0, help="background events per second (default 2000)"
    )
    parser.add_argument(
        "--duration", type=float, default=30.0, help="seconds of load and alerts (default 30)"
    )
    parser.add_argument(
        "--alerts",
        type=int,
        default=200,
        help="alert-triggering events, each opening a new alert on its own device (default 200)",
    )
    parser.add_argument(
        "--repeats",
        type=int,
        help="extra presses of alarm buttons pressed earlier in the run, each an alert.updated "
        "with count 2 (default: a tenth of --alerts)",
    )
    parser.add_argument(
        "--devices", type=int, default=1000, help="background devices (default 1000)"
    )
    parser.add_argument(
        "--publishers", type=int, default=2, help="background publisher processes (default 2)"
    )
    parser.add_argument(
        "--grace",
        type=float,
        default=10.0,
        help="seconds after the last publish that an alert may still arrive (default 10)",
    )
    _add_output_arguments(parser)


def add_onboarding_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``carewatch bench onboarding``."""
    parser.add_argument("--devices", type=int, default=1000, help="devices per CSV file (N)")
    parser.add_argument("--runs", type=int, default=3, help="files, one after another")
    _add_output_arguments(parser, log_level=False)


def add_dashboards_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``carewatch bench dashboards``."""
    parser.add_argument("--days", type=int, default=365, help="days of backfilled history")
    parser.add_argument("--devices", type=int, default=1000, help="backfilled devices")
    parser.add_argument("--seed", type=int, default=1, help="the backfill's seed")
    parser.add_argument(
        "--requests",
        type=int,
        default=20,
        help="GET /api/v1/usage per view; the first is a warm-up and not counted (default 20)",
    )
    parser.add_argument(
        "--raw-runs", type=int, default=3, help="runs of the raw-events SQL per view (default 3)"
    )
    parser.add_argument(
        "--database-url",
        help="measure an existing, already backfilled database instead (no private instance,"
        " no backfill; the report covers the demo organisation)",
    )
    _add_output_arguments(parser)


def add_soak_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``carewatch bench soak``."""
    parser.add_argument(
        "--minutes", type=float, default=5.0, help="minutes of load and faults (default 5)"
    )
    parser.add_argument(
        "--rate", type=float, default=2000.0, help="background events per second (default 2000)"
    )
    parser.add_argument(
        "--sse-clients", type=int, default=4, help="alert stream clients (default 4)"
    )
    parser.add_argument(
        "--fault-every",
        type=float,
        default=50.0,
        help="seconds between faults, the five kinds in turn (default 50)",
    )
    parser.add_argument("--no-faults", action="store_true", help="a baseline: no faults")
    parser.add_argument(
        "--alarms-per-s",
        type=float,
        default=2.0,
        help="alarm presses per second, each on a button of its own (default 2)",
    )
    parser.add_argument(
        "--devices",
        type=int,
        default=1000,
        help="background devices, at least (more when the presses need buttons; default 1000)",
    )
    parser.add_argument(
        "--subscription",
        choices=("shared", "plain"),
        default="shared",
        help="the gateways' subscription: shared (default; they split the load) or plain "
        "(each gets every message)",
    )
    _add_output_arguments(parser)


def add_supervision_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``carewatch bench supervision``."""
    parser.add_argument(
        "--residences", type=int, default=10_000, help="residences, a camera each (default 10000)"
    )
    parser.add_argument(
        "--per-site", type=int, default=100, help="residences per site (default 100)"
    )
    parser.add_argument(
        "--checks", type=int, default=3, help="planned checks per residence (default 3)"
    )
    parser.add_argument(
        "--window",
        type=int,
        default=60,
        help="seconds either side of a planned time, also the retry (default 60, the least a "
        "plan allows)",
    )
    parser.add_argument(
        "--spacing",
        type=int,
        help="seconds between check times (default 2 x --window + 30: windows never overlap)",
    )
    parser.add_argument(
        "--lead", type=int, default=30, help="seconds until the first check time (default 30)"
    )
    parser.add_argument(
        "--missed", type=float, default=0.1, help="share of checks missed (default 0.1)"
    )
    parser.add_argument(
        "--not-seen",
        type=float,
        default=0.05,
        help="share of checks not seen, with no retry: a visit is needed (default 0.05)",
    )
    parser.add_argument("--seed", type=int, default=1, help="the outcomes' seed (default 1)")
    parser.add_argument(
        "--grace",
        type=float,
        default=30.0,
        help="seconds after the last window's end that alerts may still open (default 30)",
    )
    _add_output_arguments(parser)


def _add_output_arguments(parser: argparse.ArgumentParser, *, log_level: bool = True) -> None:
    """What every benchmark has: its JSON line, its directory kept, its log level."""
    parser.add_argument(
        "--json", action="store_true", help="print one JSON object as the last line"
    )
    parser.add_argument("--keep", action="store_true", help="keep the private instances' directory")
    if log_level:
        parser.add_argument("--log-level", default="WARNING")
