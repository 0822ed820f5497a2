"""The soak's arithmetic, apart from its processes: fault windows, latency by window, memory trend.

Pure functions over recorded samples, so that what the report claims can be checked by hand:

- a :class:`FaultWindow` runs from the fault's injection to the moment the service was healthy
  again (see ``soak_faults``); a latency sample is *inside* when its journey, from publish to
  arrival, overlaps one: an alert in flight when the fault struck was delayed by it;
- :func:`latency_by_window` splits publish→SSE latencies that way (nearest-rank percentiles,
  the ``alerts`` benchmark's);
- :func:`memory_trend` fits a least-squares line through one process's RSS samples after its
  warm-up: its slope (MB/hour) and the growth it implies over the sampled time, less noisy than
  comparing two single samples;
- :func:`round_peaks` takes the highest RSS of each *round* (the five faults once each): a
  process that holds a backlog through a fault keeps that memory (freed objects do not give
  their arenas back), a step the line above reads as growth. The same step in every round is
  a working set; a peak that rises from round to round is a leak.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from tools.bench.alerts import percentile

_KIB_PER_MB = 1024.0
_S_PER_HOUR = 3600.0


@dataclass(frozen=True, slots=True)
class FaultWindow:
    """One injected fault: what, and from when to when (``time.time()``) it disturbed the run."""

    kind: str
    target: str
    started_at: float
    recovered_at: float  # the broken part answers again
    ended_at: float  # an alarm published after recovery reached the SSE clients
    note: str = ""

    def contains(self, moment: float) -> bool:
        """Whether ``moment`` falls in the window."""
        return self.started_at <= moment <= self.ended_at

    def overlaps(self, published_at: float, arrived_at: float | None) -> bool:
        """Whether a journey from ``published_at`` to ``arrived_at`` (never: None) met the
        window: published inside it, or still in flight when it began."""
        end = float("inf") if arrived_at is None else arrived_at
        return published_at <= self.ended_at and end >= self.started_at

    def as_dict(self, run_started_at: float) -> dict[str, Any]:
        """For the JSON: offsets from the start of the run, in seconds."""
        return {
            "kind": self.kind,
            "target": self.target,
            "at_s": round(self.started_at - run_started_at, 1),
            "recovered_s": round(self.recovered_at - self.started_at, 2),
            "end_to_end_s": round(self.ended_at - self.started_at, 2),
            "note": self.note,
        }


def disturbed(
    windows: Sequence[FaultWindow], published_at: float, arrived_at: float | None
) -> bool:
    """Whether a journey met one of ``windows`` (see :meth:`FaultWindow.overlaps`)."""
    return any(window.overlaps(published_at, arrived_at) for window in windows)


def latency_stats(latencies_ms: Iterable[float]) -> dict[str, Any]:
    """Count, p50, p99 and max of some latencies (ms); None where there are none."""
    ordered = sorted(latencies_ms)
    if not ordered:
        return {"samples": 0, "p50_ms": None, "p99_ms": None, "max_ms": None}
    return {
        "samples": len(ordered),
        "p50_ms": round(percentile(ordered, 0.5), 1),
        "p99_ms": round(percentile(ordered, 0.99), 1),
        "max_ms": round(ordered[-1], 1),
    }


def latency_by_window(
    samples: Iterable[tuple[float, float | None]], windows: Sequence[FaultWindow]
) -> dict[str, dict[str, Any]]:
    """``(published_at, arrived_at or None)`` pairs split into ``outside`` and ``inside`` fault
    windows by whether the journey met one: each with its latency statistics and how many
    never arrived (one that never arrived is inside once a window opened after its publish)."""
    latencies: dict[str, list[float]] = {"outside": [], "inside": []}
    missing = {"outside": 0, "inside": 0}
    for published_at, arrived_at in samples:
        where = "inside" if disturbed(windows, published_at, arrived_at) else "outside"
        if arrived_at is None:
            missing[where] += 1
        else:
            latencies[where].append((arrived_at - published_at) * 1000.0)
    return {
        where: {**latency_stats(values), "never_arrived": missing[where]}
        for where, values in latencies.items()
    }


def slowest_outside(
    samples: Iterable[tuple[float, float | None]],
    windows: Sequence[FaultWindow],
    run_started_at: float,
    count: int = 10,
) -> list[dict[str, Any]]:
    """The ``count`` slowest samples outside every fault window: when each was published (from
    the start of the run) and how long after the last window before it ended, and of what kind.
    Tells a backlog still draining after a fault from a slow moment of its own."""
    outside = [
        (arrived_at - published_at, published_at)
        for published_at, arrived_at in samples
        if arrived_at is not None and not disturbed(windows, published_at, arrived_at)
    ]
    slowest = sorted(outside, reverse=True)[:count]
    rows: list[dict[str, Any]] = []
    for latency_s, published_at in slowest:
        before = [w for w in windows if w.ended_at < published_at]
        last = max(before, key=lambda w: w.ended_at, default=None)
        rows.append(
            {
                "latency_ms": round(latency_s * 1000.0, 1),
                "at_s": round(published_at - run_started_at, 1),
                "after_fault": last.kind if last else None,
                "after_window_s": round(published_at - last.ended_at, 1) if last else None,
            }
        )
    return rows


@dataclass(frozen=True, slots=True)
class RssSample:
    """One reading of a process's resident memory."""

    at: float  # time.time()
    pid: int
    rss_kib: int


def memory_trend(
    samples: Sequence[RssSample], warm_up_until: float, warm_up_s: float
) -> dict[str, Any]:
    """Start, end, slope and growth of the samples of the process that ran last (its pid at the
    end), from ``warm_up_until`` on, or ``warm_up_s`` after its first sample if it was started
    later (a process started again after a fault warms up again).

    ``start_mb`` and ``end_mb`` are the fitted line's values at the first and the last sample;
    ``growth_pct`` their ratio. ``restarts`` counts the other pids seen (a process killed by a
    fault and started again begins a new series).
    """
    if not samples:
        return {"samples": 0}
    last_pid = samples[-1].pid
    restarts = len({sample.pid for sample in samples}) - 1
    series = [s for s in samples if s.pid == last_pid]
    warm_from = max(warm_up_until, series[0].at + warm_up_s)
    after = [s for s in series if s.at >= warm_from] or series[-1:]
    slope_kib_s, intercept = _least_squares([(s.at, float(s.rss_kib)) for s in after])
    first, last = after[0].at, after[-1].at
    start_kib = intercept + slope_kib_s * first
    end_kib = intercept + slope_kib_s * last
    return {
        "samples": len(after),
        "pid": last_pid,
        "restarts": restarts,
        "sampled_s": round(last - first, 1),
        "first_mb": round(after[0].rss_kib / _KIB_PER_MB, 1),
        "last_mb": round(after[-1].rss_kib / _KIB_PER_MB, 1),
        "start_mb": round(start_kib / _KIB_PER_MB, 1),
        "end_mb": round(end_kib / _KIB_PER_MB, 1),
        "slope_mb_per_h": round(slope_kib_s * _S_PER_HOUR / _KIB_PER_MB, 2),
        "growth_pct": round((end_kib / start_kib - 1) * 100, 1) if start_kib > 0 else None,
    }


def round_peaks(
    samples: Sequence[RssSample], first_round_at: float, round_s: float, ended_at: float
) -> dict[str, Any]:
    """The highest RSS (MB) of each whole round ``[first_round_at + k * round_s, + round_s)``
    up to ``ended_at``, whichever process filled the role then, and the growth of the last
    round's peak over the second's: the first round is the warm-up (every fault once).
    ``peak_growth_pct`` is None with fewer than three whole rounds."""
    rounds = int((ended_at - first_round_at) // round_s) if round_s > 0 else 0
    peaks: list[float] = []
    for number in range(max(rounds, 0)):
        start = first_round_at + number * round_s
        inside = [s.rss_kib for s in samples if start <= s.at < start + round_s]
        if inside:
            peaks.append(round(max(inside) / _KIB_PER_MB, 1))
    growth = (
        round((peaks[-1] / peaks[1] - 1) * 100, 1) if len(peaks) >= 3 and peaks[1] > 0 else None
    )
    return {"round_peaks_mb": peaks, "peak_growth_pct": growth}


def _least_squares(points: Sequence[tuple[float, float]]) -> tuple[float, float]:
    """Slope and intercept of the least-squares line; a flat line through one point."""
    n = len(points)
    mean_x = sum(x for x, _ in points) / n
    mean_y = sum(y for _, y in points) / n
    spread = sum((x - mean_x) ** 2 for x, _ in points)
    if spread == 0:
        return 0.0, mean_y
    slope = sum((x - mean_x) * (y - mean_y) for x, y in points) / spread
    return slope, mean_y - slope * mean_x


def read_rss_kib(pid: int) -> int | None:
    """``VmRSS`` of ``/proc/<pid>/status`` in KiB; None when the process is gone."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return None
