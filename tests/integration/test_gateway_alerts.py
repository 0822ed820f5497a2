"""Alert rules in the gateway: real MQTT in, alerts, their changes and NOTIFY out."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from carewatch.processes import free_port
from carewatch.settings import Settings
from tests.fixtures.gateway_process import GatewayProcess, wait_until
from tests.fixtures.mqtt import envelope, events_topic, publish_all, status_topic
from tests.fixtures.services import MakeSettings, SeededRegistry


def alerts_of(database_url: str, device_id: str) -> list[dict[str, Any]]:
    with psycopg.connect(database_url) as conn:
        cur = conn.execute(
            """
            SELECT rule, severity, state, count, cleared_at IS NOT NULL AS cleared,
                   escalated_at IS NOT NULL AS escalated, resolved_by
            FROM alerts WHERE device_id = %s ORDER BY id
            """,
            (device_id,),
        )
        names = [c.name for c in cur.description or []]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def changes_of(database_url: str, device_id: str) -> list[str]:
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            """
            SELECT c.change FROM alert_changes c JOIN alerts a ON a.id = c.alert_id
            WHERE a.device_id = %s ORDER BY c.id
            """,
            (device_id,),
        ).fetchall()
    return [r[0] for r in rows]


@pytest.fixture
def gateway(settings: Settings, tmp_path: Path) -> Iterator[GatewayProcess]:
    with GatewayProcess(settings, tmp_path / "gateway.log") as process:
        yield process


def test_alarm_pressed_opens_a_critical_alert_and_notifies(
    publisher_url: str, settings: Settings, seeded: SeededRegistry, gateway: GatewayProcess
) -> None:
    """alarm.pressed opens one critical alert, records alert.opened and NOTIFYs its change id."""
    button = seeded.device("alarm_button")
    with psycopg.connect(settings.database_url, autocommit=True) as listener:
        listener.execute("LISTEN carewatch_alerts")
        publish_all(publisher_url, [(events_topic(button), envelope("p1", "alarm.pressed"))])
        wait_until(lambda: len(alerts_of(settings.database_url, button)) == 1)
        notifications = listener.notifies(timeout=5, stop_after=1)
        payloads = [n.payload for n in notifications]
    [alert] = alerts_of(settings.database_url, button)
    assert (alert["rule"], alert["severity"], alert["state"]) == (
        "alarm_pressed",
        "critical",
        "open",
    )
    assert changes_of(settings.database_url, button) == ["alert.opened"]
    with psycopg.connect(settings.database_url) as conn:
        row = conn.execute("SELECT max(id) FROM alert_changes").fetchone()
    assert row is not None
    assert payloads == [str(row[0])]


def test_resent_event_does_not_count_twice(
    publisher_url: str, settings: Settings, seeded: SeededRegistry, gateway: GatewayProcess
) -> None:
    """A resend of the same alarm.pressed is stored once and does not repeat the alert."""
    button = seeded.device("alarm_button")
    payload = envelope("p1", "alarm.pressed")
    publish_all(publisher_url, [(events_topic(button), payload)] * 3)
    wait_until(lambda: gateway.metric("carewatch_events_duplicate_total") == 2.0)
    [alert] = alerts_of(settings.database_url, button)
    assert alert["count"] == 1


def test_repeats_increase_the_count_of_the_one_open_alert(
    publisher_url: str, settings: Settings, seeded: SeededRegistry, gateway: GatewayProcess
) -> None:
    """Three presses: one open alert with count 3."""
    button = seeded.device("alarm_button")
    publish_all(
        publisher_url,
        [(events_topic(button), envelope(f"p{i}", "alarm.pressed")) for i in range(3)],
    )
    wait_until(lambda: [a["count"] for a in alerts_of(settings.database_url, button)] == [3])


def test_low_battery_warning_resolves_itself_when_the_battery_is_replaced(
    publisher_url: str, settings: Settings, seeded: SeededRegistry, gateway: GatewayProcess
) -> None:
    """battery 15 opens a warning; battery 100 later resolves it (a warning needs no ack)."""
    lock = seeded.device("door_lock")
    start = datetime.now(UTC) - timedelta(minutes=10)
    publish_all(
        publisher_url,
        [(events_topic(lock), envelope("b1", "heartbeat", {"battery": 15}, ts=start))],
    )
    wait_until(lambda: len(alerts_of(settings.database_url, lock)) == 1)
    publish_all(
        publisher_url,
        [(events_topic(lock), envelope("b2", "heartbeat", {"battery": 100}))],
    )
    wait_until(lambda: alerts_of(settings.database_url, lock)[0]["state"] == "resolved")
    [alert] = alerts_of(settings.database_url, lock)
    assert (alert["rule"], alert["severity"], alert["resolved_by"]) == (
        "battery_low",
        "warning",
        "system",
    )
    assert changes_of(settings.database_url, lock) == ["alert.opened", "alert.resolved"]
    # Each reason as English and as data (issue 12): the board says the data in its language.
    with psycopg.connect(settings.database_url) as conn:
        reasons = conn.execute(
            "SELECT reason, reason_code, reason_args, cleared_reason, cleared_reason_code,"
            " cleared_reason_args FROM alerts WHERE device_id = %s",
            (lock,),
        ).fetchone()
    assert reasons == (
        "battery 15 %",
        "battery",
        {"level": 15},
        "battery 100 %",
        "battery",
        {"level": 100},
    )


def test_unacknowledged_high_alert_stays_on_the_board_marked_cleared(
    publisher_url: str, settings: Settings, seeded: SeededRegistry, gateway: GatewayProcess
) -> None:
    """lock.jammed then lock.locked: nobody acknowledged it, so it stays, marked cleared."""
    lock = seeded.device("door_lock")
    start = datetime.now(UTC) - timedelta(minutes=5)
    publish_all(
        publisher_url,
        [
            (events_topic(lock), envelope("j1", "lock.jammed", ts=start)),
            (
                events_topic(lock),
                envelope("l1", "lock.locked", {"by": "staff-1", "method": "key"}),
            ),
        ],
    )
    wait_until(lambda: [a["cleared"] for a in alerts_of(settings.database_url, lock)] == [True])
    [alert] = alerts_of(settings.database_url, lock)
    assert (alert["rule"], alert["state"]) == ("lock_jammed", "open")


def test_last_will_opens_device_offline_and_the_next_message_clears_it(
    publisher_url: str, settings: Settings, seeded: SeededRegistry, gateway: GatewayProcess
) -> None:
    """Status "offline" opens device_offline; any later message clears it."""
    camera = seeded.device("safety_camera")
    publish_all(publisher_url, [(events_topic(camera), envelope("h1"))])
    wait_until(lambda: gateway.metric("carewatch_events_stored_total", 'kind="safety_camera"'))
    publish_all(publisher_url, [(status_topic(camera), b"offline")])
    wait_until(
        lambda: [a["rule"] for a in alerts_of(settings.database_url, camera)] == ["device_offline"]
    )
    assert alerts_of(settings.database_url, camera)[0]["severity"] == "critical"
    publish_all(publisher_url, [(events_topic(camera), envelope("h2"))])
    wait_until(lambda: alerts_of(settings.database_url, camera)[0]["cleared"] is True)


def test_a_site_override_out_of_bounds_leaves_the_others_in_force(
    publisher_url: str,
    make_settings: MakeSettings,
    database_url: str,
    seeded: SeededRegistry,
    tmp_path: Path,
) -> None:
    """A stored record with one value beyond its bound (written before the bounds existed):
    the gateway still applies the site's other overrides (the alarm escalates after the site's
    1 s) and says once which override it left at its default, not once per device and tick."""
    with psycopg.connect(database_url) as conn:
        conn.execute(
            "UPDATE sites SET rule_settings ="
            ' \'{"escalation_s": 1, "door_left_unlocked_min": 99999999999}\' WHERE id = %s',
            (seeded.site_id,),
        )
    settings = make_settings(database_url, watchdog_interval_s=0.3)
    button = seeded.device("alarm_button")
    with GatewayProcess(settings, tmp_path / "gateway.log") as gateway:
        publish_all(publisher_url, [(events_topic(button), envelope("p1", "alarm.pressed"))])
        wait_until(lambda: [a["escalated"] for a in alerts_of(database_url, button)] == [True], 20)
        publish_all(
            publisher_url,
            [(events_topic(seeded.device("door_lock")), envelope(f"h{i}")) for i in range(3)],
        )
        time.sleep(1.5)  # several more watchdog passes
        warnings = [line for line in gateway.log().splitlines() if "left at its default" in line]
    assert len(warnings) == 1, warnings
    assert "door_left_unlocked_min" in warnings[0]
    assert seeded.site_id in warnings[0]


def test_two_gateways_open_exactly_one_alert_and_escalate_it_once(
    publisher_url: str,
    make_settings: MakeSettings,
    database_url: str,
    seeded: SeededRegistry,
    tmp_path: Path,
) -> None:
    """Two gateways on one shared subscription: one alarm alert, all presses counted, one
    escalation by the watchdog after the site's escalation time."""
    with psycopg.connect(database_url) as conn:
        conn.execute(
            "UPDATE sites SET rule_settings = '{\"escalation_s\": 1}' WHERE id = %s",
            (seeded.site_id,),
        )
    first = make_settings(database_url, watchdog_interval_s=0.3)
    second = first.model_copy(
        update={"gateway_client_id": first.gateway_client_id + "-b", "metrics_port": free_port()}
    )
    button = seeded.device("alarm_button")
    presses = 40
    with (
        GatewayProcess(first, tmp_path / "a.log") as a,
        GatewayProcess(second, tmp_path / "b.log") as b,
    ):
        publish_all(
            publisher_url,
            [(events_topic(button), envelope(f"p{i}", "alarm.pressed")) for i in range(presses)],
        )
        wait_until(
            lambda: (
                (a.metric("carewatch_messages_received_total") or 0)
                + (b.metric("carewatch_messages_received_total") or 0)
                >= presses
            )
        )
        # Both gateways took part (the broker splits a shared subscription between them).
        assert (a.metric("carewatch_messages_received_total") or 0) > 0
        assert (b.metric("carewatch_messages_received_total") or 0) > 0
        # The received count can run ahead of the commit that opens the alert.
        wait_until(lambda: [a["escalated"] for a in alerts_of(database_url, button)] == [True], 20)
        # Every gateway's /metrics says what is open, not only the one whose watchdog ran.
        critical = 'severity="critical"'
        wait_until(
            lambda: (
                (
                    a.metric("carewatch_alerts_open", critical),
                    b.metric("carewatch_alerts_open", critical),
                )
                == (1.0, 1.0)
            ),
            15,
        )
        time.sleep(1.5)  # several more watchdog passes of both gateways
    [alert] = alerts_of(database_url, button)
    assert (alert["rule"], alert["count"], alert["state"]) == ("alarm_pressed", presses, "open")
    with psycopg.connect(database_url) as conn:
        escalations = conn.execute(
            "SELECT count(*) FROM alert_changes c JOIN alerts a ON a.id = c.alert_id"
            " WHERE a.device_id = %s AND c.change = 'alert.updated'",
            (button,),
        ).fetchone()
    # presses - 1 repeats and exactly one escalation
    assert escalations == (presses - 1 + 1,)


def test_a_device_in_maintenance_stays_silent_and_what_lasts_opens_when_it_ends(
    publisher_url: str,
    make_settings: MakeSettings,
    database_url: str,
    seeded: SeededRegistry,
    tmp_path: Path,
) -> None:
    """A lock in repair: a low battery, a jam and a tamper open nothing while the window lasts;
    an alarm press elsewhere still does. Ending the window early opens the battery and the jam
    that still last (marked as arisen during maintenance), never the tamper."""
    lock = seeded.device("door_lock")
    button = seeded.device("alarm_button")
    with psycopg.connect(database_url) as conn:
        conn.execute(
            "INSERT INTO device_maintenance (device_id, starts_at, ends_at, created_by)"
            " VALUES (%s, now() - interval '1 minute', now() + interval '1 hour', 'tech')",
            (lock,),
        )
    settings = make_settings(database_url, watchdog_interval_s=0.3)
    with GatewayProcess(settings, tmp_path / "gateway.log"):
        publish_all(
            publisher_url,
            [
                (events_topic(lock), envelope("m1", "heartbeat", {"battery": 15})),
                (events_topic(lock), envelope("m2", "lock.jammed")),
                (events_topic(lock), envelope("m3", "lock.tamper")),
                (events_topic(button), envelope("m4", "alarm.pressed")),
            ],
        )
        wait_until(lambda: len(alerts_of(database_url, button)) == 1)

        def held() -> list[Any]:
            with psycopg.connect(database_url) as conn:
                row = conn.execute(
                    "SELECT state->'held' FROM device_rule_state WHERE device_id = %s", (lock,)
                ).fetchone()
            return [] if row is None or row[0] is None else list(row[0])

        wait_until(lambda: len(held()) == 2)
        time.sleep(1.0)  # a few watchdog passes: still nothing for the lock
        assert alerts_of(database_url, lock) == []
        with psycopg.connect(database_url) as conn:
            conn.execute(
                "UPDATE device_maintenance SET ended_at = now() WHERE device_id = %s", (lock,)
            )
        wait_until(lambda: len(alerts_of(database_url, lock)) == 2)
        with psycopg.connect(database_url) as conn:
            opened = conn.execute(
                "SELECT rule, severity, reason FROM alerts WHERE device_id = %s ORDER BY rule",
                (lock,),
            ).fetchall()
    assert [(rule, severity) for rule, severity, _ in opened] == [
        ("battery_low", "warning"),
        ("lock_jammed", "high"),
    ]
    assert all(reason.endswith("(during maintenance)") for _, _, reason in opened)
    assert held() == []
