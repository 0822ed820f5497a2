"""The operator account's ACL (migration 0017): it may only delete the retained device lists of
base topics bridges have left, and reads nothing (pure; the broker enforcing it is proven in
tests/integration/test_bridge_left_base_topics.py)."""

from __future__ import annotations

from broker.auth_files import Account, BrokerAuth, Role, render

OPERATOR = Account("carewatch.operator", Role.OPERATOR, "$7$101$o$O")
BRIDGE = Account("zigbee2mqtt.hub-1", Role.ZIGBEE2MQTT_BRIDGE, "$7$101$b$B", "hus-b")


def grants_of(auth: BrokerAuth, username: str) -> list[str]:
    """The topic lines of ``username``'s section of the ACL file."""
    lines = render(auth).acl_file.splitlines()
    section = lines[lines.index(f"user {username}") + 1 :]
    end = next((i for i, line in enumerate(section) if line.startswith("user ")), len(section))
    return [line for line in section[:end] if line.startswith("topic ")]


def test_the_operator_writes_only_bridge_devices_of_left_base_topics() -> None:
    """One write line per left base topic (each once, sorted), on its bridge/devices only."""
    auth = BrokerAuth(
        accounts=[OPERATOR, BRIDGE], left_base_topics=["hus-a/z2m", "zigbee2mqtt", "hus-a/z2m"]
    )
    assert grants_of(auth, "carewatch.operator") == [
        "topic write hus-a/z2m/bridge/devices",
        "topic write zigbee2mqtt/bridge/devices",
    ]


def test_the_operator_has_no_grant_while_no_base_topic_was_left() -> None:
    """Nothing left, nothing granted: the account can then neither publish nor read."""
    assert grants_of(BrokerAuth(accounts=[OPERATOR, BRIDGE]), "carewatch.operator") == []
