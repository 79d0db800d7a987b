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
        transport=SimpleNamespace(
            hold_messages=False, direct_topics=frozenset(), sink=None, sink_ready=asyncio.Event()
        ),
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


class _Sink:
    """A direct sink with room for ``room`` records at once (then ``put`` waits forever)."""

    def __init__(self, room: int = 1_000) -> None:
        self.room = room
        self.chunks: list[list[int]] = []

    def offer(self, messages: list[Any]) -> bool:
        if len(messages) > self.room:
            return False
        self.room -= len(messages)
        self.chunks.append([m.offset for m in messages])
        return True

    async def put(self, messages: list[Any]) -> None:
        while not self.offer(messages):
            await asyncio.sleep(0.01)


class _Direct:
    """A fetcher over one direct topic whose consumer returns ``rounds`` of offsets."""

    def __init__(self, rounds: list[list[int]], sink: _Sink | None) -> None:
        self.tp = TP("orders", 0)
        self.read_offset: defaultdict[TP, int | None] = defaultdict(lambda: None)
        self.rounds = rounds
        self.tracked: list[int] = []
        self.gaps: list[tuple[int, int]] = []
        self.on_round: Any = None
        """Called with the consumer after each record of a round is yielded (a test hook)."""
        ready = asyncio.Event()
        if sink is not None:
            ready.set()
        self.consumer = SimpleNamespace(
            suspend_flow=asyncio.Event(),
            should_stop=False,
            diag=_Flags(),
            consumer_stopped_errors=(),
            _read_offset=self.read_offset,
            getmany=self._getmany,
            track_message=lambda m: self.tracked.append(m.offset),
            _add_gap=self._add_gap,
            wait_first=Service().wait_first,
        )
        self.app = SimpleNamespace(
            consumer=self.consumer,
            consumer_generation_id=1,
            should_stop=False,
            topics=_Conductor(self._not_direct),
            transport=SimpleNamespace(
                hold_messages=True, direct_topics=frozenset({"orders"}), sink=sink, sink_ready=ready
            ),
        )

    async def _not_direct(self, message: Any) -> None:
        raise AssertionError(f"a direct record went to the conductor: {message.offset}")

    async def _add_gap(self, tp: TP, offset_from: int, offset_to: int) -> None:
        self.gaps.append((offset_from, offset_to))

    async def _getmany(self, timeout: float) -> AsyncIterator[tuple[TP, Any]]:
        if not self.rounds:
            self.consumer.should_stop = True
            return
        for offset in self.rounds.pop(0):
            yield self.tp, SimpleNamespace(offset=offset, topic=self.tp.topic, partition=0)
            if self.on_round is not None:
                self.on_round(offset)

    async def drain(self) -> None:
        await asyncio.wait_for(LeanFetcher._drain(LeanFetcher(self.app)), 5)


def test_direct_records_reach_the_sink_in_chunks_tracked_and_then_marked_read() -> None:
    sink = _Sink()
    fetch = _Direct([list(range(250)), [250, 252]], sink)
    asyncio.run(fetch.drain())
    # Chunks of at most YIELD_EVERY, in order; a round's tail is handed over at its end.
    assert [offset for chunk in sink.chunks for offset in chunk] == [*range(251), 252]
    assert max(map(len, sink.chunks)) <= 100
    assert fetch.tracked == [*range(251), 252]
    assert fetch.read_offset[fetch.tp] == 252
    # Offsets waiting in a chunk count as read for the gap check: the one gap is 251's
    # (recorded as Faust's loop does, from the offset after the last read to the next read).
    assert fetch.gaps == [(251, 252)]


def test_a_chunk_read_as_the_flow_is_suspended_is_dropped_unmarked_and_untracked() -> None:
    sink = _Sink()
    fetch = _Direct([list(range(50))], sink)

    def suspend_at_40(offset: int) -> None:
        if offset == 40:
            fetch.consumer.suspend_flow.set()

    fetch.on_round = suspend_at_40
    asyncio.run(fetch.drain())
    assert sink.chunks == []
    assert fetch.tracked == []
    assert fetch.read_offset[fetch.tp] is None  # read again from the committed offset


def test_a_chunk_that_waits_for_room_is_abandoned_when_the_flow_is_suspended() -> None:
    sink = _Sink(room=0)  # full for good: the hand-over waits
    fetch = _Direct([list(range(10))], sink)

    async def scenario() -> None:
        drained = asyncio.ensure_future(fetch.drain())
        for _ in range(20):
            await asyncio.sleep(0)
        assert not drained.done(), "the hand-over should wait for room"
        fetch.consumer.suspend_flow.set()
        await drained

    asyncio.run(scenario())
    assert sink.chunks == []
    assert fetch.tracked == []
    assert fetch.read_offset[fetch.tp] is None


def test_records_read_before_the_worker_has_a_sink_wait_for_it() -> None:
    fetch = _Direct([[0, 1, 2]], None)
    sink = _Sink()

    async def scenario() -> None:
        drained = asyncio.ensure_future(fetch.drain())
        for _ in range(20):
            await asyncio.sleep(0)
        assert not drained.done(), "the records should wait for a sink"
        transport = fetch.app.transport
        transport.sink = sink
        transport.sink_ready.set()
        await drained

    asyncio.run(scenario())
    assert sink.chunks == [[0, 1, 2]]
    assert fetch.read_offset[fetch.tp] == 2
