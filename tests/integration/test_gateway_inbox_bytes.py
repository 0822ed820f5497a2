"""The gateway's session holds a bounded number of payload bytes, however large the messages.

Receive Maximum (6000) counts messages; with the broker's 1 MiB message limit that alone would
let the broker hand a gateway gigabytes while its database is slow. Against the real broker:
past ``max_inbox_bytes`` the session stops reading, the broker keeps the rest, and everything
still arrives once batches are taken.
"""

from __future__ import annotations

import asyncio
import dataclasses

from carewatch.settings import Settings
from gateway.service import session_options, topic_filters
from gateway.transport import connect
from tests.fixtures.mqtt import events_topic, publish_all
from tests.fixtures.services import SeededRegistry

PAYLOAD_BYTES = 64 * 1024
MESSAGES = 40  # 2.5 MiB in all
BOUND = 256 * 1024


def test_a_session_stops_reading_past_its_byte_bound_and_loses_nothing(
    settings: Settings, seeded: SeededRegistry, publisher_url: str
) -> None:
    options = dataclasses.replace(session_options(settings), max_inbox_bytes=BOUND)
    device = seeded.device("alarm_button")

    async def run() -> tuple[int, int]:
        session = await connect(options)
        try:
            await session.subscribe(topic_filters(settings.gateway_share_group))
            await asyncio.to_thread(
                publish_all,
                publisher_url,
                [(events_topic(device), b"x" * PAYLOAD_BYTES) for _ in range(MESSAGES)],
            )
            await asyncio.sleep(1.0)  # time to read everything, were reading not paused
            held = session.pending
            received = 0
            while received < MESSAGES:
                batch = await asyncio.wait_for(session.next_batch(10, 0.05), 10)
                received += len(batch)
                session.ack(batch)
            return held, received
        finally:
            await session.close()

    held, received = asyncio.run(run())
    # Reading stops once the bound is reached; one read may carry a few messages past it.
    assert 0 < held * PAYLOAD_BYTES <= BOUND + 4 * PAYLOAD_BYTES, held
    assert received == MESSAGES
