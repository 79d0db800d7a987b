"""The batch pipeline: order, merging, acks only after processing, nothing acked on failure."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence

import pytest

from segstream.errors import SegstreamError
from segstream.stream.worker.batching import BatchPipeline
from tests.waiting import async_wait_until


class _Message:
    def __init__(self, offset: int, age_s: float = 0.0) -> None:
        self.offset = offset
        self.timestamp = time.time() - age_s  # Kafka timestamp, seconds


def _drained(pipeline: BatchPipeline, task: asyncio.Future[None]) -> Callable[[], Awaitable[bool]]:
    """A condition: nothing left pending, or the pipeline stopped (its error is the test's)."""

    async def drained() -> bool:
        return not pipeline.pending or task.done()

    return drained


def _events(start: int, n: int, age_s: float = 0.0) -> list[_Message]:
    return [_Message(offset, age_s) for offset in range(start, start + n)]


def test_batches_are_processed_in_order_merged_up_to_the_size_and_acked_after() -> None:
    processed: list[list[int]] = []
    acked: list[int] = []

    async def process(messages: Sequence[_Message]) -> None:
        assert not any(m.offset in acked for m in messages)  # nothing acked before processing
        processed.append([m.offset for m in messages])
        await asyncio.sleep(0)

    def ack(messages: Sequence[_Message]) -> None:
        acked.extend(m.offset for m in messages)

    async def scenario() -> BatchPipeline:
        pipeline = BatchPipeline(process, ack, batch_size=5, max_pending=100)
        for start, n in ((0, 2), (2, 2), (4, 2), (6, 4)):  # all queued before the task runs
            await pipeline.put(_events(start, n))
        task = asyncio.ensure_future(pipeline.run())
        await async_wait_until(
            _drained(pipeline, task), 30, "the batches were never all processed", interval_s=0
        )
        task.cancel()
        return pipeline

    pipeline = asyncio.run(scenario())
    assert processed == [[0, 1, 2, 3], [4, 5], [6, 7, 8, 9]]
    assert acked == list(range(10))
    assert pipeline.pending == 0


def test_a_failed_batch_is_never_acked_and_stops_the_pipeline() -> None:
    acked: list[int] = []
    events = _events(0, 3)

    async def process(messages: Sequence[_Message]) -> None:
        raise ConnectionError("redis went away for good")

    def ack(messages: Sequence[_Message]) -> None:
        acked.extend(m.offset for m in messages)

    async def scenario() -> None:
        pipeline = BatchPipeline(process, ack, batch_size=10, max_pending=3)
        await pipeline.put(events)
        with pytest.raises(ConnectionError):
            await pipeline.run()
        with pytest.raises(SegstreamError):
            await pipeline.put(_events(3, 1))

    asyncio.run(scenario())
    assert acked == []


def test_put_waits_while_too_much_is_pending() -> None:
    async def process(messages: Sequence[_Message]) -> None:
        await asyncio.sleep(0.01)

    def ack(messages: Sequence[_Message]) -> None:
        return None

    async def scenario() -> list[int]:
        pipeline = BatchPipeline(process, ack, batch_size=2, max_pending=2)
        task = asyncio.ensure_future(pipeline.run())
        seen = []
        for start in range(0, 8, 2):
            await pipeline.put(_events(start, 2))
            seen.append(pipeline.pending)
        task.cancel()
        return seen

    assert max(asyncio.run(scenario())) <= 2


def test_when_behind_a_small_batch_waits_for_more_events_before_processing() -> None:
    processed: list[int] = []

    async def process(messages: Sequence[_Message]) -> None:
        processed.append(len(messages))

    def ack(messages: Sequence[_Message]) -> None:
        return None

    async def scenario(age_s: float) -> None:
        # Bounds far from both ages, so that a loaded machine cannot turn fresh events into
        # late ones, nor end the wait for a full batch early.
        processed.clear()
        pipeline = BatchPipeline(
            process, ack, batch_size=10, max_pending=100, catch_up_age_s=60, catch_up_wait_s=60
        )
        task = asyncio.ensure_future(pipeline.run())
        for start, n in ((0, 3), (3, 3), (6, 4)):
            await pipeline.put(_events(start, n, age_s))
            if age_s:
                # Time passing is the point: behind, the pipeline holds the small batch.
                await asyncio.sleep(0.02)
            else:
                batches = len(processed) + 1

                async def taken(batches: int = batches) -> bool:
                    return len(processed) == batches or task.done()

                await async_wait_until(taken, 30, "a fresh batch was held", interval_s=0.005)
        await async_wait_until(
            _drained(pipeline, task), 30, "the batches were never all processed", interval_s=0.005
        )
        task.cancel()

    asyncio.run(scenario(age_s=600.0))  # old events: one full batch
    assert processed == [10]
    asyncio.run(scenario(age_s=0.0))  # fresh events: each batch at once
    assert processed == [3, 3, 4]


def test_a_batch_that_is_not_full_waits_for_more_within_the_fill_window() -> None:
    processed: list[int] = []

    async def process(messages: Sequence[_Message]) -> None:
        processed.append(len(messages))

    async def scenario(fill_s: float) -> None:
        processed.clear()
        pipeline = BatchPipeline(
            process, _ack_nothing, batch_size=10, max_pending=100, fill_s=fill_s
        )
        task = asyncio.ensure_future(pipeline.run())
        assert pipeline.offer(_events(0, 3))
        await asyncio.sleep(0.02)
        assert pipeline.offer(_events(3, 3))
        await asyncio.sleep(0.02)
        assert pipeline.offer(_events(6, 4))
        await async_wait_until(
            _drained(pipeline, task), 30, "the batches were never all processed", interval_s=0.005
        )
        task.cancel()

    asyncio.run(scenario(fill_s=60))  # within the window: the chunks fill one batch
    assert processed == [10]
    asyncio.run(scenario(fill_s=0))  # no window: each chunk at once
    assert processed == [3, 3, 4]


def test_a_stop_arriving_as_more_events_end_the_fill_wait_still_stops_the_pipeline() -> None:
    # The cancel lands in the same loop turn as the event that ends the wait for more: a wait
    # that returned its result then (asyncio.wait_for before Python 3.12) lost the cancel, and
    # the pipeline went on processing after its stop.
    processed: list[int] = []

    async def process(messages: Sequence[_Message]) -> None:
        processed.append(len(messages))

    async def scenario() -> bool:
        pipeline = BatchPipeline(process, _ack_nothing, batch_size=10, max_pending=100, fill_s=60)
        task = asyncio.ensure_future(pipeline.run())
        assert pipeline.offer(_events(0, 3))

        async def filling() -> bool:  # the batch in hand, the wake-up cleared for the wait
            return not pipeline._arrived.is_set()

        await async_wait_until(
            filling, 30, "the pipeline never waited to fill its batch", interval_s=0.001
        )
        assert pipeline.offer(_events(3, 3))
        task.cancel()
        await asyncio.wait([task], timeout=30)
        return task.cancelled()

    assert asyncio.run(scenario()) is True
    assert processed == []


def test_offer_refuses_while_too_much_is_pending_and_takes_the_chunk_as_given() -> None:
    processed: list[list[_Message]] = []

    async def process(messages: Sequence[_Message]) -> None:
        processed.append(list(messages))

    async def scenario() -> tuple[bool, bool, bool]:
        pipeline = BatchPipeline(process, _ack_nothing, batch_size=10, max_pending=3)
        chunk = _events(0, 3)
        first = pipeline.offer(chunk)
        second = pipeline.offer(_events(3, 1))  # 3 pending: no room
        task = asyncio.ensure_future(pipeline.run())
        await async_wait_until(
            _drained(pipeline, task), 30, "the chunk was never processed", interval_s=0
        )
        third = pipeline.offer(_events(3, 1))  # room again once processed
        task.cancel()
        assert processed[0] == chunk
        return first, second, third

    assert asyncio.run(scenario()) == (True, False, True)


def test_a_chunk_larger_than_a_batch_is_processed_in_batches_in_order() -> None:
    processed: list[list[int]] = []

    async def process(messages: Sequence[_Message]) -> None:
        processed.append([m.offset for m in messages])

    async def scenario() -> None:
        pipeline = BatchPipeline(process, _ack_nothing, batch_size=4, max_pending=100)
        await pipeline.put(_events(0, 10))
        task = asyncio.ensure_future(pipeline.run())
        await async_wait_until(
            _drained(pipeline, task), 30, "the chunk was never processed", interval_s=0
        )
        task.cancel()

    asyncio.run(scenario())
    assert processed == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]


def _ack_nothing(messages: Sequence[_Message]) -> None:
    return None


class TestFinish:
    """A stop finishes the batch in hand, within a bound, and starts no other."""

    @staticmethod
    async def _started(
        release: asyncio.Event, acked: list[int], started: asyncio.Event
    ) -> tuple[BatchPipeline, asyncio.Future[None]]:
        async def process(messages: Sequence[_Message]) -> None:
            started.set()
            await release.wait()

        def ack(messages: Sequence[_Message]) -> None:
            acked.extend(m.offset for m in messages)

        pipeline = BatchPipeline(process, ack, batch_size=3, max_pending=100)
        await pipeline.put(_events(0, 3))
        await pipeline.put(_events(3, 3))  # queued behind the one in hand
        task = asyncio.ensure_future(pipeline.run())
        await started.wait()
        return pipeline, task

    def test_the_batch_in_hand_is_finished_and_acked_and_the_queued_one_is_not_started(
        self,
    ) -> None:
        acked: list[int] = []

        async def scenario() -> bool:
            release, started = asyncio.Event(), asyncio.Event()
            pipeline, task = await self._started(release, acked, started)
            finishing = asyncio.ensure_future(pipeline.finish(task, timeout_s=60))
            await asyncio.sleep(0)  # the stop arrives while the batch is in process
            assert not finishing.done()
            release.set()
            return await finishing

        assert asyncio.run(scenario()) is True
        assert acked == [0, 1, 2]  # the queued batch is left to the next owner, unacked

    def test_past_the_bound_the_batch_in_hand_is_cancelled_unacked(self) -> None:
        acked: list[int] = []

        async def scenario() -> tuple[bool, bool]:
            release, started = asyncio.Event(), asyncio.Event()  # never released
            pipeline, task = await self._started(release, acked, started)
            finished = await pipeline.finish(task, timeout_s=0.05)
            return finished, task.cancelled()

        assert asyncio.run(scenario()) == (False, True)
        assert acked == []

    def test_an_idle_pipeline_stops_at_once(self) -> None:
        async def scenario() -> bool:
            pipeline = BatchPipeline(_no_process, _no_ack, batch_size=3, max_pending=100)
            task = asyncio.ensure_future(pipeline.run())
            await asyncio.sleep(0)
            return await pipeline.finish(task, timeout_s=60) and task.cancelled()

        assert asyncio.run(scenario()) is True


async def _no_process(messages: Sequence[_Message]) -> None:
    raise AssertionError("nothing to process")


def _no_ack(messages: Sequence[_Message]) -> None:
    raise AssertionError("nothing to ack")


class _Gated:
    """:class:`Stages` whose steps are logged and whose second stages wait for a release."""

    def __init__(self) -> None:
        self.log: list[str] = []
        self.release: dict[int, asyncio.Event] = {}
        self.fail_first: set[int] = set()
        self.fail_second: set[int] = set()

    def gate(self, first_offset: int) -> asyncio.Event:
        return self.release.setdefault(first_offset, asyncio.Event())

    async def prepare(self, records: Sequence[_Message], previous: Awaitable[None] | None) -> int:
        first = records[0].offset
        self.log.append(f"first {first}")
        await asyncio.sleep(0)
        if first in self.fail_first:
            raise SegstreamError(f"first stage of {first} failed")
        return first

    async def complete(self, prepared: int) -> None:
        self.log.append(f"second {prepared} starts")
        await self.gate(prepared).wait()
        if prepared in self.fail_second:
            raise SegstreamError(f"second stage of {prepared} failed")
        self.log.append(f"second {prepared} ends")


def _logged_ack(log: list[str]) -> Callable[[Sequence[_Message]], None]:
    def ack(messages: Sequence[_Message]) -> None:
        log.append(f"ack {messages[0].offset}")

    return ack


async def _queued(stages: _Gated, starts: Sequence[int], depth: int) -> BatchPipeline:
    """A pipeline of ``stages`` (batches of 2, acks logged) with 2 records queued from each
    offset of ``starts``."""
    pipeline = BatchPipeline(
        stages, _logged_ack(stages.log), batch_size=2, max_pending=100, depth=depth
    )
    for start in starts:
        await pipeline.put(_events(start, 2))
    return pipeline


async def _until(condition: Callable[[], bool], what: str) -> None:
    async def check() -> bool:
        return condition()

    await async_wait_until(check, 30, what, interval_s=0)


class TestOverlap:
    """Depth 2: a batch's first stage overlaps the previous batch's second, in order."""

    def test_the_next_first_stage_runs_while_the_previous_batch_waits_for_its_acks(self) -> None:
        stages = _Gated()

        async def scenario() -> None:
            pipeline = await _queued(stages, (0, 2, 4), depth=2)
            task = asyncio.ensure_future(pipeline.run())
            await _until(lambda: "first 2" in stages.log, "batch 2's first stage never ran")
            # Batch 0 still waits for its acknowledgements: batch 4 may not start yet (at most
            # two batches in hand) and batch 2's second stage may not start before 0's ends.
            assert "second 2 starts" not in stages.log and "first 4" not in stages.log
            stages.gate(2).set()  # 2's release first: it must still wait for 0
            stages.gate(0).set()
            await _until(lambda: "first 4" in stages.log, "batch 4 never started")
            stages.gate(4).set()
            await _until(lambda: "ack 4" in stages.log, "batch 4 was never acked")
            task.cancel()

        asyncio.run(scenario())
        at = {line: n for n, line in enumerate(stages.log)}
        assert at["first 2"] < at["second 0 ends"], "no overlap"
        assert at["second 0 ends"] < at["ack 0"] < at["second 2 starts"] < at["second 2 ends"]
        assert at["ack 0"] < at["first 4"], "three batches were in hand"
        assert at["second 2 ends"] < at["ack 2"] < at["second 4 starts"] < at["ack 4"]
        assert [line for line in stages.log if line.startswith("ack")] == [
            "ack 0",
            "ack 2",
            "ack 4",
        ]

    def test_at_depth_1_nothing_overlaps(self) -> None:
        stages = _Gated()
        for offset in (0, 2):
            stages.gate(offset).set()

        async def scenario() -> None:
            pipeline = await _queued(stages, (0, 2), depth=1)
            task = asyncio.ensure_future(pipeline.run())
            await _until(lambda: "ack 2" in stages.log, "batch 2 was never acked")
            task.cancel()

        asyncio.run(scenario())
        assert stages.log == [
            "first 0", "second 0 starts", "second 0 ends", "ack 0",
            "first 2", "second 2 starts", "second 2 ends", "ack 2",
        ]  # fmt: skip

    def test_a_failed_second_stage_acks_neither_it_nor_the_batch_behind_it(self) -> None:
        stages = _Gated()
        stages.fail_second.add(0)

        async def scenario() -> BaseException | None:
            pipeline = await _queued(stages, (0, 2), depth=2)
            task = asyncio.ensure_future(pipeline.run())
            await _until(lambda: "first 2" in stages.log, "batch 2's first stage never ran")
            stages.gate(0).set()
            stages.gate(2).set()
            await asyncio.wait({task})
            return task.exception()

        failure = asyncio.run(scenario())
        assert isinstance(failure, SegstreamError) and "second stage of 0" in str(failure)
        assert not [line for line in stages.log if line.startswith("ack")]
        assert "second 2 starts" not in stages.log

    def test_a_failure_in_the_idle_pipelines_background_stage_stops_it(self) -> None:
        stages = _Gated()
        stages.fail_second.add(0)

        async def scenario() -> tuple[BaseException | None, BatchPipeline]:
            pipeline = await _queued(stages, (0,), depth=2)
            task = asyncio.ensure_future(pipeline.run())
            await _until(lambda: "second 0 starts" in stages.log, "no second stage")
            stages.gate(0).set()  # fails while run() waits for more input
            await asyncio.wait({task})
            return task.exception(), pipeline

        failure, pipeline = asyncio.run(scenario())
        assert isinstance(failure, SegstreamError)
        assert not pipeline.offer(_events(2, 2)), "a failed pipeline takes nothing more"

    def test_a_failed_first_stage_still_acks_the_batch_before_it_once_sent(self) -> None:
        stages = _Gated()
        stages.fail_first.add(2)

        async def scenario() -> BaseException | None:
            pipeline = await _queued(stages, (0, 2), depth=2)
            task = asyncio.ensure_future(pipeline.run())
            await _until(lambda: "first 2" in stages.log, "batch 2's first stage never ran")
            stages.gate(0).set()
            await asyncio.wait({task})
            return task.exception()

        failure = asyncio.run(scenario())
        assert isinstance(failure, SegstreamError) and "first stage of 2" in str(failure)
        assert stages.log[-2:] == ["second 0 ends", "ack 0"]
        assert "ack 2" not in stages.log

    def test_a_stop_while_waiting_for_input_finishes_and_acks_the_second_stage_in_hand(
        self,
    ) -> None:
        stages = _Gated()

        async def scenario() -> bool:
            pipeline = await _queued(stages, (0,), depth=2)
            task = asyncio.ensure_future(pipeline.run())
            await _until(lambda: "second 0 starts" in stages.log, "no second stage")
            finishing = asyncio.ensure_future(pipeline.finish(task, timeout_s=60))
            await asyncio.sleep(0)
            assert not finishing.done(), "the stop did not wait for the batch in hand"
            stages.gate(0).set()
            return await finishing

        assert asyncio.run(scenario()) is True
        assert stages.log[-2:] == ["second 0 ends", "ack 0"]

    def test_past_the_stops_bound_the_second_stage_is_cancelled_unacked(self) -> None:
        stages = _Gated()

        async def scenario() -> bool:
            pipeline = await _queued(stages, (0,), depth=2)
            task = asyncio.ensure_future(pipeline.run())
            await _until(lambda: "second 0 starts" in stages.log, "no second stage")
            return await pipeline.finish(task, timeout_s=0.05)  # never released

        assert asyncio.run(scenario()) is False
        assert "ack 0" not in stages.log

    def test_the_depth_is_checked(self) -> None:
        with pytest.raises(ValueError, match="depth must be 1 or 2"):
            BatchPipeline(_Gated(), _no_ack, batch_size=2, max_pending=10, depth=3)
