"""The options of ``carewatch bench ingest``, checked (``tools.bench.add_ingest_arguments``
declares them)."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from tools.bench import workload
from tools.bench.publishers import PublisherKind

NAIVE_DEFAULT_MAX = 50_000


@dataclass(frozen=True, slots=True)
class Options:
    """The options of ``carewatch bench ingest``, checked."""

    events: int
    devices: int
    publishers: int
    naive_events: int
    publisher: PublisherKind
    skip: frozenset[str]
    json: bool
    keep: bool
    # The mixes, measured one after another; the first one's figures are the agreed keys.
    other_shares: tuple[float, ...] = (workload.REALISTIC_OTHER_SHARE,)
    repeat: int = 1
    gateways: int = 1

    @property
    def other_share(self) -> float:
        """The first mix: the one the agreed keys are about."""
        return self.other_shares[0]

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Options:
        """The options given on the command line; ValueError for values that cannot work."""
        # getattr: the CLI's parser may predate an option; add_ingest_arguments has them all.
        events: int = args.events
        naive = getattr(args, "naive_events", None)
        options = cls(
            events=events,
            devices=args.devices,
            publishers=args.publishers,
            naive_events=min(events, NAIVE_DEFAULT_MAX) if naive is None else min(naive, events),
            publisher=_publisher_kind(getattr(args, "publisher", "mqtt5")),
            skip=frozenset(getattr(args, "skip", None) or ()),
            json=args.json,
            keep=args.keep,
            other_shares=_shares(getattr(args, "other_share", None)),
            repeat=getattr(args, "repeat", 1),
            gateways=getattr(args, "gateways", 1),
        )
        most = workload.max_other_share(workload.make_devices(options.devices))
        if not all(0 <= share <= most for share in options.other_shares):
            raise ValueError(
                f"--other-share must be between 0 and {most:.2f} (alarm buttons, one device"
                " in four, send heartbeats only)"
            )
        if min(options.events, options.devices, options.publishers, options.naive_events) < 1:
            raise ValueError("--events, --devices, --publishers and --naive-events must be >= 1")
        if options.publishers > options.devices:
            raise ValueError("--publishers must not exceed --devices (each owns its devices)")
        if options.repeat < 1 or options.gateways < 1:
            raise ValueError("--repeat and --gateways must be >= 1")
        return options


def _shares(value: float | tuple[float, ...] | None) -> tuple[float, ...]:
    """One share (an older parser's float) or several; the realistic default for none."""
    if value is None:
        return (workload.REALISTIC_OTHER_SHARE,)
    if isinstance(value, float | int):
        return (float(value),)
    return tuple(value) or (workload.REALISTIC_OTHER_SHARE,)


def _publisher_kind(value: str) -> PublisherKind:
    if value == "mqtt5":
        return "mqtt5"
    if value == "mosquitto_pub":
        return "mosquitto_pub"
    raise ValueError(f"--publisher must be mqtt5 or mosquitto_pub, not {value!r}")
