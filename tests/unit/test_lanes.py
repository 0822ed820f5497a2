"""Lanes (gateway.lanes): parts of batches by device, each lane in batch order."""

from __future__ import annotations

import asyncio

import pytest

from gateway.lanes import LaneOrder, Turn, lane_of, split


def test_a_device_always_has_the_same_lane_and_split_keeps_the_order() -> None:
    devices = [f"dev-{n}" for n in range(200)]
    assert [lane_of(d, 3) for d in devices] == [lane_of(d, 3) for d in devices]
    assert {lane_of(d, 3) for d in devices} == {0, 1, 2}
    items = [(d, n) for n, d in enumerate(devices * 2)]
    parts = split(items, lambda item: item[0], 3)
    assert sorted(item for part in parts for item in part) == sorted(items)
    for lane, part in enumerate(parts):
        assert all(lane_of(d, 3) == lane for d, _ in part)
        assert [n for _, n in part] == sorted(n for _, n in part)
    assert split(items, lambda item: item[0], 1) == [items]


def test_a_lane_goes_in_batch_order_and_an_empty_part_keeps_it() -> None:
    """Batch 2 has nothing in lane 0: batch 3's part there still waits for batch 1's."""

    async def scenario() -> list[str]:
        order = LaneOrder(2)
        first, second, third = order.reserve(), order.reserve(), order.reserve()
        done: list[str] = []

        async def run(name: str, turns: list[Turn], lane: int, delay: float) -> None:
            try:
                await turns[lane].wait()
                await asyncio.sleep(delay)
                done.append(name)
            finally:
                turns[lane].finish()

        second[0].finish()  # batch 2: nothing in lane 0
        await asyncio.gather(
            run("3/0", third, 0, 0.0),
            run("1/0", first, 0, 0.05),
            run("2/1", second, 1, 0.0),
            run("1/1", first, 1, 0.02),
            run("3/1", third, 1, 0.0),
        )
        return done

    done = asyncio.run(scenario())
    assert done.index("1/0") < done.index("3/0")
    assert done.index("1/1") < done.index("2/1") < done.index("3/1")
    assert done.index("2/1") < done.index("1/0"), "lanes do not wait for each other"


def test_a_cancelled_part_lets_the_lane_go_on() -> None:
    async def scenario() -> bool:
        order = LaneOrder(1)
        [first], [second] = order.reserve(), order.reserve()
        waiting = asyncio.create_task(second.wait())
        await asyncio.sleep(0)
        waiting.cancel()
        second.finish()
        first.finish()
        [third] = order.reserve()
        await asyncio.wait_for(third.wait(), 1)
        return first.done.done()

    assert asyncio.run(scenario())


def test_no_lanes_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        LaneOrder(0)
