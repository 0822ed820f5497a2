"""The soak's background load: a publisher process that outlives broker restarts and keeps count.

``carewatch bench ingest`` and ``alerts`` publish a pre-encoded file and stop at the first
broken connection; a soak runs for many minutes through broker restarts, so each of its
publisher processes (``python -m tools.bench.soak_publisher``) instead:

- generates the workload as it goes (``workload.make_workload`` one round of the fleet at a
  time: every device one event per round, mostly heartbeats, the everyday events of each kind),
  keeping only the devices it owns (device index modulo the publishers), and gives each event
  its own id ``bg<publisher>-<seq>``, so that the run's events are ``0 .. sent-1`` per publisher;
- sends them paced at ``--rate`` at QoS 1, at most the broker's Receive Maximum unacknowledged;
- when the connection breaks, reconnects with capped backoff and sends again, in order, every
  event that had no PUBACK yet (at least once, as a device does; the gateway stores a resent
  event once);
- when the broker answers PUBACK reason 16 ("no matching subscribers": nobody subscribed, so it
  dropped the message; after a broker restart until the gateways have subscribed again), keeps
  the event and sends it again after 1 s, doubling up to 8 s, until the broker answers Success,
  as the device contract asks (``docs/contract.md``, MQTT);
- after ``--duration`` seconds stops generating, waits up to ``--drain`` seconds for the last
  PUBACKs and prints ``done <json>``: how many it sent, every PUBACK 16 (sequence number and
  when), which were refused otherwise and which had no Success by the end.

Every other sequence number was acknowledged with Success, at once or after resends: it must be
in ``events``.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import heapq
import json
import select
import socket
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import mqtt5

from carewatch.settings import MqttEndpoint
from tools.bench.endpoints import (
    connect_packet,
    connect_socket,
    endpoint_from_env,
    read_packet,
    tls_pending,
)
from tools.bench.workload import make_workload

_MAX_PACKET_ID = 65535
_RECONNECT_MIN_S = 0.1
_RECONNECT_MAX_S = 2.0
# An event refused with 16 goes again after 1 s, doubling up to 8 s (the device contract).
_UNROUTED_RESEND_MIN_S = 1.0
_UNROUTED_RESEND_MAX_S = 8.0
_CONNECT_TIMEOUT_S = 5.0
# A paced publisher wakes at least this often (sends in small bursts, not one by one).
_MIN_SLEEP_S = 0.001
# Without a PUBACK for this long while messages are in flight, the connection is dead.
_ACK_TIMEOUT_S = 15.0


def event_id(publisher: int, seq: int) -> str:
    """The id of a publisher's ``seq``-th event (what ``soak`` looks for in ``events``)."""
    return f"bg{publisher}-{seq:09d}"


@dataclass(slots=True)
class _Outcome:
    sent: int = 0  # sequence numbers generated and sent at least once
    # Every PUBACK reason 16, with when it came (time.time()): which fault it belongs to. An
    # event refused twice is here twice; each was sent again.
    unrouted: list[tuple[int, float]] = field(default_factory=list)
    refused: list[int] = field(default_factory=list)  # another error reason: given up
    resent: int = 0  # sent again after a reconnect or a PUBACK 16
    reconnects: int = 0


@dataclass(slots=True)
class _Pending:
    """One event until the broker answers Success: its sequence number and MQTT message."""

    seq: int
    topic: str
    payload: bytes
    refusals: int = 0  # PUBACKs 16 so far

    def resend_delay_s(self) -> float:
        """After its latest PUBACK 16: 1 s, 2 s, 4 s, then 8 s."""
        return min(_UNROUTED_RESEND_MAX_S, _UNROUTED_RESEND_MIN_S * 2.0 ** (self.refusals - 1))


class _Source:
    """The publisher's events in order, generated one round of the fleet at a time."""

    def __init__(self, publisher: int, publishers: int, devices: int, rate: float) -> None:
        self.publisher = publisher
        self.publishers = publishers
        self.devices = devices
        # One round: every device of the fleet (all publishers) once, at the total rate.
        self.round_s = devices / (rate * publishers)
        self.rounds = 0
        self.started = datetime.now(UTC)
        self.queue: collections.deque[bytes] = collections.deque()
        self.seq = 0

    def next_event(self) -> _Pending:
        """The next event, with its sequence number."""
        if not self.queue:
            self._generate()
        seq = self.seq
        self.seq += 1
        topic, _, payload = self.queue.popleft().partition(b"\t")
        return _Pending(seq, topic.decode(), payload)

    def _generate(self) -> None:
        self.rounds += 1
        # Device times of this round run up to its end, at the pace they are sent.
        data = make_workload(
            events=self.devices,
            devices=self.devices,
            publishers=self.publishers,
            now=self.started + timedelta(seconds=self.rounds * self.round_s),
            span_s=self.round_s,
            seed=self.rounds,
        )
        seq = self.seq
        for event in data.events:
            if data.publisher_of(event) != self.publisher:
                continue
            topic = data.devices[event.device].topic
            envelope = (
                f'{{"v":1,"id":"{event_id(self.publisher, seq)}","ts":"{event.ts}",'
                f'"type":"{event.type}","data":{event.data_json}}}'
            )
            self.queue.append(f"{topic}\t{envelope}".encode())
            seq += 1


class _Connection:
    """One MQTT 5 session over TCP or TLS that reads PUBACKs without blocking."""

    def __init__(self, endpoint: MqttEndpoint, client_id: str) -> None:
        sock = connect_socket(endpoint, timeout_s=_CONNECT_TIMEOUT_S)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.sendall(connect_packet(endpoint, client_id, clean_start=True))
            connack = read_packet(sock)
            if not isinstance(connack, mqtt5.ConnAckPacket) or connack.reason_code != 0:
                raise ConnectionError(f"connect refused: {connack!r}")
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        self.sock = sock
        self.window: int = connack.receive_max
        self._buffer = b""
        self._packet_id = 0

    def publish_packet(self, event: _Pending) -> tuple[int, bytes]:
        """``event`` as a QoS 1 PUBLISH with the connection's next packet id: (id, packet).
        Ids go round in order, so none in flight (at most ``window`` < 65535) is reused."""
        self._packet_id = self._packet_id % _MAX_PACKET_ID + 1
        packet = mqtt5.PublishPacket(
            event.topic, event.payload, qos=mqtt5.QoS.AT_LEAST_ONCE, packet_id=self._packet_id
        ).write()
        return self._packet_id, packet

    def readable(self, timeout_s: float) -> bool:
        """Whether bytes wait (TLS may hold decrypted bytes that select cannot see)."""
        return tls_pending(self.sock) or bool(select.select([self.sock], [], [], timeout_s)[0])

    def send(self, data: bytes) -> None:
        """Send all of ``data`` (blocking while the socket buffer is full)."""
        self.sock.setblocking(True)
        try:
            self.sock.sendall(data)
        finally:
            self.sock.setblocking(False)

    def pubacks(self) -> list[mqtt5.PubAckPacket]:
        """The PUBACKs that have arrived; ConnectionError when the broker is gone."""
        try:
            chunk = self.sock.recv(262144)
        except (BlockingIOError, InterruptedError):
            return []
        except OSError as error:
            if type(error).__name__ in ("SSLWantReadError", "SSLWantWriteError"):
                return []
            raise ConnectionError(str(error)) from error
        if not chunk:
            raise ConnectionError("broker closed the connection")
        buffer = self._buffer + chunk
        view = memoryview(buffer)
        position, acks = 0, []
        while position < len(buffer):
            try:
                packet, size = mqtt5.read(view[position:])
            except IndexError:
                break
            position += size
            if isinstance(packet, mqtt5.PubAckPacket):
                acks.append(packet)
            elif isinstance(packet, mqtt5.DisconnectPacket):
                raise ConnectionError(f"broker disconnected us: {packet.reason_code!r}")
        self._buffer = bytes(view[position:])
        view.release()
        return acks

    def close(self) -> None:
        """Say DISCONNECT if we still can, and close."""
        with contextlib.suppress(OSError):
            self.send(mqtt5.DisconnectPacket().write())
        self.sock.close()


def _connect(endpoint: MqttEndpoint, client_id: str, outcome: _Outcome) -> _Connection:
    """Connect, retrying with capped backoff for as long as it takes (the broker restarts)."""
    delay_s = _RECONNECT_MIN_S
    while True:
        try:
            connection = _Connection(endpoint, client_id)
        except (OSError, ConnectionError) as error:
            print(f"connect failed ({error!r}); retrying in {delay_s:.1f} s", file=sys.stderr)
            time.sleep(delay_s)
            delay_s = min(delay_s * 2, _RECONNECT_MAX_S)
        else:
            outcome.reconnects += 1
            return connection


def publish(
    endpoint: MqttEndpoint,
    source: _Source,
    client_id: str,
    rate: float,
    duration_s: float,
    drain_s: float,
) -> tuple[_Outcome, list[int]]:
    """Send ``rate`` events/s for ``duration_s`` through reconnects and PUBACKs 16; (outcome,
    the sequence numbers that had no Success by the end)."""
    outcome = _Outcome()
    outcome.reconnects = -1  # the first connect is not a reconnect
    connection: _Connection | None = _connect(endpoint, client_id, outcome)
    # In flight, in send order (the broker acknowledges in order) with their packet ids; what
    # must go again at once (after a reconnect); what was refused with 16, by when it goes again.
    in_flight: collections.deque[tuple[int, _Pending]] = collections.deque()
    again: collections.deque[_Pending] = collections.deque()
    later: list[tuple[float, int, _Pending]] = []
    started_at = time.monotonic()
    stop_at = started_at + duration_s
    last_progress = started_at
    while True:
        now = time.monotonic()
        due = int((min(now, stop_at) - started_at) * rate) + 1 if now < stop_at else outcome.sent
        if now >= stop_at and not in_flight and not again and not later:
            break
        if now >= stop_at + drain_s:
            break
        while later and later[0][0] <= now:
            again.append(heapq.heappop(later)[2])
        if connection is None:
            connection = _connect(endpoint, client_id, outcome)
            last_progress = time.monotonic()
        try:
            room = connection.window - len(in_flight)
            burst: list[bytes] = []
            while room > 0 and again:
                event = again.popleft()
                packet_id, packet = connection.publish_packet(event)
                in_flight.append((packet_id, event))
                burst.append(packet)
                outcome.resent += 1
                room -= 1
            while room > 0 and outcome.sent < due:
                event = source.next_event()
                packet_id, packet = connection.publish_packet(event)
                outcome.sent += 1
                in_flight.append((packet_id, event))
                burst.append(packet)
                room -= 1
            if burst:
                connection.send(b"".join(burst))
            wake_at = started_at + outcome.sent / rate
            if later:
                wake_at = min(wake_at, later[0][0])
            if connection.readable(max(min(wake_at - time.monotonic(), 0.1), _MIN_SLEEP_S)):
                for ack in connection.pubacks():
                    packet_id, event = in_flight.popleft()
                    if ack.packet_id != packet_id:
                        raise ConnectionError(f"PUBACK {ack.packet_id} out of order")
                    if ack.reason_code == mqtt5.PubAckReasonCode.NO_MATCHING_SUBSCRIBERS:
                        outcome.unrouted.append((event.seq, time.time()))
                        event.refusals += 1
                        resend_at = time.monotonic() + event.resend_delay_s()
                        heapq.heappush(later, (resend_at, event.seq, event))
                    elif ack.reason_code != mqtt5.PubAckReasonCode.SUCCESS:
                        outcome.refused.append(event.seq)
                    last_progress = time.monotonic()
            if in_flight and time.monotonic() - last_progress > _ACK_TIMEOUT_S:
                raise ConnectionError(f"no PUBACK for {_ACK_TIMEOUT_S:.0f} s")
            if not in_flight:
                last_progress = time.monotonic()
        except (ConnectionError, OSError) as error:
            print(f"connection lost ({error!r}); {len(in_flight)} to send again", file=sys.stderr)
            connection.sock.close()
            connection = None
            again.extendleft(reversed([event for _, event in in_flight]))
            in_flight.clear()
    if connection is not None:
        connection.close()
    unacked = sorted(
        [event.seq for _, event in in_flight]
        + [event.seq for event in again]
        + [event.seq for _, _, event in later]
    )
    return outcome, unacked


def main(argv: list[str] | None = None) -> int:
    """``python -m tools.bench.soak_publisher``: ``ready``, ``go``, publish, ``done <json>``."""
    parser = argparse.ArgumentParser(
        prog="python -m tools.bench.soak_publisher",
        epilog="The broker and the credentials come from CAREWATCH_MQTT_URL "
        "(and CAREWATCH_MQTT_CA_FILE over TLS).",
    )
    parser.add_argument("--publisher", type=int, required=True, help="this one's number")
    parser.add_argument("--publishers", type=int, required=True)
    parser.add_argument("--devices", type=int, required=True, help="the whole fleet")
    parser.add_argument("--rate", type=float, required=True, help="this one's events/s")
    parser.add_argument("--duration", type=float, required=True, help="seconds")
    parser.add_argument("--drain", type=float, default=60.0, help="seconds for the last PUBACKs")
    args = parser.parse_args(argv)
    endpoint = endpoint_from_env(parser)
    source = _Source(args.publisher, args.publishers, args.devices, args.rate)
    client_id = f"bench-soak-pub-{args.publisher}"
    print("ready", flush=True)
    if sys.stdin.readline().strip() != "go":
        return 1
    started_at = time.monotonic()
    outcome, unacked = publish(endpoint, source, client_id, args.rate, args.duration, args.drain)
    elapsed_s = time.monotonic() - started_at
    report = {
        "publisher": args.publisher,
        "sent": outcome.sent,
        "unrouted": outcome.unrouted,
        "refused": outcome.refused,
        "unacked": unacked,
        "resent": outcome.resent,
        "reconnects": outcome.reconnects,
        "elapsed_s": elapsed_s,
    }
    print("done " + json.dumps(report), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
