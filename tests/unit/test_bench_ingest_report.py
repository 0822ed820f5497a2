"""``carewatch bench ingest``'s options, its report's medians and the machine facts it parses
(pure logic; the integration test runs the bench)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from tools.bench import hardware, workload
from tools.bench.command import build_parser
from tools.bench.ingest_options import Options
from tools.bench.ingest_report import (
    Measurement,
    MixResults,
    Results,
    RunResults,
    render_table,
    summary,
)

EVENTS = 1000


def options(*argv: str) -> Options:
    return Options.from_args(build_parser().parse_args(["ingest", *argv]))


def test_defaults_are_one_mix_three_repetitions_one_gateway() -> None:
    default = options()
    assert (default.other_shares, default.repeat, default.gateways) == ((0.02,), 3, 1)
    assert default.other_share == 0.02


def test_several_mixes_are_one_comma_separated_option() -> None:
    chosen = options("--other-share", "0.02,0.5", "--repeat", "2", "--gateways", "2")
    assert (chosen.other_shares, chosen.repeat, chosen.gateways) == ((0.02, 0.5), 2, 2)
    assert chosen.other_share == 0.02  # the agreed keys are about the first


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (("--other-share", "0.02,1.5"), "--other-share"),
        (("--other-share", "0.8"), "alarm buttons"),
        (("--repeat", "0"), "--repeat"),
        (("--gateways", "0"), "--gateways"),
    ],
)
def test_values_that_cannot_work_are_refused(argv: tuple[str, ...], says: str) -> None:
    with pytest.raises(ValueError, match=says):
        options(*argv)


@pytest.mark.parametrize("share", [0.0, 0.02, 0.5, 0.75])
@pytest.mark.parametrize("devices", [4, 1000])
def test_the_workload_has_the_share_of_state_events_asked_for(share: float, devices: int) -> None:
    """Alarm buttons send heartbeats only, so the other kinds make up for them: ``0.5`` is
    half of all events, not half of three quarters."""
    events = workload.make_workload(
        events=20_000, devices=devices, publishers=1, now=datetime.now(UTC), other_share=share
    ).events
    measured = sum(event.type != "heartbeat" for event in events) / len(events)
    assert measured == pytest.approx(share, abs=0.01)


def test_a_share_that_is_no_number_is_a_usage_error() -> None:
    with pytest.raises(SystemExit):
        options("--other-share", "0.02,half")


def repetition(gateway_s: float, copy_s: float, per_gateway: tuple[int, ...]) -> Results:
    results = Results()
    for name, seconds in (("copy", copy_s), ("broker", 0.02), ("mosquitto_sub", 0.04)):
        results.measurements[name] = Measurement(name, EVENTS, seconds, EVENTS)
    results.measurements["gateway"] = Measurement(
        "gateway", EVENTS, gateway_s, EVENTS, per_gateway=per_gateway
    )
    return results


def run_of(*repetitions: Results) -> RunResults:
    run = RunResults()
    types = {"heartbeat": 985, "lock.locked": 15}
    run.mixes.append(MixResults(0.02, types, list(repetitions)))
    run.naive.measurements["naive"] = Measurement("naive", EVENTS, 1.0, EVENTS)
    return run


FACTS = {
    "machine": {
        "cpu_model": "Test CPU",
        "cpus": 2,
        "cpus_available": 2,
        "postgres": "15",
        "mosquitto": "2.0",
        "fsync": {"fdatasync_ops_per_s": None, "note": "pg_test_fsync not found"},
    },
    "postgres_settings": {"fsync": "on"},
}


def test_the_agreed_keys_are_medians_and_each_repetition_is_kept() -> None:
    # Limits: broker 50,000/s; COPY 100,000, 20,000 and 40,000/s. Gateway: 10,000, 8,000 and
    # 12,000/s. Fractions of the smaller limit: 0.2, 0.4, 0.3.
    run = run_of(
        repetition(0.1, 0.01, (600, 400)),
        repetition(0.125, 0.05, (500, 500)),
        repetition(1 / 12, 0.025, (400, 600)),
    )
    chosen = options("--events", str(EVENTS), "--gateways", "2")

    data = summary(chosen, run, FACTS)

    assert data["gateway_eps"] == 10_000
    assert data["copy_limit_eps"] == 40_000
    assert data["broker_limit_eps"] == 50_000
    # The median of the fractions, not the median gateway over the median limit (0.25).
    assert data["fraction_of_limit"] == 0.3
    assert [r["fraction_of_limit"] for r in data["repetitions"]] == [0.2, 0.4, 0.3]
    assert data["speedup_vs_naive"] == 10.0
    assert data["gateway_shares"] == [0.5, 0.5]
    assert data["repetitions"][0]["gateway_shares"] == [0.6, 0.4]
    assert data["not_heartbeat_share"] == 0.015
    assert data["mixes"][0]["repetitions"] == data["repetitions"]
    table = render_table(chosen, run, data)
    assert "Test CPU" in table
    assert "pg_test_fsync not found" in table
    assert "1.5% of the events are state events" in table
    assert "60/40" in table


CPUINFO = "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 7B13\nflags\t: fpu\n"


def test_cpu_model_is_the_first_model_name() -> None:
    assert hardware.cpu_model(CPUINFO + CPUINFO.replace("7B13", "other")) == "AMD EPYC 7B13"
    assert hardware.cpu_model("processor\t: 0\nBogoMIPS\t: 50.00\n") is None


def test_fdatasync_rate_is_read_from_its_line_only() -> None:
    line = "        fdatasync                          5012.345 ops/sec     200 usecs/op"
    assert hardware.parse_fdatasync(line) == 5012.345
    assert hardware.parse_fdatasync(line.replace("fdatasync", "fsync    ")) is None
    assert hardware.parse_fdatasync("        fdatasync                          n/a") is None


def test_filesystem_is_the_longest_mount_point_above_the_path(tmp_path: Path) -> None:
    where = tmp_path.resolve()
    mounts = (
        f"/dev/vda1 / ext4 rw 0 0\ntmpfs {where} tmpfs rw 0 0\ntmpfs {where}-other tmpfs rw 0 0\n"
    )
    assert hardware.filesystem_of(where / "postgres", mounts) == "tmpfs"
    assert hardware.filesystem_of(Path(f"{where}-elsewhere"), mounts) == "ext4"
