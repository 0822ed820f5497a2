"""Rendering Mosquitto's password and ACL files, and the password hashes in them (pure).

That Mosquitto accepts these files and enforces them is proven against a real broker in
tests/integration/test_broker_security.py.
"""

from __future__ import annotations

from broker.auth_files import Account, BrokerAuth, Role, render
from carewatch.broker_passwords import hash_password, new_password, verify_password


def active_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line and not line.startswith("#")]


def test_a_password_verifies_against_its_hash_and_nothing_else() -> None:
    password = new_password()
    stored = hash_password(password)
    assert stored.startswith("$7$101$")
    assert password not in stored
    assert verify_password(password, stored)
    assert not verify_password(password + "x", stored)
    assert not verify_password(password, "$6$nonsense")
    assert not verify_password(password, "garbage")
    # A fresh salt every time: equal passwords do not give equal hashes.
    assert hash_password(password) != stored


def test_new_passwords_are_long_random_and_url_safe() -> None:
    passwords = {new_password() for _ in range(100)}
    assert len(passwords) == 100
    for password in passwords:
        assert len(password) == 24
        assert password.replace("-", "").replace("_", "").isalnum()


def test_password_file_has_one_line_per_identity_sorted() -> None:
    auth = BrokerAuth(
        devices={"lock-2": "$7$101$b$B", "lock-1": "$7$101$a$A"},
        accounts=[Account("carewatch.gateway", Role.GATEWAY, "$7$101$g$G")],
    )
    assert active_lines(render(auth).password_file) == [
        "lock-1:$7$101$a$A",
        "lock-2:$7$101$b$B",
        "carewatch.gateway:$7$101$g$G",
    ]


def test_acl_lets_devices_write_only_their_own_topics_and_gateways_only_read() -> None:
    auth = BrokerAuth(
        devices={"lock-1": "$7$101$a$A"},
        accounts=[Account("carewatch.gateway", Role.GATEWAY, "$7$101$g$G")],
    )
    lines = active_lines(render(auth).acl_file)
    assert lines[0] == "pattern write carewatch/devices/%u/#"
    gateway = lines[lines.index("user carewatch.gateway") + 1 :]
    assert gateway, "the gateway has no grants"
    assert all(line.startswith("topic read ") for line in gateway)
    assert "topic read $share/+/carewatch/devices/+/events" in gateway
    assert "topic read carewatch/devices/+/status" in gateway


def test_a_bridge_may_write_only_for_its_own_devices() -> None:
    auth = BrokerAuth(
        accounts=[
            Account("zigbee2mqtt.hub-1", Role.ZIGBEE2MQTT_BRIDGE, "$7$101$1$1"),
            Account("zigbee2mqtt.hub-2", Role.ZIGBEE2MQTT_BRIDGE, "$7$101$2$2"),
        ],
        bridged={"zigbee2mqtt.hub-1": ["front_door", "kitchen_leak"]},
    )
    text = render(auth).acl_file
    hub_1 = text.split("user zigbee2mqtt.hub-1\n")[1].split("\n\n")[0].splitlines()
    assert hub_1 == [
        "topic write zigbee2mqtt/front_door",
        "topic write zigbee2mqtt/front_door/availability",
        "topic write zigbee2mqtt/kitchen_leak",
        "topic write zigbee2mqtt/kitchen_leak/availability",
    ]
    hub_2 = text.split("user zigbee2mqtt.hub-2\n")[1]
    assert "topic" not in hub_2  # no devices yet: it may connect, and publish nothing


def test_rendering_is_stable() -> None:
    """Same identities, same bytes: the sync compares files and reloads only on a change."""
    accounts = [
        Account("carewatch.simulator", Role.SIMULATOR, "$7$101$s$S"),
        Account("carewatch.gateway", Role.GATEWAY, "$7$101$g$G"),
    ]
    first = render(BrokerAuth(devices={"b": "h", "a": "h"}, accounts=accounts))
    second = render(BrokerAuth(devices={"a": "h", "b": "h"}, accounts=accounts[::-1]))
    assert first == second


def test_friendly_names_are_written_as_they_are_and_unwritable_ones_left_out() -> None:
    """Spaces, UTF-8 and levels go into a topic line verbatim (Mosquitto takes the rest of the
    line); a name that would split or lose part of its line (hand-made rows) gets no grant."""
    auth = BrokerAuth(
        accounts=[Account("zigbee2mqtt.hub-1", Role.ZIGBEE2MQTT_BRIDGE, "$7$101$1$1")],
        bridged={
            "zigbee2mqtt.hub-1": [
                "Lgh 14 lås",
                "kitchen/door",
                "evil\ntopic write #",
                "trailing ",
                "bridge",
            ]
        },
    )
    text = render(auth).acl_file
    hub_1 = text.split("user zigbee2mqtt.hub-1\n")[1].split("\n\n")[0].splitlines()
    assert "topic write zigbee2mqtt/Lgh 14 lås" in hub_1
    assert "topic write zigbee2mqtt/Lgh 14 lås/availability" in hub_1
    assert "topic write zigbee2mqtt/kitchen/door" in hub_1
    assert "topic write zigbee2mqtt/kitchen/door/availability" in hub_1
    assert not [line for line in hub_1 if "evil" in line or "trailing" in line or "#" in line]
    assert "topic write zigbee2mqtt/bridge" not in hub_1
