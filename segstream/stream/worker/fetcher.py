"""The worker's fetch loop: Faust's, handing messages over without Faust's per-message tasks.

Faust reads records in one loop, run by the service its transport names as ``Fetcher``
(``faust.transport.base.Transport.Fetcher``, "Service that fetches messages from the broker";
the app builds it as ``transport.Fetcher(app, loop=..., beacon=...)``, starts it once a
rebalance's recovery is done and stops it when the app stops). Faust's own Fetcher runs
``Consumer._drain_messages``, which hands each record to the topic conductor through
``Service.wait_first(callback(message), suspend_flow.wait())``: four asyncio tasks and an
``asyncio.wait`` per message, so that a hand-over blocked by a full stream buffer is abandoned
when a rebalance suspends the flow or the consumer stops. On this project's 2-core reference
machine that bookkeeping alone cost 25-50 us of the worker's ~130 us of CPU per event.

:class:`LeanFetcher` is the worker's ``Fetcher``: its own service, overriding nothing of
Faust's, that reads through the consumer's public ``getmany`` and hands records to the
conductor's public ``on_message``. It keeps what Faust's loop guarantees (an offset read twice
is skipped, offsets the broker skipped are recorded as gaps so the commit passes them, the loop
yields to the event loop regularly) and Faust's suspension semantics, paying for the race only
when it can matter:

- **fast path**: while no stream buffer is full, the conductor's callback cannot block (it
  puts into a buffer that is not full without waiting, see ``faust.transport.conductor``), so
  it is awaited directly;
- **slow path**: when a buffer is full, the callback is raced against ``suspend_flow`` and the
  consumer stopping (the consumer's ``wait_first``, exactly as Faust's loop does). A rebalance
  or a stop abandons the blocked hand-over: the message is not marked read, and the
  partition's owner after the rebalance reads it again from the committed offset.

The read offsets and the gaps are Faust's own consumer state, reset by Faust on a seek or a
revocation; :mod:`~segstream.stream.worker.faust_internals` is the one place that reaches them.

With ``hold_messages`` (the worker's setting, on the transport), each message is handed over
with one reference more, held for the worker: the stream's own ack then never commits it, only
the worker's ack after processing does (:class:`~segstream.stream.worker.batching.BatchPipeline`).
This closes a hole in Faust's rebalance: an event that reaches the stream while the flow is
suspended, or from the previous consumer generation, is *skipped and acked* by
``faust.Stream``, so a commit could pass an event nobody processed. Held, a skipped event is
simply never acked, and the partition's next owner reads it again from the committed offset.
Commits are not this loop's business (:class:`~segstream.stream.worker.consumer.LeanConsumer`
starts them in the background from its acks and its timer).

**Direct delivery.** The records of the transport's ``direct_topics`` (the worker's input
topics) skip the conductor and Faust's stream altogether: they are handed to the transport's
:class:`DirectSink` (the worker's :class:`~segstream.stream.worker.batching.BatchPipeline`)
in chunks of up to :data:`YIELD_EVERY`, one call per chunk. Faust's per-record path (the
conductor's decode into an Event, the stream buffer, the stream's iteration, ``take_events``
and two acks per event) was ~40% of the worker's CPU per event. What it guaranteed is kept
here: a chunk is handed over only while the flow is not suspended and the consumer
generation is the one it was read in (else it is dropped, unmarked, and read again from the
committed offset after the rebalance); a chunk that must wait for room is raced against
``suspend_flow`` like the slow path; each delivered record is tracked by the consumer
(``track_message``) so that a revocation waits for the sink to ack it (Faust's
``wait_empty``), and only then marked read. The sink acks each record once processed
(``LeanConsumer.ack_all``); nothing else acks it, so nothing unprocessed is committed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Iterable
from typing import Any, Protocol, cast

from faust.transport.consumer import CONSUMER_FETCHING
from faust.types import TP, AppT, Message
from mode import Service

from segstream.stream.worker.faust_internals import read_offsets, record_gap

__all__ = [
    "YIELD_EVERY",
    "DirectSink",
    "FetchOptions",
    "LeanFetcher",
    "any_full",
    "hand_over_or_abandon",
]

log = logging.getLogger(__name__)

YIELD_EVERY = 100
"""Messages handed over between two explicit yields to the event loop (as Faust does)."""


class DirectSink(Protocol):
    """Where the records of the direct topics go, in chunks (module docstring)."""

    def offer(self, messages: list[Message]) -> bool:
        """Take ``messages`` (kept as given, in order) if there is room now; else False."""

    async def put(self, messages: list[Message]) -> None:
        """Take ``messages``, waiting for room; cancelled, it has taken nothing."""


class FetchOptions(Protocol):
    """What :class:`LeanFetcher` reads from the app's transport."""

    hold_messages: bool
    """Hand each message over with one more reference, released by the worker."""
    direct_topics: frozenset[str]
    """Topics whose records go to :attr:`sink` instead of the conductor."""
    sink: DirectSink | None
    """The direct topics' sink; ``None`` until the worker has one (records wait for it)."""
    sink_ready: asyncio.Event
    """Set while :attr:`sink` is not ``None``."""


class _Waiter(Protocol):
    """The consumer's ``wait_first`` (mode's ``Service.wait_first``), as used here."""

    async def wait_first(self, *coros: Any, timeout: float | None = None) -> Any:
        """Wait for the first of ``coros`` (awaitables or events); the others are cancelled."""


def any_full(queues: Iterable[asyncio.Queue[Any]]) -> bool:
    """True when one of ``queues`` is full, i.e. a put into it would wait."""
    return any(queue.full() for queue in queues)


async def hand_over_or_abandon(
    consumer: _Waiter, handover: Awaitable[Any], suspend_flow: asyncio.Event
) -> bool:
    """Race ``handover`` against ``suspend_flow`` and ``consumer`` stopping.

    Returns:
        True when the hand-over finished first; False when the flow was suspended or the
        consumer stopped first, in which case the hand-over was cancelled (Faust's
        ``wait_first`` cancels the losers) and the message was not delivered.
    """
    results = await consumer.wait_first(handover, suspend_flow)
    return handover in results.done


class LeanFetcher(Service):
    """The app's ``Fetcher`` service: the fetch loop of the module docstring."""

    def __init__(self, app: AppT, **kwargs: Any) -> None:
        """Built by the app as ``transport.Fetcher(app, loop=..., beacon=...)``."""
        self.app = app
        super().__init__(**kwargs)

    @Service.task
    async def _drain(self) -> None:
        """Fetch and hand over until stopped.

        An error other than the consumer stopping with the app propagates, as from Faust's own
        Fetcher: mode then crashes the service and, through the beacon, the app, so the worker
        exits and the error is logged.
        """
        app = self.app
        consumer = app.consumer
        conductor = app.topics
        callback = conductor.on_message
        suspend_flow: asyncio.Event = cast(Any, consumer).suspend_flow
        suspended = suspend_flow.is_set
        acks_enabled_for = conductor.acks_enabled_for
        options = cast(FetchOptions, app.transport)
        hold = options.hold_messages
        direct = options.direct_topics
        read_offset = read_offsets(consumer)
        waiter = cast(_Waiter, consumer)
        diag = consumer.diag
        since_yield = 0
        # The direct topics' records read and not yet handed over, and their read offsets.
        chunk: list[Message] = []
        unmarked: dict[TP, int] = {}

        async def deliver(generation: int) -> bool:
            """Hand ``chunk`` to the sink; False (and the chunk dropped) when abandoned."""
            nonlocal chunk
            messages, offsets = chunk, dict(unmarked)
            chunk = []
            unmarked.clear()
            if not await self._hand_over(messages, generation, waiter, suspend_flow):
                return False
            track = consumer.track_message
            for message in messages:
                track(message)  # a revocation now waits for the sink's ack (wait_empty)
            if not suspended() and app.consumer_generation_id == generation:
                read_offset.update(offsets)
            return True

        try:
            while not (self.should_stop or consumer.should_stop):
                diag.set_flag(CONSUMER_FETCHING)
                records = consumer.getmany(timeout=1.0)
                await asyncio.sleep(0)  # getmany may return at once, again and again
                if consumer.should_stop:
                    continue
                # The channels the conductor delivers to (they change only on a rebalance,
                # which suspends the flow and ends this round).
                buffers = [channel.queue for channel in conductor]
                generation = app.consumer_generation_id
                async for tp, message in records:
                    since_yield += 1
                    if since_yield >= YIELD_EVERY:
                        since_yield = 0
                        if chunk and not await deliver(generation):
                            break
                        await asyncio.sleep(0)
                    # After the yield, which a rebalance may have started during.
                    if suspended() or consumer.should_stop:
                        break  # rebalancing or stopping: Faust seeks back afterwards
                    generation = app.consumer_generation_id
                    offset = message.offset
                    last = unmarked.get(tp, read_offset[tp])
                    if last is not None and offset < last:
                        continue  # read before the last seek: Faust drops it too
                    if last and offset - last > 1 and acks_enabled_for(message.topic):
                        await record_gap(consumer, tp, last + 1, offset)
                    if message.topic in direct:
                        chunk.append(message)
                        unmarked[tp] = offset
                        continue
                    if hold:
                        message.incref()  # released by the worker once processed
                    if not any_full(buffers):
                        await callback(message)
                    elif not await hand_over_or_abandon(waiter, callback(message), suspend_flow):
                        log.info(
                            "hand-over of %s[%d]@%d abandoned: the flow was suspended (a "
                            "rebalance or a stop) while the stream buffer was full; it is read "
                            "again from the committed offset",
                            tp.topic,
                            tp.partition,
                            offset,
                        )
                        break
                    if suspended() or app.consumer_generation_id != generation:
                        # The hand-over outlived the flow: Faust's flow control holds it
                        # while a rebalance runs, and it returns once the next generation
                        # resumes. The rebalance's seek has reset the read offsets by then;
                        # recording this one would drop the records below it, which the
                        # seek fetches again, as "read before the last seek", and the commit
                        # after the next revocation would pass them unprocessed. The stream
                        # skips the message (previous generation; held, it is never acked).
                        log.info(
                            "hand-over of %s[%d]@%d returned after a rebalance: not marked "
                            "read; it is read again from the committed offset",
                            tp.topic,
                            tp.partition,
                            offset,
                        )
                        break
                    read_offset[tp] = offset
                if chunk:
                    await deliver(generation)  # dropped if the round ended in a suspension
                diag.unset_flag(CONSUMER_FETCHING)
        except consumer.consumer_stopped_errors:  # type: ignore[attr-defined]
            if not app.should_stop:
                raise
        finally:
            diag.unset_flag(CONSUMER_FETCHING)

    async def _hand_over(
        self,
        messages: list[Message],
        generation: int,
        waiter: _Waiter,
        suspend_flow: asyncio.Event,
    ) -> bool:
        """Give ``messages`` to the transport's sink, waiting for it (and for room) only as
        long as the flow is not suspended, the consumer not stopping and the generation the
        one they were read in. Returns whether the sink took them."""
        app = self.app
        options = cast(FetchOptions, app.transport)

        def current() -> bool:
            return (
                not suspend_flow.is_set()
                and not app.consumer.should_stop
                and app.consumer_generation_id == generation
            )

        while options.sink is None and current():
            # The worker is still starting (Redis, producer, model): hold the records.
            await waiter.wait_first(options.sink_ready.wait(), suspend_flow, timeout=1.0)
        if not current():
            return False
        sink = options.sink
        if sink is None:  # pragma: no cover - current() only after the loop saw a sink
            return False
        if sink.offer(messages):
            return True
        if await hand_over_or_abandon(waiter, sink.put(messages), suspend_flow):
            return True
        first = messages[0]
        log.info(
            "hand-over of %d records from %s[%d]@%d abandoned: the flow was suspended (a "
            "rebalance or a stop) while the worker's queue was full; they are read again "
            "from the committed offset",
            len(messages),
            first.topic,
            first.partition,
            first.offset,
        )
        return False
