"""Each device's rule state as this gateway last read or wrote it, with its version.

Loading every state from PostgreSQL for every batch, and decoding it, was a fifth of the
gateway's time when half of the events were state changes (issue 14). So the gateway keeps the
states it read and wrote, and its load sends the versions it holds: PostgreSQL sends a state
back only where the row's version differs, that is where another gateway (or this one's
watchdog, on another connection) wrote it since.

Every save names the version it started from, and a row whose version moved on is not written:
the transaction is then rolled back and tried again from fresh states
(:class:`gateway.errors.RuleStateConflictError`). Before versions, two transactions evaluating one
device at once (two gateways sharing a subscription, or a batch beside the watchdog's tick)
could each write back their own state and lose the other's.

Versions come from one sequence (migration 0019): a version is never reused, even by a row
deleted and written again, and a later save has a larger one. Only committed states are kept
here (:meth:`RuleStates.remember` after the commit), so a transaction rolled back leaves
nothing behind.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping, Sequence
from typing import Final, NamedTuple

from devices.rules import DeviceState

# Sent for a device held at no version: no row has it, so its state always comes back.
UNKNOWN: Final = -1

# About a kilobyte per state: 100,000 devices, a region's fleet, in a hundred megabytes.
DEFAULT_CAPACITY: Final = 100_000


class Versioned(NamedTuple):
    """A rule state as stored, and the version of the row that holds it."""

    version: int
    state: DeviceState


class RuleStates:
    """The committed rule states this gateway has seen, by device id; at most ``capacity``."""

    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        self.capacity = capacity
        self._held: dict[str, Versioned] = {}

    def __len__(self) -> int:
        return len(self._held)

    def versions(self, device_ids: Sequence[str]) -> list[int]:
        """The version held of each device, :data:`UNKNOWN` where none is."""
        held = self._held
        return [
            entry.version if (entry := held.get(d)) is not None else UNKNOWN for d in device_ids
        ]

    def get(self, device_id: str, version: int) -> DeviceState | None:
        """The state held of ``device_id`` if it is at ``version``, else None."""
        entry = self._held.get(device_id)
        return entry.state if entry is not None and entry.version == version else None

    def remember(self, committed: Mapping[str, Versioned]) -> None:
        """After a commit: keep what it read or wrote, unless a later version is held already
        (two transactions of this gateway may commit out of the order they ran in)."""
        held = self._held
        for device_id, entry in committed.items():
            before = held.pop(device_id, None)
            held[device_id] = entry if before is None or entry.version >= before.version else before
        # A dict keeps insertion order, and remember re-inserts what it touches: the first
        # entries are the ones least recently written, evicted first.
        excess = len(held) - self.capacity
        if excess > 0:
            for device_id in list(itertools.islice(held, excess)):
                del held[device_id]

    def forget(self, device_ids: Iterable[str]) -> None:
        """Drop what is held of these devices: their next load reads them from PostgreSQL."""
        for device_id in device_ids:
            self._held.pop(device_id, None)
