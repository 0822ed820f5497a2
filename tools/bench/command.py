"""``carewatch bench BENCH ...``: the benchmarks' own command line, loaded only when asked for."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from tools.bench import (
    add_alerts_arguments,
    add_dashboards_arguments,
    add_ingest_arguments,
    add_onboarding_arguments,
    add_soak_arguments,
    add_supervision_arguments,
)
from tools.bench.harness import configure_logging


def build_parser() -> argparse.ArgumentParser:
    """``carewatch bench`` with one subcommand per benchmark."""
    parser = argparse.ArgumentParser(prog="carewatch bench", description="the benchmarks")
    benches = parser.add_subparsers(dest="bench", required=True, metavar="BENCH")
    p = benches.add_parser("ingest", help="gateway vs naive bridge vs broker and COPY limits")
    add_ingest_arguments(p)
    p = benches.add_parser("alerts", help="publish to SSE latency of alerts under background load")
    add_alerts_arguments(p)
    p = benches.add_parser("onboarding", help="a CSV of N devices until all can connect")
    add_onboarding_arguments(p)
    p = benches.add_parser(
        "dashboards", help="GET /api/v1/usage on a backfilled year against raw events"
    )
    add_dashboards_arguments(p)
    p = benches.add_parser("soak", help="minutes of load through faults: lost, latency, memory")
    add_soak_arguments(p)
    p = benches.add_parser(
        "supervision",
        help="a compressed night of planned camera checks: the watchdog's pass, missed checks",
    )
    add_supervision_arguments(p)
    return parser


def main(argv: Sequence[str]) -> int:
    """Run one benchmark; its module is imported only now."""
    args = build_parser().parse_args(argv)
    configure_logging(getattr(args, "log_level", "INFO"))
    if args.bench == "onboarding":
        from tools.bench import onboarding

        return onboarding.run(args)
    if args.bench == "alerts":
        from tools.bench import alerts

        return alerts.run(args)
    if args.bench == "dashboards":
        from tools.bench import dashboards

        return dashboards.run(args)
    if args.bench == "soak":
        from tools.bench import soak

        return soak.run(args)
    if args.bench == "supervision":
        from tools.bench import supervision

        return supervision.run(args)
    from tools.bench import ingest

    return ingest.run(args)
