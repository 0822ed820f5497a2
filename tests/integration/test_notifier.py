"""Outgoing webhooks (+#12): the real notifier process against a local receiver that verifies
every signature; retries while the receiver is down, a dead letter after the last attempt, the
delivery log over the API, escalation call-outs, and no organisation hearing another's alerts.

One world per module: a database, the API and one notifier process (small retry settings).
Each test makes an organisation of its own, so its webhooks hear its alerts only.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest

from carewatch.processes import free_port
from carewatch.settings import Settings
from tests.fixtures.alerts import insert_alert
from tests.fixtures.api_client import (
    add_device,
    add_org_with_sites,
    add_user,
    call,
    login,
    module_database,
)
from tests.fixtures.api_server import running_api
from tests.fixtures.gateway_process import wait_until
from tests.fixtures.webhooks import NotifierProcess, Received, Receiver
from tools.local.postgres import PostgresInstance

MAX_ATTEMPTS = 4
_orgs = itertools.count(1)
_devices = itertools.count(1)


@dataclass(frozen=True)
class World:
    base: str
    database_url: str
    receiver: Receiver
    notifier: NotifierProcess

    def sql(self, query: str, *params: object) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.database_url, autocommit=True) as conn:
            cursor = conn.execute(query, params)
            return cursor.fetchall() if cursor.description else []


@dataclass(frozen=True)
class Org:
    """An organisation of one test: a site, an admin's token, a device per call."""

    world: World
    org_id: str
    site_id: str
    token: str

    def api(self, method: str, path: str, body: object = None) -> Any:
        response = call(method, f"{self.world.base}/api/v1{path}", token=self.token, json_body=body)
        assert response.status < 300, response.body
        return response.json() if response.body else None

    def webhook(self, path: str, *, answers: list[int] | None = None, **body: Any) -> int:
        """A webhook to the receiver's ``path``; the receiver verifies with its secret."""
        body.setdefault("events", ["alert.opened", "alert.updated", "alert.resolved"])
        created = self.api("POST", "/webhooks", {"url": self.world.receiver.url(path), **body})
        self.world.receiver.expect(path, created["secret"], answers or [])
        webhook_id: int = created["id"]
        return webhook_id

    def alert(self, rule: str = "alarm_pressed", severity: str = "critical") -> int:
        device_id = f"{self.org_id}-button-{next(_devices)}"
        with psycopg.connect(self.world.database_url, autocommit=True) as conn:
            add_device(conn, device_id, self.site_id, "alarm_button")
        return insert_alert(self.world.database_url, device_id, rule, severity).alert_id

    def deliveries(self, webhook_id: int) -> list[dict[str, Any]]:
        listed: list[dict[str, Any]] = self.api("GET", f"/webhooks/{webhook_id}/deliveries")
        return listed


@pytest.fixture(scope="module")
def world(
    pg: PostgresInstance, template_database: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[World]:
    with module_database(pg, template_database) as database_url:
        settings = Settings(
            database_url=database_url,
            notifier_metrics_port=free_port(),
            notifier_poll_s=0.1,
            webhook_timeout_s=2.0,
            webhook_max_attempts=MAX_ATTEMPTS,
            webhook_retry_base_s=0.2,
            webhook_retry_max_s=0.5,
        )
        log_path = Path(tmp_path_factory.mktemp("notifier")) / "notifier.log"
        with (
            running_api(settings) as base,
            Receiver() as receiver,
            NotifierProcess(settings, log_path) as notifier,
        ):
            yield World(base, database_url, receiver, notifier)


@pytest.fixture
def org(world: World) -> Org:
    n = next(_orgs)
    org_id, site_id = f"org-{n}", f"org-{n}-site"
    with psycopg.connect(world.database_url, autocommit=True) as conn:
        add_org_with_sites(conn, org_id, site_id)
        add_user(conn, f"admin-{n}", org_id, "admin")
    return Org(world, org_id, site_id, login(world.base, f"admin-{n}"))


def arrivals(world: World, path: str, alert_id: int, n: int = 1) -> list[Received]:
    """Wait for ``n`` requests about ``alert_id`` at ``path``; all of them."""

    def about_it() -> list[Received]:
        return [r for r in world.receiver.received(path) if r.json()["alert"]["id"] == alert_id]

    wait_until(lambda: len(about_it()) >= n, timeout_s=20, context=world.notifier.log)
    return about_it()


def test_an_alarm_reaches_the_receiver_signed_with_the_alert_json(org: Org) -> None:
    """An alarm press is POSTed as a signed ``alert.opened`` whose alert is the API's alert JSON;
    the log shows it delivered at the first attempt; the secret is shown at creation only."""
    webhook_id = org.webhook("/opened")
    assert all("secret" not in listed for listed in org.api("GET", "/webhooks"))
    alert_id = org.alert()
    (received,) = arrivals(org.world, "/opened", alert_id)
    assert received.refusal is None
    body = received.json()
    assert body["event"] == "alert.opened"
    assert received.headers["Carewatch-Event"] == "alert.opened"
    assert received.headers["Carewatch-Delivery"] == str(body["id"])
    assert body["org_id"] == org.org_id
    assert body["alert"] == org.api("GET", f"/alerts/{alert_id}")
    assert body["alert"]["response"]["state"] == "open"
    wait_until(lambda: org.deliveries(webhook_id)[0]["state"] == "delivered")
    (logged,) = org.deliveries(webhook_id)
    assert (logged["id"], logged["event"], logged["alert_id"]) == (
        body["id"],
        "alert.opened",
        alert_id,
    )
    assert (logged["attempts"], logged["last_status"], logged["last_error"]) == (1, 200, None)


def test_only_response_rules_and_the_rules_asked_for_are_sent(org: Org) -> None:
    """A device fault (tamper) goes only to the webhook that asked for its rule; the alarm to
    both."""
    org.webhook("/response-only")
    org.webhook("/with-tamper", rules=["tamper"])
    tamper = org.alert("tamper", "high")
    alarm = org.alert()
    arrivals(org.world, "/with-tamper", tamper)
    arrivals(org.world, "/response-only", alarm)
    arrivals(org.world, "/with-tamper", alarm)
    # The alarm came after the tamper alert: had the tamper been sent, it would be there too.
    assert [r.json()["alert"]["id"] for r in org.world.receiver.received("/response-only")] == [
        alarm
    ]


def test_a_receiver_that_is_down_gets_the_delivery_when_it_is_back(org: Org) -> None:
    """503 twice: the third attempt, after backoff, delivers; each attempt was signed anew and
    carried the same delivery."""
    webhook_id = org.webhook("/flaky", answers=[503, 503])
    alert_id = org.alert()
    attempts = arrivals(org.world, "/flaky", alert_id, n=3)
    assert [a.answered for a in attempts] == [503, 503, 200]
    assert all(a.refusal is None for a in attempts)
    assert len({a.json()["id"] for a in attempts}) == 1
    wait_until(lambda: org.deliveries(webhook_id)[0]["state"] == "delivered")
    (logged,) = org.deliveries(webhook_id)
    assert (logged["attempts"], logged["last_status"], logged["dead_at"]) == (3, 200, None)


def test_a_receiver_that_never_answers_ends_in_the_dead_letter(org: Org) -> None:
    """A closed port: every attempt fails, and after the last the delivery is dead, with the
    error in the log and the dead count in the metrics."""
    closed = f"http://127.0.0.1:{free_port()}/nobody"
    created = org.api(
        "POST", "/webhooks", {"url": closed, "events": ["alert.opened"], "description": "gone"}
    )
    dead_before = org.world.notifier.metric(
        "carewatch_webhook_deliveries_total", {"result": "dead"}
    )
    org.alert()
    wait_until(
        lambda: [d["state"] for d in org.deliveries(created["id"])] == ["dead"],
        timeout_s=20,
        context=org.world.notifier.log,
    )
    (logged,) = org.deliveries(created["id"])
    assert logged["attempts"] == MAX_ATTEMPTS
    assert logged["last_status"] is None
    assert "ConnectError" in logged["last_error"]
    assert logged["next_attempt_at"] is None
    assert org.api("GET", f"/webhooks/{created['id']}/deliveries?state=dead") == [logged]
    assert org.api("GET", f"/webhooks/{created['id']}/deliveries?state=pending") == []
    wait_until(
        lambda: (
            org.world.notifier.metric("carewatch_webhook_deliveries_total", {"result": "dead"})
            == (dead_before or 0) + 1
        )
    )


def test_an_escalation_call_out_is_delivered(org: Org) -> None:
    """A call_out step of the escalation chain, announced as the gateway does, is delivered as
    ``alert.call_out`` to the webhooks that ask for it; a step without call_out is not."""
    org.webhook("/call-out", events=["alert.call_out"])
    alert_id = org.alert()
    world = org.world
    for step, actions in (("not_accepted", ["notify_second_group"]), ("call_out", ["call_out"])):
        world.sql(
            "WITH e AS (INSERT INTO response_escalations (alert_id, step, actions, due_at)"
            " VALUES (%s, %s, %s, now()) RETURNING id)"
            " SELECT pg_notify('carewatch_escalations', id::text) FROM e",
            alert_id,
            step,
            actions,
        )
    (received,) = arrivals(world, "/call-out", alert_id)
    assert received.refusal is None
    body = received.json()
    assert (body["event"], body["escalation_step"]) == ("alert.call_out", "call_out")
    assert body["escalation_id"] is not None
    assert body["alert"]["id"] == alert_id


def test_another_organisations_webhook_never_hears_this_ones_alerts(org: Org, world: World) -> None:
    """Two organisations with webhooks: each alert reaches its own organisation's only."""
    n = next(_orgs)
    with psycopg.connect(world.database_url, autocommit=True) as conn:
        add_org_with_sites(conn, f"org-{n}", f"org-{n}-site")
        add_user(conn, f"admin-{n}", f"org-{n}", "admin")
    other = Org(world, f"org-{n}", f"org-{n}-site", login(world.base, f"admin-{n}"))
    mine = org.webhook("/mine")
    theirs = other.webhook("/theirs")
    my_alert = org.alert()
    their_alert = other.alert()
    arrivals(world, "/mine", my_alert)
    arrivals(world, "/theirs", their_alert)
    assert {r.json()["alert"]["id"] for r in world.receiver.received("/mine")} == {my_alert}
    assert {r.json()["alert"]["id"] for r in world.receiver.received("/theirs")} == {their_alert}
    assert [d["alert_id"] for d in org.deliveries(mine)] == [my_alert]
    # Neither admin reads the other's log or deletes the other's webhook.
    for admin, webhook_id in ((org, theirs), (other, mine)):
        path = f"{world.base}/api/v1/webhooks/{webhook_id}"
        assert call("GET", f"{path}/deliveries", token=admin.token).status == 404
        assert call("DELETE", path, token=admin.token).status == 404


def test_a_deleted_webhook_receives_nothing_more(org: Org) -> None:
    """After DELETE the webhook is gone from the list and nothing more is delivered to it."""
    kept = org.webhook("/kept")
    deleted = org.webhook("/deleted")
    org.api("DELETE", f"/webhooks/{deleted}")
    assert [w["id"] for w in org.api("GET", "/webhooks")] == [kept]
    alert_id = org.alert()
    arrivals(org.world, "/kept", alert_id)
    assert org.world.receiver.received("/deleted") == []
    assert org.world.sql(
        "SELECT count(*) FROM webhook_deliveries WHERE webhook_id = %s", deleted
    ) == [(0,)]


def test_the_response_moves_are_delivered_as_updates_and_the_close_as_resolved(
    org: Org,
) -> None:
    """Accept and close (+#12) reach the receiver in order, each with the response as it was."""
    world = org.world
    with psycopg.connect(world.database_url, autocommit=True) as conn:
        add_user(conn, f"carer-{org.org_id}", org.org_id, "caregiver")
    carer = login(world.base, f"carer-{org.org_id}")
    org.webhook("/moves")
    alert_id = org.alert()
    arrivals(world, "/moves", alert_id)
    base = f"{world.base}/api/v1/alerts/{alert_id}"
    assert call("POST", f"{base}/accept", token=carer).status == 200
    arrivals(world, "/moves", alert_id, n=2)
    closing = {"action": "false_alarm", "note": ""}
    assert call("POST", f"{base}/close", token=carer, json_body=closing).status == 200
    received = arrivals(world, "/moves", alert_id, n=3)
    bodies = [r.json() for r in received]
    assert [b["event"] for b in bodies] == ["alert.opened", "alert.updated", "alert.resolved"]
    assert [b["alert"]["response"]["state"] for b in bodies] == ["open", "accepted", "closed"]
    assert bodies[1]["alert"]["response"]["holder"] == f"carer-{org.org_id}"
    assert bodies[2]["alert"]["response"]["action"] == "false_alarm"
    assert all(r.refusal is None for r in received)


def test_deleting_a_webhook_gives_up_what_waited_for_it(org: Org) -> None:
    """A delivery waiting for its next attempt when its webhook is deleted is dead at once, and
    says why; no attempt comes."""
    webhook_id = org.webhook("/deleting")
    # A tamper alert is not for this webhook: the waiting delivery below is the only one, made
    # as the notifier leaves one after a failed attempt (the next in an hour).
    alert_id = org.alert("tamper", "high")
    org.world.sql(
        "INSERT INTO webhook_deliveries (webhook_id, event, alert_id, alert_change_id, payload,"
        " attempts, next_attempt_at, last_status, last_error)"
        " SELECT %s, 'alert.opened', %s, max(id), '{}', 1, now() + interval '1 hour', 503,"
        " 'HTTP 503' FROM alert_changes WHERE alert_id = %s",
        webhook_id,
        alert_id,
        alert_id,
    )
    org.api("DELETE", f"/webhooks/{webhook_id}")
    (dead,) = org.world.sql(
        "SELECT dead_at IS NOT NULL, attempts, last_error FROM webhook_deliveries"
        " WHERE webhook_id = %s",
        webhook_id,
    )
    assert dead == (True, 1, "webhook deleted")
    assert org.world.receiver.received("/deleting") == []


def test_what_happened_while_the_notifier_was_stopped_is_delivered_after(org: Org) -> None:
    """Alerts of a stopped notifier's downtime (their NOTIFY heard by nobody) are caught up
    when it starts again."""
    org.webhook("/catch-up")
    world = org.world
    assert world.notifier.stop() == 0
    try:
        alert_id = org.alert()
    finally:
        world.notifier.start()
    (received,) = arrivals(world, "/catch-up", alert_id)
    assert received.refusal is None


@pytest.mark.slow
def test_the_notifier_outlives_a_database_outage(
    private_pg: PostgresInstance, private_database_url: str, tmp_path: Path
) -> None:
    """PostgreSQL stopped under a running notifier: it stays up, says it is disconnected, and
    delivers an alarm raised after the database is back."""
    url = private_database_url
    secret = "whsec_" + "o" * 40
    with psycopg.connect(url, autocommit=True) as conn:
        add_org_with_sites(conn, "outage", "outage-site")
        add_device(conn, "outage-button", "outage-site", "alarm_button")
    settings = Settings(
        database_url=url,
        notifier_metrics_port=free_port(),
        notifier_poll_s=0.1,
        reconnect_max_s=0.5,
        db_reconnect_window_s=2.0,
    )
    with Receiver() as receiver:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(
                "INSERT INTO webhooks (org_id, url, secret, events, created_by)"
                " VALUES ('outage', %s, %s, '{alert.opened}', 'test')",
                (receiver.url("/outage"), secret),
            )
        receiver.expect("/outage", secret)
        with NotifierProcess(settings, tmp_path / "notifier.log") as notifier:
            private_pg.stop(mode="immediate")
            wait_until(lambda: notifier.metric("carewatch_notifier_database_connected") == 0.0)
            assert notifier.process is not None
            time.sleep(2)  # a few failed polls and reconnects
            assert notifier.process.is_running(), notifier.log()
            private_pg.start()
            wait_until(
                lambda: notifier.metric("carewatch_notifier_database_connected") == 1.0,
                timeout_s=30,
                context=notifier.log,
            )
            alert_id = insert_alert(url, "outage-button", "alarm_pressed", "critical").alert_id
            wait_until(
                lambda: (
                    [r.json()["alert"]["id"] for r in receiver.received("/outage")] == [alert_id]
                ),
                timeout_s=20,
                context=notifier.log,
            )
            assert receiver.received("/outage")[0].refusal is None
