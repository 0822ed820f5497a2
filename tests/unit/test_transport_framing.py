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

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += data

    def abort(self) -> None:
        self.aborted = True

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
