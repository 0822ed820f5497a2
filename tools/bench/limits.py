"""The two limits the gateway is compared with: what the broker delivers, what COPY stores.

Broker limit: subscribers that do nothing but acknowledge, fed by the same publishers. They
connect as the gateway (its identity may read exactly the device topics), so the broker's
authentication and ACL checks are in the limit as they are in the gateway's measurement.
- ``python -m tools.bench.limits`` is the minimal mqtt5 subscriber: a plain asyncio
  Protocol, PUBACKs of each ``data_received`` call concatenated into one write. It prints
  ``ready`` once subscribed and ``done <count> <monotonic time of the last message>``.
- Debian's ``mosquitto_sub -q 1 -C N`` writing to /dev/null, on a persistent session made
  before the clock starts; its credentials come from an options file
  (``endpoints.mosquitto_client_env``).

COPY limit: the same rows, pre-rendered, COPYed into ``events`` of a fresh database (its
indexes and unique key are the ones the gateway writes through) in committed batches.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Sequence
from typing import cast

import mqtt5
import psycopg

from carewatch.settings import MqttEndpoint
from tools.bench.endpoints import (
    connect_packet,
    endpoint_from_env,
    mosquitto_tls_argv,
    ssl_context,
)
from tools.bench.workload import COPY_COLUMNS

# A device topic, which the gateway's identity may read (broker.auth_files).
EVENTS_FILTER = "carewatch/devices/+/events"
# The most a client may announce: the broker may keep this many QoS 1 messages in flight to
# us, so the limit is the broker's, not a window's.
_RECEIVE_MAX = 65535
# Long enough to outlive the run, short enough that a crashed run leaves nothing for days.
_SESSION_EXPIRY_S = 3600


class AckingSubscriber(asyncio.Protocol):
    """Subscribes to every device's events at QoS 1 and only acknowledges them."""

    def __init__(
        self,
        endpoint: MqttEndpoint,
        client_id: str,
        target: int,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.endpoint = endpoint
        self.client_id = client_id
        self.target = target
        self.count = 0
        self.subscribed: asyncio.Future[None] = loop.create_future()
        self.reached: asyncio.Future[float] = loop.create_future()
        self.lost: asyncio.Future[None] = loop.create_future()
        self._transport: asyncio.Transport | None = None
        self._pending = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Send CONNECT and SUBSCRIBE at once."""
        # create_connection() over TCP always hands a Transport to its protocol.
        self._transport = cast(asyncio.Transport, transport)
        connect = connect_packet(
            self.endpoint,
            self.client_id,
            clean_start=True,
            session_expiry_interval=_SESSION_EXPIRY_S,
            receive_max=_RECEIVE_MAX,
        )
        subscribe = mqtt5.SubscribePacket(
            1, [mqtt5.TopicFilter(EVENTS_FILTER, max_qos=mqtt5.QoS.AT_LEAST_ONCE)]
        )
        # The broker handles packets in order, so SUBSCRIBE may follow CONNECT without waiting.
        self._transport.write(connect + subscribe.write())

    def data_received(self, data: bytes) -> None:
        """Count the PUBLISHes that arrived and acknowledge them all in one write."""
        buffer = self._pending + data if self._pending else data
        view = memoryview(buffer)
        position = 0
        acks = []
        while position < len(buffer):
            try:
                packet, size = mqtt5.read(view[position:])
            except IndexError:  # "Not enough bytes": the rest comes with the next call
                break
            position += size
            if isinstance(packet, mqtt5.PublishPacket):
                self.count += 1
                if packet.packet_id is not None:
                    acks.append(mqtt5.PubAckPacket(packet.packet_id).write())
            elif isinstance(packet, mqtt5.SubAckPacket):
                # A filter the ACL does not allow is refused here, not at connect; anything
                # but the QoS 1 we asked for would measure something else.
                granted = packet.reason_codes
                if granted != [mqtt5.SubAckReasonCode.GRANTED_QOS_AT_LEAST_ONCE]:
                    self._fail(f"subscription not granted at QoS 1: {granted!r}")
                elif not self.subscribed.done():
                    self.subscribed.set_result(None)
            elif isinstance(packet, mqtt5.ConnAckPacket):
                if packet.reason_code != mqtt5.ConnAckReasonCode.SUCCESS:
                    self._fail(f"connect refused: {packet.reason_code!r}")
            elif isinstance(packet, mqtt5.DisconnectPacket):
                self._fail(f"broker disconnected us: {packet.reason_code!r}")
        self._pending = bytes(view[position:])
        view.release()
        if acks and self._transport is not None:
            self._transport.write(b"".join(acks))
        if self.count >= self.target and not self.reached.done():
            self.reached.set_result(time.monotonic())

    def connection_lost(self, exc: Exception | None) -> None:
        """A failure unless the target was reached."""
        if not self.reached.done():  # after the target, closing is ours and expected
            self._fail(f"connection lost: {exc}")

    def _fail(self, problem: str) -> None:
        if not self.lost.done():
            self.lost.set_exception(ConnectionError(problem))


async def _subscribe_and_count(endpoint: MqttEndpoint, client_id: str, target: int) -> int:
    loop = asyncio.get_running_loop()
    transport, subscriber = await loop.create_connection(
        lambda: AckingSubscriber(endpoint, client_id, target, loop),
        endpoint.host,
        endpoint.port,
        ssl=ssl_context(endpoint),
    )
    try:
        for waiting in (subscriber.subscribed, subscriber.reached):
            await asyncio.wait({waiting, subscriber.lost}, return_when=asyncio.FIRST_COMPLETED)
            if subscriber.lost.done():
                subscriber.lost.result()  # raises the reason
            if waiting is subscriber.subscribed:
                print("ready", flush=True)
        print(f"done {subscriber.count} {subscriber.reached.result()!r}", flush=True)
        # Leave no session behind: expiry 0 on DISCONNECT ends it with this connection.
        transport.write(mqtt5.DisconnectPacket(session_expiry_interval=0).write())
    finally:
        transport.close()
    return 0


def subscriber_main(argv: Sequence[str] | None = None) -> int:
    """``python -m tools.bench.limits``: the minimal subscriber; its exit code."""
    parser = argparse.ArgumentParser(
        prog="python -m tools.bench.limits",
        epilog="The broker and the credentials come from CAREWATCH_MQTT_URL.",
    )
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--client-id", default="bench-limit-sub")
    args = parser.parse_args(argv)
    endpoint = endpoint_from_env(parser)
    try:
        return asyncio.run(_subscribe_and_count(endpoint, args.client_id, args.count))
    except ConnectionError as error:
        print(f"subscriber: {error}", file=sys.stderr)
        return 1


def mosquitto_sub_argv(
    mqtt_url: str, client_id: str, *, count: int | None, ca_file: str | None = None
) -> list[str]:
    """Debian's mosquitto_sub on a persistent session (``-c``): without ``count``, only subscribe.

    With ``-E`` it exits once subscribed, leaving the session with its subscription behind, so
    that the measuring run can start later and still receive everything published meanwhile.
    The credentials are not on this command line: run it with ``endpoints.mosquitto_client_env``.
    Over TLS it verifies the broker with ``ca_file`` (default: ``CAREWATCH_MQTT_CA_FILE``).
    """
    endpoint = MqttEndpoint(mqtt_url)
    argv = ["mosquitto_sub", "-h", endpoint.host, "-p", str(endpoint.port), "-q", "1", "-c"]
    argv += ["-i", client_id, "-t", EVENTS_FILTER, *mosquitto_tls_argv(endpoint, ca_file)]
    argv += ["-E"] if count is None else ["-C", str(count)]
    return argv


def copy_rows(database_url: str, batches: Sequence[bytes]) -> float:
    """COPY the pre-rendered batches into ``events``, one commit each; the seconds it took."""
    with psycopg.connect(database_url) as conn:
        with conn.cursor() as cursor:
            cursor.execute("TRUNCATE events")
        conn.commit()
        started_at = time.perf_counter()
        for batch in batches:
            with (
                conn.cursor() as cursor,
                cursor.copy(f"COPY events ({COPY_COLUMNS}) FROM STDIN") as copy,
            ):
                copy.write(batch)
            conn.commit()
        return time.perf_counter() - started_at


if __name__ == "__main__":
    sys.exit(subscriber_main())
