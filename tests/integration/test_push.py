"""Web Push (+#12): the real notifier process pushes alarms to a local push service that checks
the VAPID signature and decrypts every payload with the subscriber's keys; the subscription API
is the caller's own; a gone subscription is disabled; only the site's caregivers are pushed,
its second group only by the escalation; technicians get urgent device faults (issue 12).

One world per module: a database, the API and one notifier process with a VAPID key (small
retry settings). Each test makes an organisation of its own.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest

from carewatch.processes import free_port
from carewatch.settings import Settings
from tests.fixtures.alerts import insert_alert
from tests.fixtures.api_client import (
    ApiResponse,
    add_device,
    add_org_with_sites,
    add_user,
    call,
    login,
    module_database,
)
from tests.fixtures.api_server import running_api
from tests.fixtures.push import Pushed, PushService, Subscriber, VapidKeys
from tests.fixtures.webhooks import NotifierProcess
from tools.local.postgres import PostgresInstance

SUBJECT = "mailto:drift@kommun.example"
WAIT_S = 10.0
_orgs = itertools.count(1)
_devices = itertools.count(1)


@dataclass(frozen=True)
class World:
    base: str
    database_url: str
    vapid: VapidKeys
    push: PushService
    notifier: NotifierProcess

    def sql(self, query: str, *params: object) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.database_url, autocommit=True) as conn:
            cursor = conn.execute(query, params)
            return cursor.fetchall() if cursor.description else []


@pytest.fixture(scope="module")
def world(
    pg: PostgresInstance, template_database: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[World]:
    vapid = VapidKeys.generate()
    with module_database(pg, template_database) as database_url:
        settings = Settings(
            database_url=database_url,
            notifier_metrics_port=free_port(),
            notifier_poll_s=0.1,
            webhook_timeout_s=2.0,
            webhook_max_attempts=3,
            webhook_retry_base_s=0.2,
            webhook_retry_max_s=0.5,
            vapid_private_key=vapid.private_pem,
            vapid_subject=SUBJECT,
            push_allow_http_loopback=True,
        )
        log_path = Path(tmp_path_factory.mktemp("notifier")) / "notifier.log"
        with (
            running_api(settings) as base,
            PushService(vapid.public_b64) as push,
            NotifierProcess(settings, log_path) as notifier,
        ):
            yield World(base, database_url, vapid, push, notifier)


@dataclass(frozen=True)
class Org:
    """An organisation of one test: sites a and b, and a token per user made."""

    world: World
    org_id: str
    tokens: dict[str, str]

    def site(self, name: str) -> str:
        return f"{self.org_id}-{name}"

    def user(self, username: str, role: str = "caregiver", sites: tuple[str, ...] = ()) -> str:
        """A user of the organisation (limited to ``sites`` if any), signed in."""
        with psycopg.connect(self.world.database_url, autocommit=True) as conn:
            add_user(conn, username, self.org_id, role, [self.site(s) for s in sites])
        self.tokens[username] = login(self.world.base, username)
        return username

    def call(self, username: str, method: str, path: str, body: object = None) -> ApiResponse:
        url = f"{self.world.base}/api/v1/push{path}"
        return call(method, url, token=self.tokens[username], json_body=body)

    def subscribe(self, username: str, answers: tuple[int, ...] = ()) -> Subscriber:
        """A browser of ``username`` subscribed through the API, its endpoint at the service."""
        subscriber = self.world.push.subscriber(f"{username}-{time.monotonic_ns()}", answers)
        response = self.call(username, "POST", "/subscriptions", subscriber.json())
        assert response.status == 201, response.body
        return subscriber

    def alarm(self, site: str = "a", rule: str = "alarm_pressed") -> int:
        device_id = f"{self.org_id}-button-{next(_devices)}"
        with psycopg.connect(self.world.database_url, autocommit=True) as conn:
            add_device(conn, device_id, self.site(site), "alarm_button")
        return insert_alert(self.world.database_url, device_id, rule, "critical").alert_id


@pytest.fixture
def org(world: World) -> Org:
    n = next(_orgs)
    org_id = f"push-{n}"
    with psycopg.connect(world.database_url, autocommit=True) as conn:
        add_org_with_sites(conn, org_id, f"{org_id}-a", f"{org_id}-b")
    return Org(world, org_id, {})


def wait_for(found: Callable[[], list[Pushed]], count: int = 1) -> list[Pushed]:
    deadline = time.monotonic() + WAIT_S
    while len(pushed := found()) < count:
        assert time.monotonic() < deadline, f"{len(pushed)} of {count} pushes arrived"
        time.sleep(0.05)
    return pushed


def for_alert(world: World, subscriber: Subscriber, alert_id: int) -> Callable[[], list[Pushed]]:
    return lambda: [
        push
        for push in world.push.received(subscriber)
        if push.payload is not None and push.payload["alert_id"] == alert_id
    ]


def test_an_alarm_is_pushed_encrypted_and_signed_to_the_sites_caregivers(org: Org) -> None:
    """An alarm at site a reaches the phones of the caregivers and admins who may take it there
    (no site limit, or site a), VAPID-signed and decryptable, in each one's language; nobody
    limited to site b, no technician and nobody of another organisation is pushed."""
    world = org.world
    everywhere = org.subscribe(org.user(f"{org.org_id}-all"))
    on_a = org.subscribe(org.user(f"{org.org_id}-on-a", sites=("a",)))
    admin = org.user(f"{org.org_id}-admin", "admin")
    world.sql("UPDATE users SET language = 'en' WHERE username = %s", admin)
    admin_phone = org.subscribe(admin)
    on_b = org.subscribe(org.user(f"{org.org_id}-on-b", sites=("b",)))
    other = Org(world, f"{org.org_id}-other", {})
    with psycopg.connect(world.database_url, autocommit=True) as conn:
        add_org_with_sites(conn, other.org_id, other.site("a"))
    stranger = other.subscribe(other.user(f"{other.org_id}-all"))

    alert_id = org.alarm("a")
    pushes = {
        name: wait_for(for_alert(world, phone, alert_id))
        for name, phone in (("all", everywhere), ("on_a", on_a), ("admin", admin_phone))
    }
    for name, (push,) in pushes.items():
        assert push.refusal is None, push.refusal
        assert push.status == 201
        assert push.payload == {
            "id": push.payload["id"] if push.payload else None,
            "alert_id": alert_id,
            "event": "alert.opened",
            "step": None,
            "rule": "alarm_pressed",
            "residence_label": push.payload["residence_label"] if push.payload else None,
            "site_name": f"Site {org.site('a')}",
            "severity": "critical",
            "lang": "en" if name == "admin" else "sv",
            "audience": "care",
            "group": "first",
        }
        assert push.headers["Urgency"] == "high"
        assert push.headers["Topic"] == f"alert-{alert_id}"
        assert int(push.headers["TTL"]) > 0
    # The notifier runs every 0.1 s: had they been pushed, they would be by now.
    time.sleep(1.0)
    assert world.push.received(on_b) == []
    assert world.push.received(stranger) == []
    delivered = world.sql(
        "SELECT count(*) FROM push_deliveries d JOIN push_subscriptions p"
        " ON p.id = d.subscription_id WHERE d.alert_id = %s AND d.delivered_at IS NOT NULL"
        " AND p.last_success_at IS NOT NULL",
        alert_id,
    )
    assert delivered == [(3,)]


def test_alerts_outside_the_response_rules_are_not_pushed(org: Org) -> None:
    """A device fault (not a response rule) is not pushed: the board and the technicians have it."""
    phone = org.subscribe(org.user(f"{org.org_id}-all"))
    org.alarm("a", rule="tamper")
    alarm = org.alarm("a")
    wait_for(for_alert(org.world, phone, alarm))
    assert {push.payload["rule"] for push in org.world.push.received(phone) if push.payload} == {
        "alarm_pressed"
    }


def test_a_gone_subscription_is_disabled(org: Org) -> None:
    """A push service's 410 disables the subscription: the next alarm is not pushed to it, and
    the metric counts it as gone."""
    world = org.world
    gone_before = world.notifier.metric("carewatch_push_deliveries_total", {"result": "gone"}) or 0
    user = org.user(f"{org.org_id}-all")
    phone = org.subscribe(user, answers=(410,))
    first = org.alarm()
    (push,) = wait_for(lambda: world.push.received(phone))
    assert push.status == 410
    deadline = time.monotonic() + WAIT_S
    while world.sql(
        "SELECT disabled_at IS NULL FROM push_subscriptions WHERE endpoint = %s", phone.endpoint
    ) != [(False,)]:
        assert time.monotonic() < deadline, "not disabled"
        time.sleep(0.05)
    assert (
        world.notifier.metric("carewatch_push_deliveries_total", {"result": "gone"})
        == gone_before + 1
    )
    second = org.alarm()
    time.sleep(1.0)
    assert [p.payload["alert_id"] for p in world.push.received(phone) if p.payload] == [first]
    assert second != first
    # Subscribing again (the board's button) brings the same browser back.
    response = org.call(user, "POST", "/subscriptions", phone.json())
    assert response.status == 201, response.body
    third = org.alarm()
    wait_for(for_alert(world, phone, third))


def test_a_failed_push_is_retried(org: Org) -> None:
    """A push service that answers 503 gets the push again after the retry's wait."""
    phone = org.subscribe(org.user(f"{org.org_id}-all"), answers=(503,))
    alert_id = org.alarm()
    first, second = wait_for(lambda: org.world.push.received(phone), 2)
    assert (first.status, second.status) == (503, 201)
    assert first.payload == second.payload
    assert second.payload is not None
    assert second.payload["alert_id"] == alert_id


def test_an_escalation_pushes_again_saying_nobody_has_it(org: Org) -> None:
    """A ``notify_second_group`` step, announced as the gateway does, pushes the site's
    caregivers again as ``alert.escalated``; a step without it pushes nothing."""
    world = org.world
    phone = org.subscribe(org.user(f"{org.org_id}-all"))
    alert_id = org.alarm()
    wait_for(for_alert(world, phone, alert_id))
    for step, actions in (("call_out", ["call_out"]), ("not_accepted", ["notify_second_group"])):
        world.sql(
            "WITH e AS (INSERT INTO response_escalations (alert_id, step, actions, due_at)"
            " VALUES (%s, %s, %s, now()) RETURNING id)"
            " SELECT pg_notify('carewatch_escalations', id::text) FROM e",
            alert_id,
            step,
            actions,
        )
    opened, escalated = wait_for(for_alert(world, phone, alert_id), 2)
    assert opened.payload is not None
    assert escalated.payload is not None
    assert (escalated.payload["event"], escalated.payload["step"]) == (
        "alert.escalated",
        "not_accepted",
    )
    time.sleep(1.0)
    assert len(for_alert(world, phone, alert_id)()) == 2


def test_an_alarm_someone_has_taken_is_not_pushed_again(org: Org) -> None:
    """An escalation step of an alarm a caregiver has accepted pushes nothing."""
    world = org.world
    user = org.user(f"{org.org_id}-all")
    phone = org.subscribe(user)
    alert_id = org.alarm()
    wait_for(for_alert(world, phone, alert_id))
    accepted = call("POST", f"{world.base}/api/v1/alerts/{alert_id}/accept", token=org.tokens[user])
    assert accepted.status == 200, accepted.body
    world.sql(
        "WITH e AS (INSERT INTO response_escalations (alert_id, step, actions, due_at)"
        " VALUES (%s, 'not_accepted', '{notify_second_group}', now()) RETURNING id)"
        " SELECT pg_notify('carewatch_escalations', id::text) FROM e",
        alert_id,
    )
    time.sleep(1.0)
    assert len(for_alert(world, phone, alert_id)()) == 1


def test_the_subscription_api_is_the_callers_own(org: Org) -> None:
    """Caregivers subscribe their own browsers: https only (http for loopback when allowed),
    another user's endpoint is refused, deleting reaches only one's own, managers (who act on
    no alerts) may not; the VAPID key served is the deployment's."""
    world = org.world
    mine, theirs = org.user(f"{org.org_id}-me"), org.user(f"{org.org_id}-them")
    manager = org.user(f"{org.org_id}-boss", "manager")
    key = org.call(manager, "GET", "/vapid-public-key")
    assert (key.status, key.json()) == (200, {"public_key": world.vapid.public_b64})

    phone = org.subscribe(mine)
    assert org.call(mine, "POST", "/subscriptions", phone.json()).status == 201  # renewed
    assert org.call(theirs, "POST", "/subscriptions", phone.json()).status == 409
    assert org.call(manager, "POST", "/subscriptions", phone.json()).status == 403
    plain_http = {**phone.json(), "endpoint": "http://push.example/abc"}
    assert org.call(mine, "POST", "/subscriptions", plain_http).status == 422
    bad_keys = {**phone.json(), "keys": {"p256dh": "short", "auth": "x"}}
    assert org.call(mine, "POST", "/subscriptions", bad_keys).status == 422

    gone = {"endpoint": phone.endpoint}
    assert org.call(theirs, "DELETE", "/subscriptions", gone).status == 404
    owner = world.sql(
        "SELECT u.username FROM push_subscriptions p JOIN users u ON u.id = p.user_id"
        " WHERE p.endpoint = %s",
        phone.endpoint,
    )
    assert owner == [(mine,)]
    assert org.call(mine, "DELETE", "/subscriptions", gone).status == 204
    assert world.sql("SELECT 1 FROM push_subscriptions WHERE endpoint = %s", phone.endpoint) == []
    assert org.call(mine, "DELETE", "/subscriptions", gone).status == 404


def _escalate(world: World, alert_id: int, step: str = "not_accepted") -> None:
    """The step with notify_second_group, announced as the gateway's watchdog does."""
    world.sql(
        "WITH e AS (INSERT INTO response_escalations (alert_id, step, actions, due_at)"
        " VALUES (%s, %s, '{notify_second_group,raise_severity}', now()) RETURNING id)"
        " SELECT pg_notify('carewatch_escalations', id::text) FROM e",
        alert_id,
        step,
    )


def test_the_second_group_is_pushed_by_the_escalation_and_the_first_again(org: Org) -> None:
    """With a second group at site a: an alarm there pushes the first group only; the
    notify_second_group step pushes the first group again and the second group's member
    (``group`` says which); a caregiver who is in neither (limited to site b) gets nothing."""
    world = org.world
    admin = org.user(f"{org.org_id}-admin", "admin")
    first = org.subscribe(org.user(f"{org.org_id}-first", sites=("a",)))
    member = org.user(f"{org.org_id}-reserve")  # the area's night patrol: every site
    reserve = org.subscribe(member)
    outsider = org.subscribe(org.user(f"{org.org_id}-on-b", sites=("b",)))
    answer = call(
        "PATCH",
        f"{world.base}/api/v1/sites/{org.site('a')}",
        token=org.tokens[admin],
        json_body={"second_group": [member]},
    )
    assert answer.status == 200, answer.body

    alert_id = org.alarm("a")
    (opened,) = wait_for(for_alert(world, first, alert_id))
    assert opened.payload is not None
    assert (opened.payload["event"], opened.payload["group"]) == ("alert.opened", "first")
    _escalate(world, alert_id)
    (told,) = wait_for(for_alert(world, reserve, alert_id))
    assert told.refusal is None
    assert told.payload is not None
    assert (told.payload["event"], told.payload["step"], told.payload["group"]) == (
        "alert.escalated",
        "not_accepted",
        "second",
    )
    _, again = wait_for(for_alert(world, first, alert_id), 2)
    assert again.payload is not None
    assert (again.payload["event"], again.payload["group"]) == ("alert.escalated", "first")
    time.sleep(1.0)
    assert len(for_alert(world, reserve, alert_id)()) == 1  # not pushed when it opened
    assert world.push.received(outsider) == []


def test_a_site_without_a_second_group_alerts_its_first_group_again(org: Org) -> None:
    """Today's behaviour where no second group is named: the step pushes the first group."""
    world = org.world
    phone = org.subscribe(org.user(f"{org.org_id}-all"))
    alert_id = org.alarm("b")
    wait_for(for_alert(world, phone, alert_id))
    _escalate(world, alert_id)
    _, again = wait_for(for_alert(world, phone, alert_id), 2)
    assert again.payload is not None
    assert (again.payload["event"], again.payload["group"]) == ("alert.escalated", "first")


def _device_alert(org: Org, kind: str, rule: str, severity: str, site: str = "a") -> int:
    device_id = f"{org.org_id}-{kind}-{next(_devices)}"
    with psycopg.connect(org.world.database_url, autocommit=True) as conn:
        add_device(conn, device_id, org.site(site), kind)
    return insert_alert(org.world.database_url, device_id, rule, severity).alert_id


def test_urgent_device_faults_reach_the_technicians_not_the_caregivers(org: Org) -> None:
    """A technical alert at high or critical severity (a lock offline, a jammed lock) is pushed
    to the site's technicians, worded as a device fault; a warning is not; caregivers get no
    push of a technical alert, nor does a technician limited to another site."""
    world = org.world
    technician = org.subscribe(org.user(f"{org.org_id}-tech", "technician"))
    elsewhere = org.subscribe(org.user(f"{org.org_id}-tech-b", "technician", sites=("b",)))
    caregiver = org.subscribe(org.user(f"{org.org_id}-care"))

    offline = _device_alert(org, "door_lock", "device_offline", "high")
    jammed = _device_alert(org, "door_lock", "lock_jammed", "critical")
    minor = _device_alert(org, "door_lock", "tamper", "warning")
    for alert_id, rule in ((offline, "device_offline"), (jammed, "lock_jammed")):
        (push,) = wait_for(for_alert(world, technician, alert_id))
        assert push.refusal is None, push.refusal
        assert push.payload is not None
        assert (push.payload["rule"], push.payload["event"]) == (rule, "alert.opened")
        assert (push.payload["audience"], push.payload["group"]) == ("technical", None)
    # An alarm after them: once the caregiver has it, the device faults would have come first.
    alarm = org.alarm("a")
    wait_for(for_alert(world, caregiver, alarm))
    time.sleep(1.0)
    assert for_alert(world, technician, minor)() == []
    assert for_alert(world, technician, alarm)() == []  # alarms are the caregivers'
    assert {p.payload["alert_id"] for p in world.push.received(caregiver) if p.payload} == {alarm}
    assert world.push.received(elsewhere) == []


def test_technicians_subscribe_and_anyone_deletes_their_own(org: Org) -> None:
    """A technician's browser is subscribed (201); a manager deletes a subscription of their
    own (a role changed since), though they may not make one."""
    world = org.world
    org.subscribe(org.user(f"{org.org_id}-tech", "technician"))
    manager = org.user(f"{org.org_id}-boss", "manager")
    endpoint = f"{world.push.origin}/left-{org.org_id}"
    world.sql(
        "INSERT INTO push_subscriptions (user_id, endpoint, p256dh, auth)"
        " SELECT id, %s, %s, %s FROM users WHERE username = %s",
        endpoint,
        "B" + "A" * 86,
        "A" * 22,
        manager,
    )
    assert org.call(manager, "DELETE", "/subscriptions", {"endpoint": endpoint}).status == 204
    assert world.sql("SELECT 1 FROM push_subscriptions WHERE endpoint = %s", endpoint) == []
