"""The MQTT 5 transport of the hot path: the sans-IO ``mqtt5`` protocol under an asyncio Protocol.

Why not aiomqtt or paho here: the gateway must acknowledge a message only after the transaction
that stored it has committed. aiomqtt 2.x acknowledges on receipt (its issue #345); paho's client
loop with manual acks measured 8,000-13,000 msg/s on this machine, the ``mqtt5`` package under a
plain transport with batched PUBACKs 41,000-54,000. The interface the rest of the gateway sees is
small: ``connect`` -> :class:`BrokerSession`, ``next_batch``, ``ack``, ``unsubscribe``, ``close``.

Flow control is the broker's: we announce a Receive Maximum, so at most that many QoS 1 messages
are ever unacknowledged in our hands. A slow database therefore holds the broker back (its
session queue grows, bounded by its own limits) instead of growing a queue in this process.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import ssl
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final, NamedTuple, cast

import mqtt5

from gateway.errors import ConnectionLostError, ConnectRefusedError, SubscribeRefusedError

log = logging.getLogger(__name__)


class Message(NamedTuple):
    """One PUBLISH as received. ``packet_id`` is None for QoS 0 (nothing to acknowledge).

    A NamedTuple rather than a frozen dataclass: one is built per message on the hot path and
    a tuple is about three times cheaper to create.
    """

    topic: str
    payload: bytes
    packet_id: int | None
    received_at: datetime
    # Set only for a retained message the broker sends because we (re)subscribed: old news
    # (we subscribe with retain_as_published off, so live messages never carry it).
    retained: bool = False


# Receive Maximum bounds the messages in flight to us, not their bytes, and Mosquitto 2.0.11
# ignores max_inflight_bytes for a v5 client that announces one (measured: 1,000 messages of
# 1 KB arrived unacknowledged under a 100 KB max_inflight_bytes). Messages may be as large as the
# broker's message_size_limit (1 MiB, for zigbee2mqtt's device lists), so 6000 of them could be
# gigabytes: past this many payload bytes waiting in the inbox we stop reading the socket until
# half of it is taken, and TCP leaves the rest in the broker's queue for us. Ordinary traffic
# (6000 envelopes of a few hundred bytes) never comes near it.
MAX_INBOX_BYTES: Final = 32 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class SessionOptions:
    """How to connect: the broker, who we are, and the session's limits."""

    client_id: str
    host: str
    port: int
    username: str | None = None
    password: str | None = None
    tls: bool = False
    # With tls: the CA that signed the broker's certificate (None: the system's CAs).
    ca_file: str | None = None
    keepalive_s: int = 30
    session_expiry_s: int = 7 * 24 * 3600
    receive_maximum: int = 6000
    # See MAX_INBOX_BYTES.
    max_inbox_bytes: int = MAX_INBOX_BYTES
    connect_timeout_s: float = 10.0

    @property
    def endpoint(self) -> str:
        """``host:port``, for messages."""
        return f"{self.host}:{self.port}"


# Every possible PUBACK with reason Success, encoded once (MQTT 5, 3.4.2.1: the reason code and
# properties may be left out when the reason is Success): 0x40, remaining length 2, packet id.
_PUBACK: list[bytes] = [b"\x40\x02" + i.to_bytes(2, "big") for i in range(65536)]


class _Protocol(asyncio.Protocol):
    """Bytes in, packets out; PUBLISHes go to an inbox that ``next_batch`` drains."""

    def __init__(self, max_inbox_bytes: int = MAX_INBOX_BYTES) -> None:
        loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.inbox: collections.deque[Message] = collections.deque()
        self.inbox_bytes = 0  # payload bytes in the inbox
        self.max_inbox_bytes = max_inbox_bytes
        self.paused_for_bytes = False
        self.reading_stopped = False  # for good: the gateway is draining before it stops
        self.arrived = asyncio.Event()
        self.closed = loop.create_future()  # result: the reason, as a string
        self.last_received_monotonic = time.monotonic()
        self._buffer = bytearray()
        self._waiters: dict[type, asyncio.Future[mqtt5.Packet]] = {}

    # -- asyncio.Protocol ----------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport: asyncio's own, or uvloop's (which does not subclass it).
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.last_received_monotonic = time.monotonic()
        # One timestamp per read: every message in this chunk arrived at the same moment.
        received_at = datetime.now(UTC)
        buffer = self._buffer
        buffer += data
        position = 0
        inbox_before = len(self.inbox)
        with memoryview(buffer) as view:
            while position < len(buffer):
                try:
                    packet, size = mqtt5.read(view[position:])
                except IndexError:  # an incomplete packet: wait for more bytes
                    break
                except ValueError as error:  # a malformed packet: the stream is unusable
                    self._fail(f"malformed packet from broker: {error}")
                    return
                position += size
                if isinstance(packet, mqtt5.PublishPacket):
                    self.inbox.append(
                        Message(
                            packet.topic,
                            packet.payload,
                            packet.packet_id,
                            received_at,
                            packet.retain,
                        )
                    )
                    self.inbox_bytes += len(packet.payload)
                else:
                    self._dispatch(packet)
        del buffer[:position]
        if len(self.inbox) != inbox_before:
            self.arrived.set()
        if self.inbox_bytes >= self.max_inbox_bytes and not self.paused_for_bytes:
            self.paused_for_bytes = True
            if self.transport is not None:
                self.transport.pause_reading()

    def take(self, count: int) -> list[Message]:
        """The first ``count`` messages of the inbox; reading resumes once half of the bytes
        that paused it are taken."""
        taken = [self.inbox.popleft() for _ in range(count)]
        self.inbox_bytes -= sum(len(m.payload) for m in taken)
        if self.paused_for_bytes and self.inbox_bytes < self.max_inbox_bytes // 2:
            self.paused_for_bytes = False
            transport = self.transport
            if transport is not None and not transport.is_closing() and not self.reading_stopped:
                transport.resume_reading()
        return taken

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(str(exc) if exc else "closed by peer")

    # -- internals -----------------------------------------------------------------------------
    def _dispatch(self, packet: mqtt5.Packet) -> None:
        if isinstance(packet, mqtt5.DisconnectPacket):
            self._fail(
                f"broker disconnected us: {packet.reason_code.name} {packet.reason_str or ''}"
            )
            return
        if isinstance(packet, mqtt5.PingRespPacket):
            return
        waiter = self._waiters.pop(type(packet), None)
        if waiter is not None and not waiter.done():
            waiter.set_result(packet)
        else:
            log.debug("ignoring unexpected %s", type(packet).__name__)

    def _fail(self, reason: str) -> None:
        if not self.closed.done():
            self.closed.set_result(reason)
        for waiter in self._waiters.values():
            if not waiter.done():
                waiter.set_exception(ConnectionLostError(reason))
        self._waiters.clear()
        self.arrived.set()  # wake next_batch so it notices
        if self.transport is not None:
            self.transport.abort()

    def expect(self, packet_type: type) -> asyncio.Future[mqtt5.Packet]:
        future: asyncio.Future[mqtt5.Packet] = asyncio.get_running_loop().create_future()
        if self.closed.done():
            future.set_exception(ConnectionLostError(self.closed.result()))
        else:
            self._waiters[packet_type] = future
        return future

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)


class BrokerSession:
    """One connected MQTT 5 session. Use :func:`connect`; close with :meth:`close`."""

    def __init__(self, protocol: _Protocol, options: SessionOptions, session_present: bool) -> None:
        self._protocol = protocol
        self.options = options
        self.session_present = session_present
        self._next_packet_id = 1
        self._keepalive_task = asyncio.create_task(self._keepalive(), name="mqtt-keepalive")

    @property
    def is_closed(self) -> bool:
        """True once the connection has ended."""
        return self._protocol.closed.done()

    @property
    def pending(self) -> int:
        """Messages received and not yet handed out by :meth:`next_batch`."""
        return len(self._protocol.inbox)

    def _packet_id(self) -> int:
        packet_id = self._next_packet_id
        self._next_packet_id = packet_id % 65535 + 1
        return packet_id

    async def subscribe(self, topic_filters: list[str]) -> None:
        """Subscribe at QoS 1; SubscribeRefusedError if the broker refuses any filter."""
        filters = [
            mqtt5.TopicFilter(pattern, max_qos=mqtt5.QoS.AT_LEAST_ONCE, retain_as_published=False)
            for pattern in topic_filters
        ]
        waiter = self._protocol.expect(mqtt5.SubAckPacket)
        self._protocol.write(mqtt5.SubscribePacket(self._packet_id(), filters).write())
        suback = await asyncio.wait_for(waiter, self.options.connect_timeout_s)
        assert isinstance(suback, mqtt5.SubAckPacket)
        for pattern, code in zip(topic_filters, suback.reason_codes, strict=False):
            if int(code) >= 0x80:  # 0x80 and above are failures (MQTT 5, 3.9.3)
                raise SubscribeRefusedError(pattern, code.name)

    async def unsubscribe(self, topic_filters: list[str]) -> None:
        """Stop new deliveries; messages already in flight to us still arrive (MQTT 5, 3.10.4)."""
        waiter = self._protocol.expect(mqtt5.UnsubAckPacket)
        self._protocol.write(mqtt5.UnsubscribePacket(self._packet_id(), topic_filters).write())
        await asyncio.wait_for(waiter, self.options.connect_timeout_s)

    async def next_batch(self, max_messages: int, max_wait_s: float) -> list[Message]:
        """Wait for one message, then up to ``max_wait_s`` more for the batch to fill.

        Returns what is there (possibly a short batch). Raises ConnectionLostError once the session
        has ended and nothing is left in the inbox.
        """
        protocol = self._protocol
        inbox = protocol.inbox
        while not inbox:
            if protocol.closed.done():
                raise ConnectionLostError(protocol.closed.result())
            protocol.arrived.clear()
            await protocol.arrived.wait()
        if len(inbox) < max_messages and not protocol.closed.done():
            deadline = asyncio.get_running_loop().time() + max_wait_s
            while len(inbox) < max_messages and not protocol.closed.done():
                remaining = deadline - asyncio.get_running_loop().time()
                if remaining <= 0:
                    break
                protocol.arrived.clear()
                # asyncio.timeout, not wait_for: on 3.11 a wait_for cancelled just as its
                # inner wait finishes swallows the cancellation and lets this batch be taken
                # by a task its caller has given up on.
                try:
                    async with asyncio.timeout(remaining):
                        await protocol.arrived.wait()
                except TimeoutError:
                    break
        return protocol.take(min(len(inbox), max_messages))

    def pause_reading(self) -> None:
        """Stop taking bytes off the socket (draining): the inbox then only shrinks."""
        self._protocol.reading_stopped = True
        transport = self._protocol.transport
        if transport is not None and not transport.is_closing():
            transport.pause_reading()

    def ack(self, messages: list[Message]) -> int:
        """PUBACK every QoS 1 message of a committed batch in one write. Returns how many.

        A no-op after the connection was lost: the broker redelivers those messages on the next
        session and the store's ON CONFLICT DO NOTHING absorbs the repeat.
        """
        if self.is_closed:
            return 0
        acks = [_PUBACK[m.packet_id] for m in messages if m.packet_id is not None]
        if acks:
            self._protocol.write(b"".join(acks))
        return len(acks)

    async def close(self, *, graceful: bool = True) -> None:
        """End the connection; ``graceful`` sends DISCONNECT first, which keeps the session."""
        self._keepalive_task.cancel()
        if graceful and not self.is_closed:
            # Normal disconnection keeps the session (and its queue) for our return.
            self._protocol.write(mqtt5.DisconnectPacket().write())
        transport = self._protocol.transport
        if transport is not None:
            transport.close()
        self._protocol._fail("closed by us")

    async def wait_closed(self) -> str:
        """Wait until the connection ends; why it ended."""
        return await asyncio.shield(self._protocol.closed)

    async def _keepalive(self) -> None:
        interval = max(1.0, self.options.keepalive_s / 2)
        ping = mqtt5.PingReqPacket().write()
        while not self.is_closed:
            await asyncio.sleep(interval)
            if self._protocol.paused_for_bytes:
                # We are not reading, so a PINGRESP cannot be heard; our PINGREQs still tell
                # the broker we are here.
                self._protocol.last_received_monotonic = time.monotonic()
            silent_s = time.monotonic() - self._protocol.last_received_monotonic
            if silent_s > self.options.keepalive_s * 1.5:
                self._protocol._fail(f"no answer from broker for {silent_s:.0f} s")
                return
            self._protocol.write(ping)


def client_ssl_context(ca_file: str | None = None) -> ssl.SSLContext:
    """What every Carewatch MQTT client uses over TLS: the broker's certificate verified
    against ``ca_file`` alone (or the system's CAs without one), its host name checked, TLS 1.2
    or newer (the broker's minimum too)."""
    # create_default_context loads the system's CAs only when given no cafile, so a private
    # CA is the only one trusted: a certificate from any public CA is refused.
    context = ssl.create_default_context(cafile=ca_file or None)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


async def connect(options: SessionOptions) -> BrokerSession:
    """Open a TCP (or TLS) connection, CONNECT with a persistent session, await CONNACK."""
    loop = asyncio.get_running_loop()
    ssl_context = client_ssl_context(options.ca_file) if options.tls else None
    transport, protocol = await asyncio.wait_for(
        loop.create_connection(
            lambda: _Protocol(options.max_inbox_bytes), options.host, options.port, ssl=ssl_context
        ),
        options.connect_timeout_s,
    )
    try:
        waiter = protocol.expect(mqtt5.ConnAckPacket)
        protocol.write(
            mqtt5.ConnectPacket(
                options.client_id,
                username=options.username,
                password=options.password.encode() if options.password is not None else None,
                clean_start=False,
                keep_alive=options.keepalive_s,
                session_expiry_interval=options.session_expiry_s,
                receive_max=options.receive_maximum,
            ).write()
        )
        connack = await asyncio.wait_for(waiter, options.connect_timeout_s)
        assert isinstance(connack, mqtt5.ConnAckPacket)
        if connack.reason_code != mqtt5.ConnAckReasonCode.SUCCESS:
            raise ConnectRefusedError(options.endpoint, connack.reason_code.name)
    except BaseException:
        transport.abort()
        raise
    return BrokerSession(protocol, options, connack.session_present)
