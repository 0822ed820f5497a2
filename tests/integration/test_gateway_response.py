"""The alarm response in the gateway (+#12): real MQTT in, a real gateway process, the API for
the moves. The residence's lock unlocked after acceptance is the arrival; the watchdog takes
the site's escalation chain, each step exactly once."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from carewatch.processes import free_port
from carewatch.settings import Settings
from gateway.response_escalation import EscalationOutcome, escalate_responses, read_candidates
from tests.fixtures.alerts import insert_alert
from tests.fixtures.api_client import ApiResponse, add_user, call, login
from tests.fixtures.api_server import running_api
from tests.fixtures.gateway_process import GatewayProcess, wait_until
from tests.fixtures.mqtt import envelope, events_topic, publish_all
from tests.fixtures.services import MakeSettings, SeededRegistry


@dataclass(frozen=True)
class Home:
    """A residence at the seeded site with its alarm button and door lock, an API, a caregiver."""

    database_url: str
    residence_id: int
    button: str
    lock: str
    api: str
    token: str

    def accept(self, alert_id: int) -> ApiResponse:
        answer = call(
            "POST", f"{self.api}/api/v1/alerts/{alert_id}/accept", token=self.token, json_body={}
        )
        assert answer.status == 200, answer.body
        return answer

    def one(self, query: str, *params: object) -> dict[str, Any]:
        [row] = self.all(query, *params)
        return row

    def all(self, query: str, *params: object) -> list[dict[str, Any]]:
        with psycopg.connect(self.database_url) as conn:
            cur = conn.execute(query, params)
            names = [c.name for c in cur.description or []]
            return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]

    def alarm_id(self) -> int | None:
        rows = self.all("SELECT id FROM alerts WHERE device_id = %s", self.button)
        return rows[0]["id"] if rows else None

    def response(self, alert_id: int) -> dict[str, Any] | None:
        rows = self.all("SELECT * FROM alert_responses WHERE alert_id = %s", alert_id)
        return rows[0] if rows else None

    def unlock(self, publisher_url: str, event_id: str, at: datetime) -> None:
        data: dict[str, object] = {"by": "nattpatrull", "method": "app"}
        publish_all(
            publisher_url,
            [(events_topic(self.lock), envelope(event_id, "lock.unlocked", data, ts=at))],
        )
        wait_until(
            lambda: (
                self.all(
                    "SELECT 1 FROM events WHERE device_id = %s AND event_id = %s",
                    self.lock,
                    event_id,
                )
                != []
            )
        )


@pytest.fixture
def home(database_url: str, seeded: SeededRegistry) -> Iterator[Home]:
    button, lock = seeded.device("alarm_button"), seeded.device("door_lock")
    with psycopg.connect(database_url, autocommit=True) as conn:
        row = conn.execute(
            "INSERT INTO residences (site_id, label) VALUES (%s, 'Lgh 1') RETURNING id",
            (seeded.site_id,),
        ).fetchone()
        assert row is not None
        conn.execute(
            "UPDATE devices SET residence_id = %s WHERE id = ANY(%s)", (row[0], [button, lock])
        )
        add_user(conn, "anna", seeded.org_id, "caregiver")
    with running_api(Settings(database_url=database_url)) as api:
        yield Home(database_url, row[0], button, lock, api, login(api, "anna"))


def test_the_lock_unlocked_after_acceptance_is_the_arrival(
    publisher_url: str, make_settings: MakeSettings, home: Home, tmp_path: Path
) -> None:
    """An unlock before the acceptance (arriving before or after it) changes nothing; the
    first after it moves the response on site, source lock, by the lock, live and audited."""
    settings = make_settings(home.database_url, watchdog_interval_s=3600.0)
    with GatewayProcess(settings, tmp_path / "gateway.log"):
        publish_all(publisher_url, [(events_topic(home.button), envelope("p1", "alarm.pressed"))])
        wait_until(lambda: home.alarm_id() is not None)
        alert_id = home.alarm_id()
        assert alert_id is not None
        home.unlock(publisher_url, "u-before", datetime.now(UTC))
        assert home.response(alert_id) is None  # nobody had taken it: not an arrival

        home.accept(alert_id)
        accepted = home.response(alert_id)
        assert accepted is not None
        # Stored after the acceptance, but unlocked (device time) before it: the previous visit.
        home.unlock(publisher_url, "u-late", accepted["accepted_at"] - timedelta(seconds=30))
        response = home.response(alert_id)
        assert response is not None
        assert response["state"] == "accepted"

        unlocked_at = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=1)
        home.unlock(publisher_url, "u-arrival", unlocked_at)
        # Sent again (a redelivery, or a second gateway): stored once, moves nothing twice.
        home.unlock(publisher_url, "u-arrival", unlocked_at)
        home.unlock(publisher_url, "u-after", unlocked_at + timedelta(seconds=5))
    response = home.response(alert_id)
    assert response is not None
    assert (
        response["state"],
        response["on_site_source"],
        response["on_site_by"],
        response["on_site_at"],
        response["holder"],
    ) == ("on_site", "lock", home.lock, unlocked_at, "anna")
    changes = [
        r["change"]
        for r in home.all(
            "SELECT change FROM alert_changes WHERE alert_id = %s ORDER BY id", alert_id
        )
    ]
    assert changes == ["alert.opened", "alert.updated", "alert.updated"]  # accept, arrival
    audit = home.all(
        "SELECT action, username, note, residence_id FROM audit_log"
        " WHERE alert_id = %s AND action LIKE 'alert.%%' AND action <> 'alert.view' ORDER BY id",
        alert_id,
    )
    assert audit == [
        {"action": "alert.accept", "username": "anna", "note": None, "residence_id": None},
        {
            "action": "alert.on_site",
            "username": "system",
            "note": f"lock {home.lock}",
            "residence_id": home.residence_id,
        },
    ]
    body = call("GET", f"{home.api}/api/v1/alerts/{alert_id}", token=home.token).json()
    assert body["response"]["state"] == "on_site"
    assert body["response"]["on_site_source"] == "lock"


def _escalations(home: Home) -> list[tuple[int, str, list[str]]]:
    return [
        (r["alert_id"], r["step"], r["actions"])
        for r in home.all("SELECT alert_id, step, actions FROM response_escalations ORDER BY id")
    ]


def test_the_chain_escalates_each_step_once_with_two_gateways(
    publisher_url: str, make_settings: MakeSettings, home: Home, tmp_path: Path
) -> None:
    """With the site's steps at 1 and 2 s, nobody accepting: both steps, each once (an outbox
    row, a NOTIFY, the response's escalated list, a change), the alert raised to critical,
    whatever more passes two gateways make; the board's next step follows."""
    with psycopg.connect(home.database_url, autocommit=True) as conn:
        conn.execute(
            'UPDATE sites SET escalation_steps = \'{"not_accepted": 1, "call_out": 2}\''
            " WHERE id = (SELECT site_id FROM devices WHERE id = %s)",
            (home.button,),
        )
    # An alarm at high (as a site's override of its severity would open it), to see
    # raise_severity act.
    visit = insert_alert(home.database_url, home.button, "alarm_pressed", "high").alert_id
    first = make_settings(home.database_url, watchdog_interval_s=0.3)
    second = first.model_copy(
        update={"gateway_client_id": first.gateway_client_id + "-b", "metrics_port": free_port()}
    )
    with psycopg.connect(home.database_url, autocommit=True) as listener:
        listener.execute("LISTEN carewatch_escalations")
        body = call("GET", f"{home.api}/api/v1/alerts/{visit}", token=home.token).json()
        assert body["response"]["next_step"]["name"] == "not_accepted"
        with (
            GatewayProcess(first, tmp_path / "a.log") as a,
            GatewayProcess(second, tmp_path / "b.log") as b,
        ):
            wait_until(lambda: len(_escalations(home)) == 2, 15)
            time.sleep(1.5)  # several more passes of both watchdogs
            taken = [
                (gateway.metric("carewatch_response_escalations_total", f'step="{step}"') or 0)
                for step in ("not_accepted", "call_out")
                for gateway in (a, b)
            ]
        notified = [n.payload for n in listener.notifies(timeout=2, stop_after=2)]
    assert _escalations(home) == [
        (visit, "not_accepted", ["notify_second_group", "raise_severity"]),
        (visit, "call_out", ["call_out"]),
    ]
    assert sorted(notified) == sorted(
        str(r["id"]) for r in home.all("SELECT id FROM response_escalations")
    )
    assert sum(taken) == 2.0  # each step counted once, by whichever watchdog took it
    alert = home.one("SELECT severity, raised_at, state FROM alerts WHERE id = %s", visit)
    assert (alert["severity"], alert["state"]) == ("critical", "open")
    assert alert["raised_at"] is not None
    response = home.response(visit)
    assert response is not None
    assert (response["state"], response["escalated"]) == ("open", ["not_accepted", "call_out"])
    changes = home.all("SELECT change FROM alert_changes WHERE alert_id = %s ORDER BY id", visit)
    # Opened, then one update per pass that took a step (one or two passes).
    assert changes[0]["change"] == "alert.opened"
    assert {c["change"] for c in changes[1:]} == {"alert.updated"}
    assert 2 <= len(changes) <= 3
    body = call("GET", f"{home.api}/api/v1/alerts/{visit}", token=home.token).json()
    assert body["severity"] == "critical"
    assert body["response"]["escalated"] == ["not_accepted", "call_out"]
    assert body["response"]["next_step"] is None  # no on-site promise: nothing more to come


def test_acceptance_stops_the_chain(
    publisher_url: str, make_settings: MakeSettings, home: Home, tmp_path: Path
) -> None:
    """Accepted after the first step: the call-out, due later, never comes."""
    with psycopg.connect(home.database_url, autocommit=True) as conn:
        conn.execute(
            'UPDATE sites SET escalation_steps = \'{"not_accepted": 1, "call_out": 4}\''
            " WHERE id = (SELECT site_id FROM devices WHERE id = %s)",
            (home.button,),
        )
    settings = make_settings(home.database_url, watchdog_interval_s=0.3)
    with GatewayProcess(settings, tmp_path / "gateway.log"):
        publish_all(publisher_url, [(events_topic(home.button), envelope("p1", "alarm.pressed"))])
        wait_until(lambda: len(_escalations(home)) == 1, 15)
        alert_id = home.alarm_id()
        assert alert_id is not None
        accepted = home.accept(alert_id).json()
        assert accepted["response"]["next_step"] is None  # both steps stop at acceptance
        opened_at = home.one("SELECT opened_at FROM alerts WHERE id = %s", alert_id)["opened_at"]
        # Past the call-out's time, and a few passes more.
        while datetime.now(UTC) < opened_at + timedelta(seconds=5.5):
            time.sleep(0.2)
    assert _escalations(home) == [
        (alert_id, "not_accepted", ["notify_second_group", "raise_severity"])
    ]
    response = home.response(alert_id)
    assert response is not None
    assert (response["state"], response["escalated"]) == ("accepted", ["not_accepted"])


def test_a_response_that_lost_a_step_gets_it_back_without_a_second_call_out(
    database_url: str, seeded: SeededRegistry
) -> None:
    """A step in the outbox but missing from the response (a move written from an older read)
    is put back on the response; the outbox keeps one row and nothing is announced again."""
    button = seeded.device("alarm_button")
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            'UPDATE sites SET escalation_steps = \'{"not_accepted": 1, "call_out": 1}\''
            " WHERE id = %s",
            (seeded.site_id,),
        )
    opened_at = datetime.now(UTC) - timedelta(minutes=1)
    alert_id = insert_alert(database_url, button, "alarm_pressed", opened_at=opened_at).alert_id
    first = asyncio.run(_escalate(database_url, datetime.now(UTC)))
    assert first.steps == {"not_accepted": 1, "call_out": 1}
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            "UPDATE alert_responses SET escalated = '{call_out}' WHERE alert_id = %s", (alert_id,)
        )
        conn.execute("LISTEN carewatch_escalations")
        again = asyncio.run(_escalate(database_url, datetime.now(UTC)))
        assert list(conn.notifies(timeout=0.5)) == []
        [(escalated,)] = conn.execute(
            "SELECT escalated FROM alert_responses WHERE alert_id = %s", (alert_id,)
        ).fetchall()
        [(outbox,)] = conn.execute("SELECT count(*) FROM response_escalations").fetchall()
    assert again.steps == {}
    assert len(again.change_ids) == 1  # the board hears the response changed
    assert (escalated, outbox) == (["call_out", "not_accepted"], 2)
    assert asyncio.run(_escalate(database_url, datetime.now(UTC))).change_ids == []


def test_steps_of_an_alarm_older_than_the_escalation_are_recorded_not_carried_out(
    database_url: str, seeded: SeededRegistry
) -> None:
    """An alarm opened two days ago and never taken (from before escalation existed): its
    steps go onto the response, so they never fall due again, but nothing is called out, and
    its severity is left; a fresh alarm beside it escalates as usual."""
    stale_button, fresh_button = seeded.device("alarm_button", 0), seeded.device("alarm_button", 1)
    now = datetime.now(UTC)
    stale = insert_alert(
        database_url, stale_button, "alarm_pressed", "high", opened_at=now - timedelta(days=2)
    ).alert_id
    fresh = insert_alert(
        database_url, fresh_button, "alarm_pressed", "high", opened_at=now - timedelta(minutes=3)
    ).alert_id
    outcome = asyncio.run(_escalate(database_url, now))
    assert outcome.steps == {"not_accepted": 1}
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT a.id, a.severity, r.escalated,"
            " (SELECT count(*) FROM response_escalations e WHERE e.alert_id = a.id)"
            " FROM alerts a JOIN alert_responses r ON r.alert_id = a.id ORDER BY a.id"
        ).fetchall()
    assert rows == [
        (stale, "high", ["not_accepted", "call_out"], 0),
        (fresh, "critical", ["not_accepted"], 1),
    ]
    assert asyncio.run(_escalate(database_url, now)).steps == {}


def test_an_alarm_with_every_step_of_its_sites_chain_is_read_no_more(
    database_url: str, seeded: SeededRegistry
) -> None:
    """Each pass reads only alerts whose site's chain still lacks a step: an alarm nobody
    closes drops out once its chain is done, instead of being read on every pass for as long
    as it stays open. A site with a promise has one step more, so there the same steps are
    not enough."""
    done_button, promised_button = (
        seeded.device("alarm_button", 0),
        seeded.device("alarm_button", 1),
    )
    now = datetime.now(UTC)
    done = insert_alert(database_url, done_button, "alarm_pressed", opened_at=now).alert_id
    assert asyncio.run(_candidate_ids(database_url)) == [done]
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO alert_responses (alert_id, state, escalated)"
            " VALUES (%s, 'open', '{call_out,not_accepted}')",
            (done,),
        )
    assert asyncio.run(_candidate_ids(database_url)) == []
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("UPDATE sites SET on_site_promise_s = 1800 WHERE id = %s", (seeded.site_id,))
    promised = insert_alert(database_url, promised_button, "alarm_pressed", opened_at=now).alert_id
    assert asyncio.run(_candidate_ids(database_url)) == [done, promised]


async def _candidate_ids(database_url: str) -> list[int]:
    async with (
        await psycopg.AsyncConnection.connect(database_url) as conn,
        conn.cursor(row_factory=dict_row) as cur,
    ):
        return sorted(row["id"] for row in await read_candidates(cur))


async def _escalate(database_url: str, now: datetime) -> EscalationOutcome:
    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        return await escalate_responses(conn, now)
