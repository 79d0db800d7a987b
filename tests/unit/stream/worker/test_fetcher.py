"""The lean fetcher's hand-over: direct while there is room, abandoned on a suspended flow."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import AsyncIterator, Iterator
from types import SimpleNamespace
from typing import Any

import faust
from faust.types import TP
from mode import Service

from segstream.stream.worker.consumer import LeanConsumer, use_lean_consumer
from segstream.stream.worker.fetcher import LeanFetcher, any_full, hand_over_or_abandon


def test_any_full_is_true_only_when_a_put_would_wait() -> None:
    roomy: asyncio.Queue[int] = asyncio.Queue(maxsize=2)
    full: asyncio.Queue[int] = asyncio.Queue(maxsize=1)
    full.put_nowait(1)
    roomy.put_nowait(1)
    assert not any_full([roomy])
    assert any_full([roomy, full])
    assert not any_full([])


async def _blocked_hand_over(release: str) -> tuple[bool, list[int]]:
    """Hand 2 to a full buffer of [1], then ``release`` it by suspending or stopping."""
    consumer = Service()
    suspend_flow = asyncio.Event()
    buffer: asyncio.Queue[int] = asyncio.Queue(maxsize=1)
    buffer.put_nowait(1)
    race = asyncio.ensure_future(hand_over_or_abandon(consumer, buffer.put(2), suspend_flow))
    for _ in range(5):
        await asyncio.sleep(0)
    assert not race.done(), "the hand-over should wait while the buffer is full"
    if release == "suspend":
        suspend_flow.set()
    else:
        await consumer.stop()
    delivered = await asyncio.wait_for(race, 5)
    buffer.get_nowait()  # room again: an abandoned put must not land now
    for _ in range(5):
        await asyncio.sleep(0)
    return delivered, [buffer.get_nowait() for _ in range(buffer.qsize())]


def test_a_hand_over_blocked_by_a_full_buffer_is_abandoned_when_the_flow_is_suspended() -> None:
    delivered, left = asyncio.run(_blocked_hand_over("suspend"))
    assert delivered is False
    assert left == []


def test_a_hand_over_blocked_by_a_full_buffer_is_abandoned_when_the_consumer_stops() -> None:
    delivered, left = asyncio.run(_blocked_hand_over("stop"))
    assert delivered is False
    assert left == []


def test_a_hand_over_that_fits_is_delivered() -> None:
    async def scenario() -> tuple[bool, list[int]]:
        buffer: asyncio.Queue[int] = asyncio.Queue(maxsize=2)
        buffer.put_nowait(1)
        delivered = await hand_over_or_abandon(Service(), buffer.put(2), asyncio.Event())
        return delivered, [buffer.get_nowait() for _ in range(buffer.qsize())]

    assert asyncio.run(scenario()) == (True, [1, 2])


def test_the_app_fetches_and_consumes_through_the_lean_classes() -> None:
    async def scenario() -> tuple[type, type]:
        app = faust.App("lean-fetcher-test", broker="kafka://127.0.0.1:1")
        use_lean_consumer(app, hold_messages=True)
        # Faust builds its fetcher as transport.Fetcher(app, ...) and its consumer as
        # transport.create_consumer(...): both must be ours.
        return app.transport.Fetcher, type(app.consumer)

    assert asyncio.run(scenario()) == (LeanFetcher, LeanConsumer)


class _Flags:
    """The consumer's ``diag``."""

    def set_flag(self, flag: str) -> None: ...

    def unset_flag(self, flag: str) -> None: ...


class _Conductor:
    """The topic conductor: no stream buffers (the fast path), every topic acked."""

    def __init__(self, on_message: Any) -> None:
        self.on_message = on_message

    def __iter__(self) -> Iterator[Any]:
        return iter(())

    def acks_enabled_for(self, topic: str) -> bool:
        return True


async def _drain_across_a_rebalance() -> tuple[list[int], int | None]:
    """One fetch round whose hand-over of 5 waits through a rebalance that seeks back to 2,
    then the next generation's round (2..5); returns the offsets handed over and the read
    offset left."""
    tp = TP("users", 0)
    read_offset: defaultdict[TP, int | None] = defaultdict(lambda: None)
    read_offset[tp] = 5
    rounds = [[5], [2, 3, 4, 5]]
    handed: list[int] = []
    consumer = SimpleNamespace(
        suspend_flow=asyncio.Event(),
        should_stop=False,
        diag=_Flags(),
        consumer_stopped_errors=(),
        _read_offset=read_offset,
    )
    app = SimpleNamespace(
        consumer=consumer,
        consumer_generation_id=1,
        should_stop=False,
        transport=SimpleNamespace(hold_messages=False),
    )

    async def getmany(timeout: float) -> AsyncIterator[tuple[TP, Any]]:
        if not rounds:
            consumer.should_stop = True
            return
        for offset in rounds.pop(0):
            yield tp, SimpleNamespace(offset=offset, topic=tp.topic)

    async def on_message(message: Any) -> None:
        handed.append(message.offset)
        if app.consumer_generation_id == 1:
            # Faust's flow control holds this hand-over through a whole rebalance: the flow
            # is suspended, the partition is sought back to its committed offset 2, the next
            # generation resumes the flow, and only then does the hand-over return.
            consumer.suspend_flow.set()
            read_offset[tp] = 2
            app.consumer_generation_id = 2
            consumer.suspend_flow.clear()

    consumer.getmany = getmany
    app.topics = _Conductor(on_message)
    await asyncio.wait_for(LeanFetcher._drain(LeanFetcher(app)), 5)
    return handed, read_offset[tp]


def test_a_hand_over_that_returns_after_a_rebalance_does_not_mark_its_offset_read() -> None:
    # Marked read, 5 would make the next generation drop 2..4 as "read before the last seek",
    # and the commit after the next revocation would pass them unprocessed.
    handed, left = asyncio.run(_drain_across_a_rebalance())
    assert handed == [5, 2, 3, 4, 5]
    assert left == 5
