"""The publishers every measurement shares: P processes that publish their share at QoS 1.

Each publisher process (``python -m tools.bench.publishers``) reads its share file
(``topic<TAB>payload`` lines), encodes every PUBLISH packet before the clock starts, connects
over a plain socket (TLS for an ``mqtts://`` URL, verified as ``endpoints.ssl_context`` says) to
the broker of ``CAREWATCH_MQTT_URL``, as its user (the simulator, see ``endpoints``), prints
``ready <receive_max>`` and waits for ``go`` on stdin. Then it streams the packets as fast as
the broker takes them: at most the broker's Receive Maximum (from its CONNACK) unacknowledged
at once, as MQTT 5 requires, sent in whole windows and refilled as PUBACKs arrive. It prints
``done <json>`` with its counts and times and exits.
With ``--rate R`` it is paced instead: the k-th packet is not sent before k/R seconds after
``go`` (a background load for ``carewatch bench alerts``); behind schedule, it catches up as
fast as the window allows, so R is a floor on the average as long as the broker keeps up.

``mosquitto_pub -l`` publishes every stdin line to one topic, so the alternative
(``--publisher mosquitto_pub``) runs one process per publisher and device kind, each on one
device's topic: the payloads stay valid for the kind, and their ids are unique across the run.
They read their credentials from an options file (``endpoints.mosquitto_client_env``).
"""

from __future__ import annotations

import abc
import argparse
import json
import os
import select
import socket
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Literal, Self

import mqtt5

from carewatch.settings import MqttEndpoint
from tools.bench.children import BenchChild
from tools.bench.endpoints import (
    child_env,
    connect_packet,
    connect_socket,
    endpoint_from_env,
    mosquitto_client_env,
    mosquitto_tls_argv,
    read_packet,
    tls_pending,
)
from tools.bench.workload import Workload

PublisherKind = Literal["mqtt5", "mosquitto_pub"]

# MQTT packet identifiers are 1..65535; a publisher cycles through them.
_MAX_PACKET_ID = 65535
_READY_TIMEOUT_S = 60.0
# How long mosquitto_pub gets to connect before the clock may start. It cannot tell us when
# it is connected; 0.5 s is ample on loopback, and it buffers stdin meanwhile anyway.
_MOSQUITTO_PUB_SETTLE_S = 0.5
# A paced publisher sleeps at least this long between sends: at 1,000 packets/s it sends
# them in small bursts rather than waking for every one.
_PACE_MIN_SLEEP_S = 0.001
# Between probes that found nobody subscribed yet.
_PROBE_INTERVAL_S = 0.1


@dataclass(frozen=True, slots=True)
class PublishReport:
    """What the publishers did in one measurement (monotonic times, comparable across processes)."""

    sent: int
    acked: int
    no_subscribers: int  # PUBACK reason 16: the broker had nobody to deliver to
    started_at: float
    finished_at: float
    receive_max: int  # the broker's, from CONNACK; 0 when the publisher does not tell

    @property
    def eps(self) -> float:
        """Acknowledged messages per second, from the first send to the last PUBACK."""
        return self.acked / max(self.finished_at - self.started_at, 1e-9)


# --- the publisher process ------------------------------------------------------------------


def _encode_share(path: Path, count: int) -> tuple[bytes, list[int]]:
    """All PUBLISH packets of a share, concatenated, and the offset of each (plus the end)."""
    packets = []
    with path.open("rb") as share:
        for number, line in enumerate(share):
            if number >= count:
                break
            topic, _, payload = line.rstrip(b"\n").partition(b"\t")
            packets.append(
                mqtt5.PublishPacket(
                    topic.decode(),
                    payload,
                    qos=mqtt5.QoS.AT_LEAST_ONCE,
                    packet_id=number % _MAX_PACKET_ID + 1,
                ).write()
            )
    offsets = [0]
    for encoded in packets:
        offsets.append(offsets[-1] + len(encoded))
    return b"".join(packets), offsets


def _stream(
    sock: socket.socket,
    data: bytes,
    offsets: list[int],
    window: int,
    rate: float | None = None,
) -> tuple[int, int]:
    """Send every packet with at most ``window`` unacknowledged; (acked, no_subscribers).

    With ``rate`` (packets per second), packet k is due k/rate seconds after the start: what
    is due is sent, and between acknowledgements the loop sleeps until the next one is due.
    """
    total = len(offsets) - 1
    view = memoryview(data)
    sent = acked = no_subscribers = 0
    pending = b""
    started_at = time.monotonic()
    while acked < total:
        room = window - (sent - acked)
        due = total
        if rate is not None:
            due = min(total, int((time.monotonic() - started_at) * rate) + 1)
        if room > 0 and sent < due:
            end = min(due, sent + room)
            sock.sendall(view[offsets[sent] : offsets[end]])
            sent = end
        if rate is not None and sent < total and sent - acked < window:
            # Wake for the next PUBACK or when the next packet is due, whichever comes first.
            next_due_s = started_at + sent / rate - time.monotonic()
            # A TLS socket may hold decrypted bytes that select() cannot see.
            readable = (
                tls_pending(sock)
                or select.select([sock], [], [], max(next_due_s, _PACE_MIN_SLEEP_S))[0]
            )
            if not readable:
                continue
        chunk = sock.recv(262144)
        if not chunk:
            raise ConnectionError(f"broker closed the connection after {acked} acks")
        buffer = pending + chunk if pending else chunk
        packets = memoryview(buffer)
        position = 0
        while position < len(buffer):
            try:
                packet, size = mqtt5.read(packets[position:])
            except IndexError:
                break
            position += size
            if isinstance(packet, mqtt5.PubAckPacket):
                # Mosquitto acknowledges in order; a gap would mean a reused id in flight.
                expected = acked % _MAX_PACKET_ID + 1
                if packet.packet_id != expected:
                    raise RuntimeError(f"PUBACK {packet.packet_id} while expecting {expected}")
                if packet.reason_code == mqtt5.PubAckReasonCode.NO_MATCHING_SUBSCRIBERS:
                    no_subscribers += 1
                elif packet.reason_code != mqtt5.PubAckReasonCode.SUCCESS:
                    raise RuntimeError(f"broker refused a message: {packet.reason_code!r}")
                acked += 1
            elif isinstance(packet, mqtt5.DisconnectPacket):
                raise ConnectionError(f"broker disconnected us: {packet.reason_code!r}")
        pending = bytes(packets[position:])
        packets.release()
    return acked, no_subscribers


class Qos1Connection:
    """One MQTT 5 connection that publishes at QoS 1, one message at a time.

    ``publish`` waits for each PUBACK before it returns, so nothing else arrives in between
    (no subscriptions, keep-alive 0: the broker sends nothing unasked).
    """

    def __init__(self, mqtt_url: str, *, client_id: str) -> None:
        endpoint = MqttEndpoint(mqtt_url)
        self._sock = connect_socket(endpoint, timeout_s=10.0)
        try:
            self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._sock.sendall(connect_packet(endpoint, client_id, clean_start=True))
            connack = read_packet(self._sock)
            if not isinstance(connack, mqtt5.ConnAckPacket) or connack.reason_code != 0:
                raise ConnectionError(f"connect refused: {connack!r}")
        except BaseException:
            self._sock.close()
            raise
        self._packet_id = 0

    def __enter__(self) -> Qos1Connection:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def publish(self, topic: str, payload: bytes) -> tuple[float, bool]:
        """Publish and wait for the PUBACK: (``time.time()`` just before the packet was sent,
        whether the broker routed it to a subscription)."""
        self._packet_id = self._packet_id % _MAX_PACKET_ID + 1
        packet = mqtt5.PublishPacket(
            topic, payload, qos=mqtt5.QoS.AT_LEAST_ONCE, packet_id=self._packet_id
        ).write()
        sent_at = time.time()
        self._sock.sendall(packet)
        puback = read_packet(self._sock)
        if not isinstance(puback, mqtt5.PubAckPacket) or puback.packet_id != self._packet_id:
            raise ConnectionError(f"expected PUBACK {self._packet_id}, got {puback!r}")
        if puback.reason_code == mqtt5.PubAckReasonCode.NO_MATCHING_SUBSCRIBERS:
            return sent_at, False
        if puback.reason_code != mqtt5.PubAckReasonCode.SUCCESS:
            raise ConnectionError(f"broker refused the message: {puback.reason_code!r}")
        return sent_at, True

    def publish_until_routed(
        self,
        topic: str,
        payload: Callable[[int], bytes],
        *,
        deadline: float,
        check: Callable[[], None],
    ) -> bool:
        """Publish ``payload(1)``, ``payload(2)``, ... until the broker routes one to a
        subscription (the subscriber is there); False if none was by ``deadline`` (monotonic).

        ``check`` runs between tries: it raises when waiting longer is pointless (the
        subscriber's process exited).
        """
        number = 0
        while True:
            number += 1
            if self.publish(topic, payload(number))[1]:
                return True
            check()
            if time.monotonic() > deadline:
                return False
            time.sleep(_PROBE_INTERVAL_S)

    def close(self) -> None:
        """Say DISCONNECT and close the socket."""
        try:
            self._sock.sendall(mqtt5.DisconnectPacket().write())
        except OSError:
            pass  # the broker is gone already
        finally:
            self._sock.close()


def publisher_main(argv: Sequence[str] | None = None) -> int:
    """One publisher process: encode the share, connect, ``ready``, ``go``, stream, ``done``."""
    parser = argparse.ArgumentParser(
        prog="python -m tools.bench.publishers",
        epilog="The broker and the credentials come from CAREWATCH_MQTT_URL.",
    )
    parser.add_argument("--share", type=Path, required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--client-id", required=True)
    parser.add_argument("--rate", type=float, help="packets per second (default: unpaced)")
    args = parser.parse_args(argv)
    endpoint = endpoint_from_env(parser)

    data, offsets = _encode_share(args.share, args.count)
    with connect_socket(endpoint) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.sendall(connect_packet(endpoint, args.client_id, clean_start=True))
        connack = read_packet(sock)
        if not isinstance(connack, mqtt5.ConnAckPacket) or connack.reason_code != 0:
            print(f"connect refused: {connack!r}", file=sys.stderr)
            return 1
        window = connack.receive_max
        print(f"ready {window}", flush=True)
        if sys.stdin.readline().strip() != "go":
            return 1
        started_at = time.monotonic()
        acked, no_subscribers = _stream(sock, data, offsets, window, args.rate)
        finished_at = time.monotonic()
        sock.sendall(mqtt5.DisconnectPacket().write())
    report = {
        "sent": len(offsets) - 1,
        "acked": acked,
        "no_subscribers": no_subscribers,
        "started_at": started_at,
        "finished_at": finished_at,
        "receive_max": window,
    }
    print("done " + json.dumps(report), flush=True)
    return 0


# --- the parent's side ----------------------------------------------------------------------


class Publishers(abc.ABC):
    """Publisher processes waiting for ``go()``; leaving the ``with`` block stops them."""

    def __init__(self) -> None:
        self._children: list[BenchChild] = []
        self.receive_max = 0  # the broker's, from CONNACK; 0 when the publisher does not tell

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Stop every publisher that still runs."""
        for child in self._children:
            child.stop()

    @abc.abstractmethod
    def go(self) -> float:
        """Start publishing; the monotonic time of the start."""

    @abc.abstractmethod
    def wait(self, timeout_s: float) -> PublishReport:
        """Wait until every publisher is done; what they did."""


class Mqtt5Publishers(Publishers):
    """P publisher processes of this module, one per share file, connecting as ``mqtt_url``'s
    user."""

    def __init__(
        self,
        *,
        mqtt_url: str,
        shares: Sequence[Path],
        counts: Sequence[int],
        log_dir: Path,
        tag: str,
        spread_over_s: float | None = None,
    ) -> None:
        """``spread_over_s``: pace each publisher to send its share evenly over this many
        seconds (default: as fast as the broker takes them)."""
        super().__init__()
        env = child_env(mqtt_url)
        try:
            for number, (share, count) in enumerate(zip(shares, counts, strict=True)):
                argv = [
                    sys.executable,
                    "-m",
                    "tools.bench.publishers",
                    "--share",
                    str(share),
                    "--count",
                    str(count),
                    "--client-id",
                    f"bench-{tag}-pub-{number}",
                ]
                if spread_over_s is not None:
                    argv += ["--rate", repr(count / spread_over_s)]
                log_path = log_dir / f"{tag}-publisher-{number}.log"
                self._children.append(
                    BenchChild(f"publisher {number}", argv, log_path=log_path, env=env)
                )
            # Each one encodes its share before it says ready; they do that in parallel.
            self.receive_max = min(
                int(child.expect("ready", _READY_TIMEOUT_S)[0]) for child in self._children
            )
        except BaseException:
            self.close()
            raise

    def go(self) -> float:
        """Start publishing; the monotonic time of the start."""
        started_at = time.monotonic()
        for child in self._children:
            child.send_line("go")
        return started_at

    def wait(self, timeout_s: float) -> PublishReport:
        """Wait until every publisher has all its PUBACKs; what they did."""
        deadline = time.monotonic() + timeout_s
        reports = []
        for child in self._children:
            words = child.expect("done", max(deadline - time.monotonic(), 0.1))
            reports.append(json.loads(" ".join(words)))
        return PublishReport(
            sent=sum(r["sent"] for r in reports),
            acked=sum(r["acked"] for r in reports),
            no_subscribers=sum(r["no_subscribers"] for r in reports),
            started_at=min(r["started_at"] for r in reports),
            finished_at=max(r["finished_at"] for r in reports),
            receive_max=min(r["receive_max"] for r in reports),
        )


class MosquittoPubPublishers(Publishers):
    """Debian's ``mosquitto_pub -l -q 1``: one process per (publisher share, device kind).

    Every process publishes its lines on the topic of one device of that kind, because
    ``-l`` has one topic per process; the payloads are valid for the kind and their ids are
    unique across the run, so each still becomes exactly one row.
    """

    def __init__(
        self,
        *,
        mqtt_url: str,
        workload: Workload,
        first: int,
        log_dir: Path,
        options_dir: Path,
        tag: str,
    ) -> None:
        """``options_dir``: where their options file with the credentials goes."""
        super().__init__()
        endpoint = MqttEndpoint(mqtt_url)
        env = mosquitto_client_env(mqtt_url, options_dir)
        groups: dict[tuple[int, str], list[bytes]] = {}
        topics: dict[tuple[int, str], str] = {}
        for event in workload.events[:first]:
            device = workload.devices[event.device]
            key = (workload.publisher_of(event), device.kind)
            groups.setdefault(key, []).append(event.payload + b"\n")
            topics.setdefault(key, device.topic)
        self._inputs: list[bytes] = []
        self._feeders: list[threading.Thread] = []
        self._sent = first
        self._started_at = 0.0
        try:
            for number, (key, lines) in enumerate(sorted(groups.items())):
                argv = [
                    "mosquitto_pub",
                    "-h",
                    endpoint.host,
                    "-p",
                    str(endpoint.port),
                    "-q",
                    "1",
                    "-l",
                    "-i",
                    f"bench-{tag}-mpub-{number}",
                    "-t",
                    topics[key],
                    *mosquitto_tls_argv(endpoint),
                ]
                log_path = log_dir / f"{tag}-mosquitto_pub-{number}.log"
                child = BenchChild(
                    f"mosquitto_pub {number}", argv, log_path=log_path, env=env, stdout="log"
                )
                self._children.append(child)
                self._inputs.append(b"".join(lines))
            time.sleep(_MOSQUITTO_PUB_SETTLE_S)
            for child in self._children:
                child.check_alive("before the start")
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Stop every mosquitto_pub that still runs, and the threads feeding them."""
        super().close()
        for feeder in self._feeders:
            feeder.join(1.0)

    def go(self) -> float:
        """Start feeding every mosquitto_pub its lines; the monotonic time of the start."""
        self._started_at = time.monotonic()
        for child, data in zip(self._children, self._inputs, strict=True):
            child.watch_exit()
            feeder = threading.Thread(
                target=_feed, args=(child, data), name=f"feed-{child.name}", daemon=True
            )
            feeder.start()
            self._feeders.append(feeder)
        return self._started_at

    def wait(self, timeout_s: float) -> PublishReport:
        """Wait until every mosquitto_pub has exited; what they did."""
        deadline = time.monotonic() + timeout_s
        finished = []
        for child in self._children:
            exited_at = child.exited_at(max(deadline - time.monotonic(), 0.1))
            if exited_at is None:
                raise child.failed(f"still publishing after {timeout_s:.0f} s")
            code = child.poll()
            if code != 0:
                raise child.failed(f"exited with {code}")
            finished.append(exited_at)
        return PublishReport(
            sent=self._sent,
            # It does not report acks; it exits after its last message on end of input, and
            # every measurement checks that all of them arrived.
            acked=self._sent,
            no_subscribers=0,
            started_at=self._started_at,
            finished_at=max(finished),
            receive_max=0,
        )


def _feed(child: BenchChild, data: bytes) -> None:
    """Write a mosquitto_pub's lines to its stdin and close it: end of input ends it."""
    stdin = child.stdin
    if stdin is None:
        return
    try:
        stdin.write(data)
        stdin.close()
    except (BrokenPipeError, ValueError, OSError):
        # It died or was stopped; its exit code tells the parent, not this thread.
        pass


def start_publishers(
    kind: PublisherKind,
    *,
    mqtt_url: str,
    workload: Workload,
    shares: Sequence[Path],
    first: int,
    log_dir: Path,
    options_dir: Path,
    tag: str,
) -> Publishers:
    """The publishers for one measurement, connected as ``mqtt_url``'s user and waiting for
    ``go()``. ``options_dir``: for mosquitto_pub's options file (its credentials)."""
    if kind == "mosquitto_pub":
        return MosquittoPubPublishers(
            mqtt_url=mqtt_url,
            workload=workload,
            first=first,
            log_dir=log_dir,
            options_dir=options_dir,
            tag=tag,
        )
    return Mqtt5Publishers(
        mqtt_url=mqtt_url,
        shares=shares,
        counts=workload.share_counts(first),
        log_dir=log_dir,
        tag=tag,
    )


def main() -> int:
    """``python -m tools.bench.publishers``: one publisher process; its exit code."""
    try:
        return publisher_main()
    except (ConnectionError, RuntimeError) as error:
        print(f"publisher {os.getpid()}: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
