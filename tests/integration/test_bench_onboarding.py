"""``carewatch bench onboarding`` runs end to end (small), and its figures add up."""

from __future__ import annotations

import json
import subprocess
import sys


def test_bench_onboarding_small_run_reports_every_device_connecting() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "app.cli", "bench", "onboarding",
         "--devices", "40", "--runs", "2", "--json"],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["devices_per_file"] == 40
    runs = result["runs"]
    assert [r["existing_devices"] for r in runs] == [0, 40]
    for run in runs:
        assert (run["created"], run["refused"], run["connected"]) == (40, 0, 40)
        assert 0 < run["api_s"] <= run["end_to_end_s"]
    assert "end to end s" in done.stdout
