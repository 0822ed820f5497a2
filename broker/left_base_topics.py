"""Clearing what a zigbee2mqtt bridge left behind on a base topic it left (+#13, migration 0017).

A bridge's zigbee2mqtt publishes its device list retained on ``<base>/bridge/devices``; after
the bridge moves away or is deleted, the broker still holds it, and a bridge of another
organisation given that base topic would be sent it on subscribe (the gateway would store it
as the new bridge's announcement). So the base topic is remembered in
``bridge_left_base_topics`` and refused to other organisations (:mod:`carewatch.fleet`) until
an operator runs ``carewatch broker clear-announcement BASE``: it publishes an empty retained
message there (MQTT's way to delete a retained message), then forgets the base topic.

It publishes as an account of role ``operator``, whose only grant is writing
``<base>/bridge/devices`` of the base topics in that table (broker/auth_files.py): no existing
account may (a bridge only its own base's, the gateway nothing), and widening either would
give a networked service a write it never needs. QoS 1 over MQTT 5, so that a refusal by the
ACL comes back as a PUBACK reason code and the table is left as it was.
"""

from __future__ import annotations

import threading
import time
from typing import Final

import paho.mqtt.client as mqtt
import psycopg
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from carewatch.errors import AdminError
from carewatch.settings import MqttEndpoint
from devices.zigbee2mqtt_bridges import announcement_topic, check_base_topic

__all__ = ["clear_announcement"]

_LEFT: Final = "SELECT 1 FROM bridge_left_base_topics WHERE base_topic = %s"
# The broker_auth trigger (0017) re-renders the files: the operator's grant goes with the row.
_FORGET_LEFT: Final = "DELETE FROM bridge_left_base_topics WHERE base_topic = %s"
_TIMEOUT_S: Final = 10.0


def clear_announcement(
    conn: psycopg.Connection[tuple[object, ...]],
    endpoint: MqttEndpoint,
    username: str,
    password: str,
    base_topic: str,
    *,
    ca_file: str | None = None,
) -> str:
    """Delete the retained device list on ``base_topic``'s ``bridge/devices`` and forget that a
    bridge left it, so that any organisation may take it; the topic cleared.

    AdminError when no bridge has left it (nothing to clear) or the broker refuses the login or
    the publish (not an operator account, or the broker's files not yet re-rendered).
    """
    if (reason := check_base_topic(base_topic)) is not None:
        raise AdminError(f"base topic {base_topic!r}: {reason}")
    if conn.execute(_LEFT, (base_topic,)).fetchone() is None:
        raise AdminError(f"no bridge has left base topic {base_topic!r}: nothing to clear")
    topic = announcement_topic(base_topic)
    code = _publish_empty_retained(endpoint, username, password, topic, ca_file)
    if code.is_failure:
        raise AdminError(
            f"the broker refused to clear {topic} as {username!r} ({code}): the account needs"
            " role operator (carewatch broker account set USERNAME --role operator)"
        )
    conn.execute(_FORGET_LEFT, (base_topic,))
    return topic


def _publish_empty_retained(
    endpoint: MqttEndpoint, username: str, password: str, topic: str, ca_file: str | None
) -> ReasonCode:
    """One QoS 1 retained publish of nothing; the CONNACK's reason code if refused, else the
    PUBACK's."""
    connected = threading.Event()
    acked = threading.Event()
    codes: list[ReasonCode] = []
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=f"carewatch-clear-{time.time_ns()}",
        protocol=mqtt.MQTTv5,
    )
    client.username_pw_set(username, password)
    if endpoint.tls:
        client.tls_set(ca_certs=ca_file or None)

    def on_connect(_c: mqtt.Client, _u: object, _f: object, code: ReasonCode, _p: object) -> None:
        codes.append(code)
        connected.set()

    def on_publish(_c: mqtt.Client, _u: object, _mid: int, code: ReasonCode, _p: object) -> None:
        codes.append(code)
        acked.set()

    client.on_connect = on_connect
    client.on_publish = on_publish
    try:
        client.connect(endpoint.host, endpoint.port, clean_start=True)
    except OSError as error:
        raise AdminError(f"cannot reach the broker at {endpoint!r}: {error}") from error
    client.loop_start()
    try:
        if not connected.wait(_TIMEOUT_S):
            raise AdminError(f"no answer from the broker at {endpoint!r}")
        if codes[0].is_failure:
            return codes[0]
        client.publish(topic, b"", qos=1, retain=True)
        if not acked.wait(_TIMEOUT_S):
            raise AdminError(f"the broker at {endpoint!r} did not acknowledge the publish")
        return codes[1]
    finally:
        client.disconnect()
        client.loop_stop()
