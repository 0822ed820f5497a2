"""The naive bridge, as people write it: a paho-mqtt callback, one INSERT per message.

``python -m tools.bench.naive --database-url URL`` connects to the broker of
``CAREWATCH_MQTT_URL`` as its user (the gateway's identity), subscribes (MQTT 5,
QoS 1, an ordinary subscription on a persistent session) to every device's events and, in
``on_message``, parses the JSON with the standard library and INSERTs the event on an
autocommit connection. paho acknowledges each message when the callback returns, so a message
is acknowledged after its row is committed, like the gateway's, only one at a time.
It prints ``ready`` once subscribed and runs until SIGTERM.

This is the comparison's baseline, deliberately unoptimised: do not tune it.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from datetime import UTC, datetime
from types import FrameType
from typing import Any

import paho.mqtt.client as mqtt
import psycopg
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from psycopg.types.json import Jsonb

from tools.bench.endpoints import endpoint_from_env
from tools.bench.limits import EVENTS_FILTER

_SESSION_EXPIRY_S = 3600
_INSERT = (
    "INSERT INTO events (time, received_at, device_id, event_id, type, data)"
    " VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING"
)


def main(argv: list[str] | None = None) -> int:
    """``python -m tools.bench.naive``: the bridge, until SIGTERM; its exit code."""
    parser = argparse.ArgumentParser(
        prog="python -m tools.bench.naive",
        epilog="The broker and the credentials come from CAREWATCH_MQTT_URL.",
    )
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--client-id", default="bench-naive-bridge")
    args = parser.parse_args(argv)
    endpoint = endpoint_from_env(parser)

    db = psycopg.connect(args.database_url, autocommit=True)

    def on_connect(
        client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any, properties: Any
    ) -> None:
        client.subscribe(EVENTS_FILTER, qos=1)

    def on_subscribe(
        client: mqtt.Client, userdata: Any, mid: int, reason_codes: Any, properties: Any
    ) -> None:
        print("ready", flush=True)

    def on_message(client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        try:
            event = json.loads(message.payload)
            device_id = message.topic.split("/")[2]
            db.execute(
                _INSERT,
                (
                    datetime.fromisoformat(event["ts"]),
                    datetime.now(UTC),
                    device_id,
                    event["id"],
                    event["type"],
                    Jsonb(event["data"]),
                ),
            )
        except (ValueError, KeyError, TypeError, psycopg.DataError) as error:
            print(f"skipped a message on {message.topic}: {error}", file=sys.stderr)

    client = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id=args.client_id, protocol=mqtt.MQTTv5
    )
    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    client.on_message = on_message
    if endpoint.username is not None:
        client.username_pw_set(endpoint.username, endpoint.password)
    properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    properties.SessionExpiryInterval = _SESSION_EXPIRY_S
    client.connect(endpoint.host, endpoint.port, clean_start=True, properties=properties)

    def stop(signum: int, frame: FrameType | None) -> None:
        client.disconnect()

    signal.signal(signal.SIGTERM, stop)
    try:
        client.loop_forever()
    finally:
        db.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
