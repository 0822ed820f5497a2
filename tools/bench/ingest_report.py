"""The report of ``carewatch bench ingest``: its JSON object and its table, from the results.

Each repetition is a fraction of its own limits (the gateway's rate over the smaller of that
repetition's broker and COPY limits); the agreed keys (``gateway_eps``, ``fraction_of_limit``,
...) are the first mix's medians over the repetitions, so that a consumer of one run's figures
reads a run of three the same way. ``repetitions`` holds each one's figures, ``mixes`` the
same for every mix of the run, and ``machine`` what they were measured on.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from statistics import median
from typing import Any

from tools.bench.ingest_options import Options
from tools.bench.publishers import PublishReport

SUBSCRIBERS = ("broker", "mosquitto_sub")
TITLES = {
    "gateway": "(a) gateway, end to end",
    "naive": "(b) naive bridge (paho, INSERT each)",
    "broker": "(c) broker limit: mqtt5 subscriber",
    "mosquitto_sub": "(c) broker limit: mosquitto_sub",
    "copy": "(c) COPY limit",
}
_REPEATED = ("gateway", "broker", "mosquitto_sub", "copy")


@dataclass(frozen=True, slots=True)
class Measurement:
    """One part's result: how many events it moved in how many seconds."""

    name: str
    events: int  # what it was asked to move
    elapsed_s: float
    delivered: int  # rows stored or messages received at the end
    note: str = ""
    # The gateway's: the events each gateway process stored (its events_stored counter).
    per_gateway: tuple[int, ...] = ()

    @property
    def eps(self) -> float:
        """Events per second."""
        return self.events / self.elapsed_s


@dataclass(slots=True)
class Results:
    """One repetition's measurements (or the naive bridge's), and what the publishers did."""

    measurements: dict[str, Measurement] = field(default_factory=dict)
    publish: dict[str, PublishReport] = field(default_factory=dict)

    def eps(self, name: str) -> float | None:
        """Events per second of the part ``name``; None if it was skipped."""
        measurement = self.measurements.get(name)
        return measurement.eps if measurement else None


@dataclass(slots=True)
class MixResults:
    """One mix: the share of state events asked for, the event types it gave, its repetitions."""

    other_share: float
    event_types: Mapping[str, int]
    repetitions: list[Results] = field(default_factory=list)

    @property
    def not_heartbeat_share(self) -> float:
        """The share of the generated events that are not heartbeats."""
        total = sum(self.event_types.values())
        return 1 - self.event_types.get("heartbeat", 0) / total if total else 0.0


@dataclass(slots=True)
class RunResults:
    """Every mix of the run, and the naive bridge (measured once, on the first mix)."""

    mixes: list[MixResults] = field(default_factory=list)
    naive: Results = field(default_factory=Results)


@dataclass(frozen=True, slots=True)
class Figures:
    """One repetition's rates and the fraction of the limit they give."""

    gateway: float | None
    broker: float | None
    broker_source: str | None
    copy: float | None

    @classmethod
    def of(cls, results: Results) -> Figures:
        """The figures of a repetition: the broker limit is the faster do-nothing subscriber."""
        subscribers = {name: eps for name in SUBSCRIBERS if (eps := results.eps(name)) is not None}
        source = max(subscribers, key=subscribers.__getitem__) if subscribers else None
        return cls(
            results.eps("gateway"),
            subscribers[source] if source else None,
            source,
            results.eps("copy"),
        )

    @property
    def fraction(self) -> float | None:
        """The gateway's rate over the smaller limit."""
        if self.gateway is None or self.broker is None or self.copy is None:
            return None
        return self.gateway / min(self.broker, self.copy)


def median_of(values: Iterable[float | None]) -> float | None:
    """The median of the values that exist; None if none does."""
    present = [value for value in values if value is not None]
    return median(present) if present else None


def gateway_shares(repetitions: Sequence[Results]) -> list[float] | None:
    """Each gateway's share of the events it stored, over ``repetitions``; None if unknown."""
    counts = [
        m.per_gateway
        for results in repetitions
        if (m := results.measurements.get("gateway")) is not None and m.per_gateway
    ]
    if not counts:
        return None
    totals = [sum(column) for column in zip(*counts, strict=True)]
    everything = sum(totals)
    return [round(total / everything, 3) if everything else 0.0 for total in totals]


# --- JSON -----------------------------------------------------------------------------------------


def repetition_json(results: Results) -> dict[str, Any]:
    """One repetition's figures."""
    figures = Figures.of(results)
    gateway = results.measurements.get("gateway")
    return {
        "gateway_eps": _round(figures.gateway),
        "broker_limit_eps": _round(figures.broker),
        "broker_limit_source": figures.broker_source,
        "copy_limit_eps": _round(figures.copy),
        "fraction_of_limit": _round3(figures.fraction),
        "mqtt5_subscriber_eps": _round(results.eps("broker")),
        "mosquitto_sub_eps": _round(results.eps("mosquitto_sub")),
        "gateway_events": list(gateway.per_gateway) if gateway and gateway.per_gateway else None,
        "gateway_shares": gateway_shares([results]),
        "delivered": {name: m.delivered for name, m in results.measurements.items()},
        "seconds": {name: round(m.elapsed_s, 3) for name, m in results.measurements.items()},
        "publish_eps": {name: _round(report.eps) for name, report in results.publish.items()},
    }


def mix_json(mix: MixResults, naive_eps: float | None) -> dict[str, Any]:
    """One mix: what it is, its medians, and its repetitions."""
    figures = [Figures.of(results) for results in mix.repetitions]
    gateway = median_of(f.gateway for f in figures)
    return {
        "other_share": mix.other_share,
        "not_heartbeat_share": round(mix.not_heartbeat_share, 4),
        "event_types": dict(sorted(mix.event_types.items())),
        "gateway_eps": _round(gateway),
        "broker_limit_eps": _round(median_of(f.broker for f in figures)),
        "copy_limit_eps": _round(median_of(f.copy for f in figures)),
        "fraction_of_limit": _round3(median_of(f.fraction for f in figures)),
        "speedup_vs_naive": round(gateway / naive_eps, 2) if gateway and naive_eps else None,
        "gateway_shares": gateway_shares(mix.repetitions),
        "repetitions": [repetition_json(results) for results in mix.repetitions],
    }


def summary(options: Options, run: RunResults, facts: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON object: the agreed keys first (the first mix's medians), then what explains
    them."""
    first = run.mixes[0]
    naive = run.naive.eps("naive")
    mixes = [mix_json(mix, naive) for mix in run.mixes]
    head = mixes[0]
    repetitions = first.repetitions
    sources = Counter(f.broker_source for r in repetitions if (f := Figures.of(r)).broker_source)
    every = [*repetitions, run.naive]
    return {
        "events": options.events,
        "other_share": first.other_share,
        "gateway_eps": head["gateway_eps"],
        "naive_eps": _round(naive),
        "broker_limit_eps": head["broker_limit_eps"],
        "copy_limit_eps": head["copy_limit_eps"],
        "speedup_vs_naive": head["speedup_vs_naive"],
        "fraction_of_limit": head["fraction_of_limit"],
        "devices": options.devices,
        "publishers": options.publishers,
        "publisher": options.publisher,
        "naive_events": options.naive_events,
        "repeat": options.repeat,
        "gateways": options.gateways,
        "not_heartbeat_share": head["not_heartbeat_share"],
        "broker_limit_source": sources.most_common(1)[0][0] if sources else None,
        "mqtt5_subscriber_eps": _round(median_of(r.eps("broker") for r in repetitions)),
        "mosquitto_sub_eps": _round(median_of(r.eps("mosquitto_sub") for r in repetitions)),
        # The least of the repetitions: a loss in any of them shows.
        "delivered": _per_part(every, lambda m: m.delivered, min),
        "seconds": {
            name: round(seconds, 3)
            for name, seconds in _per_part(every, lambda m: m.elapsed_s, median).items()
        },
        "publish_eps": {
            name: _round(median_of(r.publish[name].eps for r in every if name in r.publish))
            for name in _parts(r.publish for r in every)
        },
        # The broker's Receive Maximum for the publishers (0: mosquitto_pub does not say).
        "publisher_receive_max": min(
            (p.receive_max for r in every for p in r.publish.values() if p.receive_max),
            default=None,
        ),
        "gateway_shares": head["gateway_shares"],
        "repetitions": head["repetitions"],
        "mixes": mixes,
        **facts,
    }


def _parts(dicts: Iterable[Mapping[str, Any]]) -> list[str]:
    names: dict[str, None] = {}
    for entry in dicts:
        names.update(dict.fromkeys(entry))
    return list(names)


def _per_part(
    every: Sequence[Results],
    value: Callable[[Measurement], float],
    combine: Callable[[list[float]], float],
) -> dict[str, float]:
    return {
        name: combine([value(r.measurements[name]) for r in every if name in r.measurements])
        for name in _parts(r.measurements for r in every)
    }


def _round(value: float | None) -> float | None:
    return round(value, 1) if value is not None else None


def _round3(value: float | None) -> float | None:
    return round(value, 3) if value is not None else None


# --- the table ------------------------------------------------------------------------------------


def mix_line(mix: MixResults) -> str:
    """What a mix is, in words: asked share, and the event types it gave."""
    total = sum(mix.event_types.values()) or 1
    families: Counter[str] = Counter()
    for event_type, count in mix.event_types.items():
        families[event_type.split(".")[0]] += count
    parts = ", ".join(f"{family} {count / total:.1%}" for family, count in families.most_common())
    return (
        f"--other-share {mix.other_share:g}: {mix.not_heartbeat_share:.1%} of the events are "
        f"state events, not heartbeats ({parts}; alarm buttons send heartbeats only)"
    )


def machine_lines(data: Mapping[str, Any]) -> list[str]:
    """The machine beside the figures: CPU, cores, the disk's fsync rate, the servers."""
    machine = data["machine"]
    fsync = machine.get("fsync") or {}
    rate = fsync.get("fdatasync_ops_per_s")
    if rate is not None:
        disk = (
            f"fdatasync {rate:,.0f} ops/s (pg_test_fsync -s {fsync['seconds_per_test']} on "
            f"the PostgreSQL data directory's {fsync.get('filesystem') or '?'} filesystem)"
        )
    else:
        disk = f"fdatasync rate unknown ({fsync.get('note') or 'not measured'})"
    settings = ", ".join(f"{k}={v}" for k, v in data["postgres_settings"].items())
    return [
        f"Machine: {machine.get('cpu_model') or 'CPU model unknown'}, {machine['cpus']} CPUs "
        f"({machine.get('cpus_available')} available to the run, shared by all); {disk}",
        f"PostgreSQL {machine['postgres']} ({settings}; the same for every measurement), "
        f"Mosquitto {machine['mosquitto']} (shipped configuration, fresh per measurement)",
    ]


def render_table(options: Options, run: RunResults, data: Mapping[str, Any]) -> str:
    """The human-readable report of :func:`summary`'s result."""
    gateways = f"{options.gateways} gateway" + (
        "s on one shared subscription" if options.gateways > 1 else ""
    )
    lines = [
        f"Carewatch ingest benchmark: {options.events} events from {options.devices} devices, "
        f"{options.publishers} {options.publisher} publishers at QoS 1, {gateways}, "
        f"{options.repeat} repetition{'s' if options.repeat > 1 else ''} of each measurement",
        *machine_lines(data),
    ]
    for number, (mix, figures) in enumerate(zip(run.mixes, data["mixes"], strict=True), 1):
        lines += ["", f"Mix {number} of {len(run.mixes)}, {mix_line(mix)}"]
        lines += _mix_table(mix, figures)
    naive = run.naive.measurements.get("naive")
    lines += [""]
    if naive is None:
        lines.append(f"{TITLES['naive']:<40} skipped")
    else:
        lines.append(
            f"{TITLES['naive']:<40} {naive.eps:>10,.0f} events/s  ({naive.events} events of "
            f"mix 1, {naive.elapsed_s:.2f} s){f'; {naive.note}' if naive.note else ''}"
        )
    speedup = data["speedup_vs_naive"]
    fraction = data["fraction_of_limit"]
    median_of_k = f"median of {options.repeat}" if options.repeat > 1 else "one repetition"
    lines += [
        f"{'speedup vs naive (gateway / naive)':<40} {f'{speedup:.2f}x' if speedup else '-'}"
        f" (mix 1, gateway {median_of_k})",
        f"{'fraction of limit (gateway / min limit)':<40} {fraction if fraction else '-'}"
        f" (mix 1, {median_of_k} per-repetition fractions)",
    ]
    return "\n".join(lines)


def _mix_table(mix: MixResults, figures: Mapping[str, Any]) -> list[str]:
    """Events/s of every repetition and their median, one row per measurement."""
    count = len(mix.repetitions)
    header = "".join(f"{f'rep {n}':>10}" for n in range(1, count + 1))
    lines = [f"{'events/s':<40}{header}{'median':>10}"]
    for name in _REPEATED:
        values = [results.eps(name) for results in mix.repetitions]
        if all(value is None for value in values):
            lines.append(f"{TITLES[name]:<40}{'skipped':>10}")
            continue
        cells = "".join(f"{_cell(value):>10}" for value in values)
        lines.append(f"{TITLES[name]:<40}{cells}{_cell(median_of(values)):>10}")
    fractions = [Figures.of(results).fraction for results in mix.repetitions]
    cells = "".join(f"{_cell(value, 3):>10}" for value in fractions)
    lines.append(f"{'fraction of limit':<40}{cells}{_cell(figures['fraction_of_limit'], 3):>10}")
    shares = [repetition_json(results)["gateway_shares"] for results in mix.repetitions]
    if any(share and len(share) > 1 for share in shares):
        cells = "".join(f"{_shares_cell(share):>10}" for share in shares)
        overall = _shares_cell(figures["gateway_shares"])
        lines.append(f"{'each gateway share of the events (%)':<40}{cells}{overall:>10}")
    return lines


def _cell(value: float | None, decimals: int = 0) -> str:
    if value is None:
        return "-"
    return f"{value:.{decimals}f}" if decimals else f"{value:,.0f}"


def _shares_cell(shares: Sequence[float] | None) -> str:
    return "/".join(f"{share:.0%}".rstrip("%") for share in shares) if shares else "-"
