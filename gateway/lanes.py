"""Lanes: a batch's messages split by device, and each lane's parts committed in batch order.

A batch whose messages touch most of the fleet shares rows with the next one (rule states,
alerts, device rollups, device rows), so two such batches cannot commit side by side: the
second waits for the first's locks, and a batch's rules, run while it held them, were the
gateway's bottleneck when half of the events were state changes (issue 14). Split by device
instead, the parts of one batch share no device, and run at once on their own connections;
the parts of one lane still commit one after another, in the order the batches arrived, so
each device's messages are evaluated in order and no part reads rule states that an earlier,
uncommitted part is about to change. A batch is acknowledged once all its parts committed.
"""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import Callable, Sequence
from typing import TypeVar

T = TypeVar("T")


def lane_of(device_id: str, lanes: int) -> int:
    """The lane of a device: the same in every gateway and every run (crc32, not hash())."""
    return zlib.crc32(device_id.encode()) % lanes


def split(items: Sequence[T], device_of: Callable[[T], str], lanes: int) -> list[list[T]]:
    """``items`` by lane, each lane's in their order."""
    parts: list[list[T]] = [[] for _ in range(lanes)]
    if lanes == 1:
        parts[0].extend(items)
        return parts
    for item in items:
        parts[lane_of(device_of(item), lanes)].append(item)
    return parts


class Turn:
    """One batch's place in one lane: it may go once the batch before it in the lane is done."""

    def __init__(self, previous: asyncio.Future[None] | None) -> None:
        self.previous = previous
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def wait(self) -> None:
        """Until the lane's previous part has committed or given up."""
        if self.previous is not None:
            # Shielded: a batch cancelled while waiting must not cancel the one before it.
            await asyncio.shield(self.previous)

    def finish(self) -> None:
        """This part is done (committed, or given up): the next may go once the previous is
        done too (a part that never waited, having nothing to store, keeps the order)."""
        if self.done.done():
            return
        previous = self.previous
        if previous is None or previous.done():
            self.done.set_result(None)
        else:
            previous.add_done_callback(lambda _: self.finish())


class LaneOrder:
    """The order of the parts in each lane. :meth:`reserve` is called for each batch as it
    arrives, before anything is awaited: that is what puts the batches in order."""

    def __init__(self, lanes: int) -> None:
        if lanes < 1:
            raise ValueError(f"lanes must be at least 1, got {lanes}")
        self.lanes = lanes
        self._tails: list[asyncio.Future[None] | None] = [None] * lanes

    def reserve(self) -> list[Turn]:
        """A batch's turn in every lane, after the batches reserved before it."""
        turns = [Turn(tail) for tail in self._tails]
        self._tails = [turn.done for turn in turns]
        return turns
