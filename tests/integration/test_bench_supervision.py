"""``carewatch bench supervision``: the night it plans, and a small run end to end."""

from __future__ import annotations

import itertools
import json
import tempfile
from pathlib import Path

import pytest

from app.cli import main
from tools.bench import supervision
from tools.bench.command import build_parser

AGREED_KEYS = {
    "residences",
    "checks",
    "passes",
    "pass_p50_s",
    "pass_p99_s",
    "pass_max_s",
    "missed_expected",
    "missed_alerted",
    "missed_p50_s",
    "missed_p99_s",
    "missed_max_s",
    "missed_over_10s",
    "duplicates",
}


def _options(*argv: str) -> supervision.Options:
    return supervision.Options.from_args(build_parser().parse_args(["supervision", *argv]))


def test_defaults_are_the_issues_night() -> None:
    """10,000 residences, 3 checks, windows of ±60 s that never overlap."""
    options = _options()
    assert (options.residences, options.checks, options.window_s) == (10_000, 3, 60)
    assert options.spacing_s == 150
    assert options.sites == 100


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        pytest.param(("--window", "30"), "--window", id="window-shorter-than-plans-allow"),
        pytest.param(("--spacing", "80"), "--spacing", id="events-would-fall-in-two-windows"),
        pytest.param(("--missed", "0.7", "--not-seen", "0.4"), "shares", id="shares-over-one"),
        pytest.param(("--lead", "5"), "--lead", id="no-time-for-the-first-checks"),
    ],
)
def test_options_that_cannot_work_are_refused(argv: tuple[str, ...], message: str) -> None:
    """Each refused with a message naming the option."""
    with pytest.raises(ValueError, match=message):
        _options(*argv)


def test_a_residence_once_missed_is_never_not_seen() -> None:
    """A not-seen after a missed check would be taken for its retry: the night avoids it."""
    night = supervision.outcomes(_options("--residences", "2000", "--missed", "0.3"))
    for row in night:
        if "missed" in row:
            assert "not_seen" not in row[row.index("missed") :]
    outcomes = {outcome for row in night for outcome in row}
    assert outcomes == {"seen", "not_seen", "missed"}


def test_schedule_sends_each_check_inside_its_own_window_only() -> None:
    """Outcomes 20 to 2 s before their planned time, none for a missed check; a heartbeat per
    camera each minute; all in time order."""
    options = _options("--residences", "40", "--missed", "0.25")
    night = supervision.outcomes(options)
    planned = [1000.0 + n * options.spacing_s for n in range(options.checks)]
    sends = supervision.schedule(night, planned, 900.0, planned[-1] + 60)
    assert [s.at for s in sends] == sorted(s.at for s in sends)
    checks = [s for s in sends if s.check >= 0]
    assert len(checks) == sum(1 for row in night for outcome in row if outcome != "missed")
    for send in checks:
        assert planned[send.check] - 20 <= send.at <= planned[send.check] - 2
        assert send.outcome == night[send.residence][send.check]
        windows = [n for n, at in enumerate(planned) if at - 60 <= send.at <= at + 60]
        assert windows == [send.check]
    beats = [s for s in sends if s.check < 0]
    assert {s.residence for s in beats} == set(range(40))
    first_beats = [s.at for s in beats if s.residence == 7]
    assert all(b - a == pytest.approx(60.0) for a, b in itertools.pairwise(first_beats))


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_small_run_alerts_every_missed_check_once(
    postgres_base_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """50 residences, 2 checks 90 s apart: every missed check and every visit needed opens
    exactly one alert, within 10 s of when it fell due, and nothing else opens."""
    monkeypatch.setattr(tempfile, "tempdir", str(postgres_base_dir))

    code = main(
        [
            "bench",
            "supervision",
            "--residences",
            "50",
            "--per-site",
            "20",
            "--checks",
            "2",
            "--spacing",
            "90",
            "--lead",
            "25",
            "--missed",
            "0.2",
            "--not-seen",
            "0.1",
            "--grace",
            "20",
            "--json",
        ]
    )

    out = capsys.readouterr().out
    assert code == 0, out
    result = json.loads(out.strip().splitlines()[-1])
    assert result.keys() >= AGREED_KEYS
    assert (result["residences"], result["checks"], result["sites"]) == (50, 100, 3)
    assert result["missed_expected"] == result["missed_alerted"] > 0
    assert result["visit_expected"] == result["visit_alerted"] > 0
    assert result["duplicates"] == result["unexpected"] == 0
    assert result["missed_unheard"] == result["visit_unheard"] == 0
    assert 0 < result["missed_p50_s"] <= result["missed_p99_s"] <= result["missed_max_s"] < 10
    assert result["missed_over_10s"] == result["visit_over_10s"] == 0
    assert result["passes"] > 0
    assert 0 < result["pass_p50_s"] <= result["pass_p99_s"] <= result["pass_max_s"]
    assert all(value is not None for value in result["deciding_pass_s"])
    assert result["unrouted"] == 0
    assert len(result["load_1m"]) == 2
    # Every check judged and stored; the missed ones seen on the next check turn late.
    assert sum(result["check_states"].values()) == 100
    assert not list(postgres_base_dir.glob("carewatch-bench-supervision-*"))
