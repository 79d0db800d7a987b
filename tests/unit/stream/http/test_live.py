"""Group throughput figures of the status page, from offset samples; ending its loops."""

from __future__ import annotations

import asyncio

import pytest

from segstream.stream.http.live import end_tasks, offset_rates


def test_offset_rates_need_two_samples_half_a_second_apart() -> None:
    assert offset_rates([]) == (None, None)
    assert offset_rates([(0.0, 0, 0), (0.2, 10, 10)]) == (None, None)


def test_offset_rates_use_the_window_only() -> None:
    history = [(0.0, 0, 0), (50.0, 100, 200), (55.0, 150, 260), (60.0, 200, 300)]
    processed, produced = offset_rates(history, window_s=10.0)
    assert processed == pytest.approx(10.0)
    assert produced == pytest.approx(10.0)


def test_offsets_going_backwards_give_zero_not_negative_rates() -> None:
    assert offset_rates([(0.0, 500, 500), (2.0, 10, 20)]) == (0.0, 0.0)


def test_end_tasks_cancels_again_a_task_that_swallowed_its_cancellation() -> None:
    ends: list[str] = []

    async def swallows_once() -> None:
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            ends.append("swallowed")  # as wait_for does when its operation ends just then
        try:
            await asyncio.sleep(60)
        finally:
            ends.append("ended")

    async def fails() -> None:
        raise RuntimeError("a loop's bug, reported where it was raised")

    async def scenario() -> None:
        tasks = [asyncio.create_task(swallows_once()), asyncio.create_task(fails())]
        await asyncio.sleep(0)
        async with asyncio.timeout(30):  # without a second cancel: fails here
            await end_tasks(tasks)
        assert all(task.done() for task in tasks)

    asyncio.run(scenario())
    assert ends == ["swallowed", "ended"]
