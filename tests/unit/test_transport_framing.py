"""The transport's framing: MQTT packets split anyhow across reads still come out whole."""

from __future__ import annotations

import asyncio

import mqtt5
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.transport import _Protocol


class FakeTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.written = bytearray()
        self.aborted = False
        self.reading = True

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += data

    def abort(self) -> None:
        self.aborted = True

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def is_closing(self) -> bool:
        return self.aborted


def publishes(count: int) -> bytes:
    return b"".join(
        mqtt5.PublishPacket(
            f"carewatch/devices/dev-{i:03d}/events",
            b'{"v":1}' * (i % 5 + 1),
            qos=mqtt5.QoS.AT_LEAST_ONCE,
            packet_id=i + 1,
        ).write()
        for i in range(count)
    )


def feed(stream: bytes, cuts: list[int]) -> tuple[list[int | None], bool]:
    async def run() -> tuple[list[int | None], bool]:
        protocol = _Protocol()
        transport = FakeTransport()
        protocol.connection_made(transport)
        start = 0
        for cut in [*sorted(cuts), len(stream)]:
            protocol.data_received(stream[start:cut])
            start = cut
        return [m.packet_id for m in protocol.inbox], transport.aborted

    return asyncio.run(run())


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=len(publishes(20))), max_size=30))
def test_packets_split_across_reads_arrive_whole_and_in_order(cuts: list[int]) -> None:
    """Wherever TCP splits the stream, every PUBLISH arrives once, in order."""
    ids, aborted = feed(publishes(20), cuts)
    assert ids == list(range(1, 21))
    assert not aborted


def test_malformed_stream_closes_the_connection() -> None:
    """Bytes that are not MQTT end the session instead of being guessed at."""
    _, aborted = feed(b"\xff\xff\xff\xff\xff\xff", [])
    assert aborted


def test_reading_pauses_past_the_inbox_byte_bound_and_resumes_at_half() -> None:
    """Receive Maximum counts messages, not bytes: past ``max_inbox_bytes`` of payload waiting,
    the socket is not read (TCP leaves the rest with the broker) until half of it is taken;
    a gateway that stopped reading to drain is not made to read again."""

    async def run() -> list[tuple[int, bool]]:
        protocol = _Protocol(max_inbox_bytes=10_000)
        transport = FakeTransport()
        protocol.connection_made(transport)
        seen: list[tuple[int, bool]] = []
        for i in range(12):  # 1,000-byte payloads
            packet = mqtt5.PublishPacket(
                "carewatch/devices/dev-001/events",
                b"x" * 1000,
                qos=mqtt5.QoS.AT_LEAST_ONCE,
                packet_id=i + 1,
            )
            protocol.data_received(packet.write())
            seen.append((protocol.inbox_bytes, transport.reading))
        for count in (2, 3, 2, 1):
            protocol.take(count)
            seen.append((protocol.inbox_bytes, transport.reading))
        protocol.reading_stopped = True
        transport.pause_reading()
        late = mqtt5.PublishPacket("t", b"x" * 9000, qos=mqtt5.QoS.AT_LEAST_ONCE, packet_id=99)
        protocol.data_received(late.write())
        protocol.take(len(protocol.inbox))
        seen.append((protocol.inbox_bytes, transport.reading))
        return seen

    seen = asyncio.run(run())
    assert seen[8] == (9000, True)
    assert seen[9] == (10_000, False)  # the bound reached: stop reading
    assert seen[11] == (12_000, False)  # what was already read still arrives whole
    # Taken down to half (5,000) it still waits; below half it reads again.
    assert seen[12:16] == [(10_000, False), (7_000, False), (5_000, False), (4_000, True)]
    assert seen[16] == (0, False)  # draining: stays stopped
