"""A hand-built night, end to end over MQTT (+#11): camera and lock events into a real gateway,
its watchdog judging the planned checks, and what the API then tells the night staff and the
managers. The night and what must come of it: :mod:`tests.fixtures.night`."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest

from devices.supervision import night_of
from tests.fixtures.api_client import add_user, call, login
from tests.fixtures.api_server import running_api
from tests.fixtures.gateway_process import GatewayProcess, wait_until
from tests.fixtures.night import STOCKHOLM, HandBuiltNight, build_night, count, minutes
from tests.fixtures.services import MakeSettings, SeededRegistry


@pytest.fixture
def night(database_url: str, seeded: SeededRegistry) -> HandBuiltNight:
    built = build_night(database_url, seeded)
    with psycopg.connect(database_url, autocommit=True) as conn:
        add_user(conn, "natt", seeded.org_id, "caregiver")
        add_user(conn, "chef", seeded.org_id, "manager")
    return built


def test_a_hand_built_night_gives_exactly_the_expected_checks_alerts_and_figures(
    publisher_url: str,
    make_settings: MakeSettings,
    database_url: str,
    night: HandBuiltNight,
    tmp_path: Path,
) -> None:
    first, second = night.first, night.second
    judging = night.play(publisher_url, make_settings, tmp_path)
    assert count(database_url, "SELECT count(*) FROM supervision_checks") == 0
    with GatewayProcess(judging, tmp_path / "judge.log"), running_api(judging) as base:
        wait_until(lambda: count(database_url, "SELECT count(*) FROM supervision_checks") == 8)
        assert night.states() == night.expected_states()
        assert night.alerts() == [
            ("Lgh 2", second, "supervision_missed", "high", "open"),
            ("Lgh 4", first, "physical_visit_needed", "critical", "open"),
        ]

        # The night staff see the same in the night round, and record the visit to Lgh 4.
        token = login(base, "natt")
        shown = _night_round(base, token, first) | _night_round(base, token, second)
        assert {key: check["state"] for key, check in shown.items()} == night.states()
        lgh4 = night.residences[3]
        answer = call(
            "POST",
            f"{base}/api/v1/residences/{lgh4}/visits",
            json_body={"visited_at": (first + minutes(20)).isoformat(), "note": "allt väl"},
            token=token,
        )
        assert answer.status == 201, answer.body
        wait_until(lambda: night.states()[("Lgh 4", first)] == "visited")
        assert [alert[2:] for alert in night.alerts()] == [
            ("supervision_missed", "high", "open"),
            ("physical_visit_needed", "critical", "resolved"),
        ]

        # The managers' figures for the night(s).
        manager = login(base, "chef")
        nights = sorted({night_of(t, STOCKHOLM) for t in (first, second)})
        summary = call(
            "GET",
            f"{base}/api/v1/supervision/summary?since={nights[0]}&until={nights[-1]}",
            token=manager,
        ).json()
        [site] = summary["sites"]
        totals = site["totals"]
        assert {key: totals[key] for key in ("planned", "done_in_window", "late", "missed")} == {
            "planned": 8,
            "done_in_window": 4,
            "late": 1,
            "missed": 1,
        }
        assert (totals["not_seen"], totals["visits_needed"], totals["replaced_by_visits"]) == (
            2,
            2,
            1,
        )


def _night_round(base: str, token: str, planned: datetime) -> dict[tuple[str, datetime], Any]:
    answer = call(
        "GET", f"{base}/api/v1/night-round?night={night_of(planned, STOCKHOLM)}", token=token
    ).json()
    return {
        (check["residence_label"], datetime.fromisoformat(check["planned_at"])): check
        for site in answer["sites"]
        for check in site["checks"]
    }
