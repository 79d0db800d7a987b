"""Faust's Kafka consumer with a cheaper hand-over to the agent and commits that cannot hang it.

Faust's consumer reads records in a loop (``Consumer._drain_messages``) and hands each one to
its topic conductor through ``Service.wait_first(callback(message), suspend_flow.wait())``:
four asyncio tasks and an ``asyncio.wait`` per message, so that a hand-over blocked by a full
stream buffer is abandoned when a rebalance suspends the flow (or the consumer stops). On this
project's 2-core reference machine that bookkeeping alone cost 25-50 us of the worker's ~130 us
of CPU per event, more than the worker's own work on the event.

:class:`LeanConsumer` keeps Faust's loop and everything it guarantees (offsets read twice are
skipped, gaps in acked topics are recorded, the loop yields to the event loop regularly), and
Faust's suspension semantics, with the race paid only when it can matter:

- **fast path**: while no stream buffer is full, the conductor's callback cannot block (Faust
  puts into a buffer that is not full without waiting, see ``TopicConductor``), so it is
  awaited directly;
- **slow path**: when a buffer is full, the callback is raced against ``suspend_flow`` and the
  consumer stopping, exactly as Faust does (``Service.wait_first``). A rebalance or a stop
  abandons the blocked hand-over: the message is not marked read, and the partition's owner
  after the rebalance reads it again from the committed offset.

Commits never run inline in the fetch loop. Faust's loop commits every ``broker_commit_every``
acks by awaiting ``commit()`` itself, and a commit waits for any commit in flight: one hung
commit (a coordinator lost to a broker crash) then froze fetching for good. Here the loop only
*starts* that commit in the background, and every commit (the timer's, the loop's, the one at
shutdown) is abandoned after ``commit_deadline_s``; failures and timeouts are recorded in a
:class:`~segstream.stream.worker.watchdog.Progress`, whose watchdog reports a commit stall and
restarts the worker if commits do not recover.

With ``hold_messages`` (the worker's setting), each message is handed over with one reference
more, held for the worker: the stream's own ack then never commits it, only the worker's ack
after processing does (:class:`~segstream.stream.worker.batching.BatchPipeline`). This closes
a hole in Faust's rebalance: an event that reaches the stream while the flow is suspended, or
from the previous consumer generation, is *skipped and acked* by ``faust.Stream``, so a commit
could pass an event nobody processed. Held, a skipped event is simply never acked, and the
partition's next owner reads it again from the committed offset.

**Fetch wait.** Faust builds its aiokafka consumer with a fixed ``fetch_max_wait_ms`` of
1,500 ms. aiokafka leaves a partition whose fetched records are still unread (for more than
its 100 ms prefetch backoff) out of the next request to that partition's leader, and sends no
other request to a broker that has one in flight. With several brokers, that request can hold
only idle partitions (the other input topic's) and wait at the broker for the whole 1,500 ms
before the held-out partition is fetched again: on three brokers, orders sat up to 1.6 s
before the worker saw them. :class:`LeanConsumerThread` sets the configured wait
(``SEGSTREAM_FETCH_MAX_WAIT_MS``) instead, which bounds that stall.

Nothing is acked that was not processed, so "at least once, exactly once in effect" (the Redis
fences) holds. Install it with :func:`use_lean_consumer` before the app starts.

The override of ``_drain_messages`` follows faust-streaming 0.15's method of that name;
``tests/unit/stream/worker/test_consumer.py`` fails if Faust's signature changes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Iterable
from typing import Any, cast

import faust
from aiokafka import AIOKafkaConsumer
from faust.transport.consumer import CONSUMER_FETCHING
from faust.transport.drivers import aiokafka as faust_aiokafka
from mode import Service, ServiceT

from segstream.stream.clients.retry import describe
from segstream.stream.worker.watchdog import Progress

__all__ = ["LeanConsumer", "LeanConsumerThread", "LeanTransport", "any_full", "use_lean_consumer"]

log = logging.getLogger(__name__)

YIELD_EVERY = 100
"""Messages handed over between two explicit yields to the event loop (as Faust does)."""


def any_full(queues: Iterable[asyncio.Queue[Any]]) -> bool:
    """True when one of ``queues`` is full, i.e. a put into it would wait."""
    return any(queue.full() for queue in queues)


class LeanConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    """Faust's consumer thread, whose aiokafka consumer long-polls for ``fetch_max_wait_ms``."""

    def _create_worker_consumer(self, transport: faust_aiokafka.Transport) -> AIOKafkaConsumer:
        consumer = super()._create_worker_consumer(transport)
        # Faust passes a fixed fetch_max_wait_ms=1500; aiokafka reads this attribute when
        # the consumer starts (it builds its Fetcher then), so setting it here takes effect.
        consumer._fetch_max_wait_ms = cast(LeanTransport, transport).fetch_max_wait_ms
        return consumer


class LeanConsumer(faust_aiokafka.Consumer):
    """Faust's aiokafka consumer, minus the per-message tasks (see the module docstring)."""

    _background_commit: asyncio.Future[bool] | None = None

    def _new_consumer_thread(self) -> faust_aiokafka.AIOKafkaConsumerThread:
        return LeanConsumerThread(self, loop=self.loop, beacon=self.beacon)

    @property
    def _lean(self) -> LeanTransport:
        return cast(LeanTransport, self.transport)

    async def commit(self, topics: Any = None, start_new_transaction: bool = True) -> bool:
        """Faust's commit, abandoned after ``commit_deadline_s``; returns whether it committed.

        Outcomes are recorded in the transport's :class:`Progress`; a timeout is logged and
        returns False (the acked offsets stay acked and are committed by a later commit).
        """
        deadline = self._lean.commit_deadline_s
        progress = self._lean.progress
        started = time.monotonic()
        try:
            committed = await asyncio.wait_for(
                super().commit(topics, start_new_transaction=start_new_transaction), deadline
            )
        except TimeoutError:
            progress.commit_failed(started, f"no answer within {deadline:g} s")
            log.error(
                "offset commit abandoned after %g s (SEGSTREAM_COMMIT_DEADLINE_S); "
                "retrying with the next commit",
                deadline,
            )
            return False
        except Exception as exc:
            progress.commit_failed(started, describe(exc))
            raise
        progress.commit_done()
        return committed

    def _start_commit(self) -> None:
        """Commit in the background unless a commit started here is still running."""
        running = self._background_commit
        if running is None or running.done():
            self._background_commit = asyncio.ensure_future(self.commit())
            self._background_commit.add_done_callback(_log_failure)

    async def _hand_over_or_abandon(self, handover: Awaitable[Any]) -> bool:
        """Race ``handover`` against a suspended flow or a stop; False when it lost (dropped)."""
        results = await self.wait_first(handover, self.suspend_flow.wait())
        return handover in results.done

    async def _drain_messages(self, fetcher: ServiceT) -> None:
        callback = self.callback
        read_offset = self._read_offset
        suspended = self.suspend_flow.is_set
        consumer_stopped = cast(Service, self)._stopped.is_set
        fetcher_stopped = cast(Service, fetcher)._stopped.is_set
        acks_enabled_for = self.app.topics.acks_enabled_for
        commit_every = self._commit_every
        hold = self._lean.hold_messages
        since_yield = 0
        try:
            while not (consumer_stopped() or fetcher_stopped()):
                self.diag.set_flag(CONSUMER_FETCHING)
                records = self.getmany(timeout=1.0)
                await asyncio.sleep(0)  # getmany may return at once, again and again
                if self.should_stop:
                    continue
                # The channels the conductor delivers to (they change only on a rebalance,
                # which suspends the flow and ends this round).
                buffers = [channel.queue for channel in self.app.topics]
                async for tp, message in records:
                    if suspended() or consumer_stopped():
                        break  # rebalancing or stopping: Faust seeks back afterwards
                    since_yield += 1
                    if since_yield >= YIELD_EVERY:
                        since_yield = 0
                        await asyncio.sleep(0)
                    offset = message.offset
                    last = read_offset[tp]
                    if last is not None and offset < last:
                        continue  # read before this seek: Faust drops it too
                    if last and offset - last > 1 and acks_enabled_for(message.topic):
                        # Offsets skipped by the broker (control records, compaction) are
                        # marked acked, or the commit would stop at them forever.
                        await self._add_gap(tp, last + 1, offset)
                    if commit_every is not None and self._n_acked >= commit_every:
                        self._n_acked = 0
                        self._start_commit()
                    if hold:
                        message.incref()  # released by the worker once processed
                    if not any_full(buffers):
                        await callback(message)
                    elif not await self._hand_over_or_abandon(callback(message)):
                        break  # suspended or stopping while the buffer was full
                    read_offset[tp] = offset
                self.diag.unset_flag(CONSUMER_FETCHING)
        except self.consumer_stopped_errors:
            if not self.transport.app.should_stop:
                raise
        except asyncio.CancelledError:
            if not self.transport.app.should_stop:
                raise
        finally:
            self.diag.unset_flag(CONSUMER_FETCHING)
            if self._background_commit is not None and not self._background_commit.done():
                self._background_commit.cancel()


def _log_failure(task: asyncio.Future[bool]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("background offset commit failed: %s", describe(task.exception()))


class LeanTransport(faust_aiokafka.Transport):
    """Faust's aiokafka transport with :class:`LeanConsumer` as its consumer."""

    Consumer = LeanConsumer

    def __init__(
        self,
        *args: Any,
        progress: Progress,
        commit_deadline_s: float,
        hold_messages: bool,
        fetch_max_wait_ms: int = 1500,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.fetch_max_wait_ms = fetch_max_wait_ms
        """Longest a fetch request waits at a broker for data, in ms (see use_lean_consumer)."""
        self.progress = progress
        """Where the consumer records its commits' outcomes (read by the watchdog)."""
        self.commit_deadline_s = commit_deadline_s
        """Seconds after which a commit is abandoned."""
        self.hold_messages = hold_messages
        """Hand each message over with one more reference, released by the worker."""


def use_lean_consumer(
    app: faust.App,
    *,
    progress: Progress | None = None,
    commit_deadline_s: float = 30.0,
    hold_messages: bool = False,
    fetch_max_wait_ms: int = 1500,
) -> None:
    """Make ``app`` consume with :class:`LeanConsumer`; call before the app starts.

    Args:
        progress: records commit outcomes (for a watchdog); a private one if ``None``.
        commit_deadline_s: a commit still running after this many seconds is abandoned.
        hold_messages: hold one reference on every message for the agent, which must release
            it (``stream.ack(event)``) once the event is processed; see the module docstring.
        fetch_max_wait_ms: longest a fetch request waits at a broker for data, in ms
            (Faust's own value by default); see the module docstring's "Fetch wait".
    """
    app.transport = LeanTransport(
        app.conf.broker_consumer,
        app,
        progress=progress or Progress(),
        commit_deadline_s=commit_deadline_s,
        hold_messages=hold_messages,
        fetch_max_wait_ms=fetch_max_wait_ms,
    )
