"""The fold of a batch into device rows, and which rows are worth writing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from devices.envelope import Event, StatusReport
from gateway.device_state import DeviceUpdate, fold_batch, remember, worth_writing

T0 = datetime(2026, 11, 22, 22, 0, tzinfo=UTC)


def event(device: str, seconds: float, event_type: str = "heartbeat", **data: object) -> Event:
    at = T0 + timedelta(seconds=seconds)
    return Event(device, "door_lock", f"e{seconds}", at, at, event_type, dict(data))


def status(device: str, seconds: float, online: bool) -> StatusReport:
    return StatusReport(device, online, T0 + timedelta(seconds=seconds))


def test_fold_keeps_the_latest_receipt_and_the_newest_battery() -> None:
    """last_seen is the latest receipt; battery is from the newest heartbeat by device time."""
    updates = fold_batch(
        [
            event("a", 2, battery=40, fw="1.0"),
            event("a", 1, battery=90),
            event("a", 3, "lock.unlocked", by="s", method="app"),
        ],
        [],
    )
    assert updates == {
        "a": DeviceUpdate(
            last_seen=T0 + timedelta(seconds=3), online=True, battery=40, firmware="1.0"
        )
    }


def test_last_will_sets_offline_without_moving_last_seen() -> None:
    """An "offline" status is the broker speaking for the device: last_seen stays as it was."""
    assert fold_batch([], [status("a", 5, online=False)]) == {"a": DeviceUpdate(online=False)}


def test_status_after_event_in_the_same_batch_wins() -> None:
    """A Last Will after the device's last event leaves the device offline."""
    update = fold_batch([event("a", 1)], [status("a", 2, online=False)])["a"]
    assert update.online is False
    assert update.last_seen == T0 + timedelta(seconds=1)


WRITTEN = DeviceUpdate(last_seen=T0, online=True, battery=50, firmware="1.0")


@pytest.mark.parametrize(
    ("update", "expected"),
    [
        pytest.param(
            DeviceUpdate(last_seen=T0 + timedelta(seconds=1), online=True),
            False,
            id="last-seen-within-resolution",
        ),
        pytest.param(
            DeviceUpdate(last_seen=T0 + timedelta(seconds=5), online=True),
            True,
            id="last-seen-past-resolution",
        ),
        pytest.param(DeviceUpdate(online=False), True, id="went-offline"),
        pytest.param(
            DeviceUpdate(last_seen=T0, online=True, battery=49), True, id="battery-changed"
        ),
        pytest.param(DeviceUpdate(last_seen=T0, online=True, battery=50), False, id="battery-same"),
        pytest.param(
            DeviceUpdate(last_seen=T0, online=True, firmware="1.1"), True, id="firmware-changed"
        ),
    ],
)
def test_worth_writing(update: DeviceUpdate, expected: bool) -> None:
    """Only real changes, or last_seen moving by the resolution or more, reach the database."""
    assert bool(worth_writing({"a": update}, {"a": WRITTEN}, 5.0)) is expected


def test_unknown_device_is_always_written() -> None:
    """A device this gateway has not written yet is written."""
    assert worth_writing({"b": DeviceUpdate(online=True)}, {"a": WRITTEN}, 5.0) == {
        "b": DeviceUpdate(online=True)
    }


def test_remember_merges_partial_updates() -> None:
    """After commit, the memory keeps old values where the update left them unchanged."""
    written = {"a": WRITTEN}
    remember(written, {"a": DeviceUpdate(online=False)})
    assert written["a"] == DeviceUpdate(last_seen=T0, online=False, battery=50, firmware="1.0")
