"""Batches of input records, processed one after another while the next ones are fetched.

The worker's fetcher (:mod:`~segstream.stream.worker.fetcher`, direct delivery) hands the
input records to :class:`BatchPipeline` in chunks, as they are read: :meth:`BatchPipeline.offer`
when there is room, :meth:`BatchPipeline.put` (which waits) when there is not. One task
processes the queued records strictly in order, merging the chunks that queued up meanwhile
(up to ``batch_size`` records), so batches are short when the load is light and full when it
is heavy. A batch that is not full waits up to ``fill_s`` from its first chunk's arrival for
more (``SEGSTREAM_BATCH_TIMEOUT_S``); when the worker is behind (a batch's oldest record is
more than ``catch_up_age_s`` old), it waits up to ``catch_up_wait_s`` instead: a steady load
just above what small batches can sustain would otherwise keep batches small, and the worker
behind, for good.

Acknowledgement stays where it must be: ``ack(batch)`` (the consumer's ``ack_all``) is called
once per batch, only after :meth:`run`'s ``process`` returned, i.e. after the batch's outputs
were acknowledged by the broker; Faust commits an offset only when every record before it is
acked. A batch that fails is never acked: it is redelivered to the partition's next owner.

**Overlap** (``depth`` 2, ``SEGSTREAM_PIPELINE_DEPTH``). A batch has two stages
(:class:`Stages`; the worker's are :meth:`BatchProcessor.prepare
<segstream.stream.worker.processor.BatchProcessor.prepare>`: parse, Redis apply, assign, Redis
settle; and :meth:`~segstream.stream.worker.processor.BatchProcessor.complete`: publish, wait
for the broker's acknowledgements, clear the outboxes). Batch N+1's first stage runs while
batch N's second stage waits for the broker; stages of one kind never overlap each other. The
rules, and why each guarantee holds:

- **First stages in order, one at a time**, and batch N+1's starts only once batch N-1's
  second stage is done: at most two batches are in hand. Every Redis write of a user (apply,
  settle) therefore happens in batch order, as without overlap: the state, the fences and the
  compare-and-set of settle see exactly what they saw before, so the assignments, and parity
  with the batch pipeline, are unchanged. The outbox clear of batch N (an ``LREM`` of the
  exact bytes sent) may now run between batch N+1's apply and settle: it touches no field that
  apply, settle or their compare-and-set read.
- **Second stages in order, one at a time**: batch N+1's sends start only after batch N's were
  all acknowledged, so every change of a user reaches each output topic in batch order, even
  when a broker error makes the sender re-send (it re-sends within one call only).
- **No duplicate from the overlap**: batch N+1's settle may read back batch N's changes before
  batch N's clear removed them; batch N+1's second stage leaves out exactly the changes batch
  N's second stage sent (by bytes, which hold the event_id), so nothing is sent twice that a
  crash did not cause. Older changes cannot be among them: batch N-1's clear was done before
  batch N+1's first stage started.
- **Acks (hence commits) in order, after both stages**: a batch is acked when its second
  stage has returned, and second stages end in batch order. Faust commits an offset only when
  every record before it is acked, and the commit runs in the background of the next batches
  (:class:`~segstream.stream.worker.consumer.LeanConsumer`).
- **Crashes**: nothing new is acked early, so a crash anywhere leaves both batches in hand
  unacked; they are redelivered, their events are fenced, and their queued changes are found
  in the outboxes and sent again with their event_ids (docs/scaling.md, "Durability"), as a
  crash between settle and clear already did.
- **Failures**: a failed stage fails the pipeline (nothing more is acked; the worker stops and
  the batches in hand are redelivered). When batch N+1's first stage fails, batch N's second
  stage is still awaited, and acked if it succeeds.
- **Rebalances and stops**: :meth:`finish` finishes both batches in hand (and acks them), as
  it finished the one batch before; a revocation waits for their acks (``wait_empty``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

from segstream.errors import SegstreamError
from segstream.stream.clients.retry import describe
from segstream.stream.worker.phases import PhaseClock
from segstream.stream.worker.watchdog import Progress

__all__ = ["BatchPipeline", "Stages"]

log = logging.getLogger(__name__)


class Stages(Protocol):
    """A batch's two stages (the module docstring's overlap)."""

    async def prepare(self, records: Sequence[Any], previous: Awaitable[None] | None) -> Any:
        """The first stage; ``previous`` is the previous batch's second stage if it may still
        run (to be awaited, never cancelled, by a stage that must come after it)."""

    async def complete(self, prepared: Any) -> None:
        """The second stage of the batch whose first stage returned ``prepared``."""


class _OneStage:
    """A single ``process(records)`` as :class:`Stages` (all of it in the first stage)."""

    def __init__(self, process: Callable[[Sequence[Any]], Awaitable[None]]) -> None:
        self.process = process

    async def prepare(self, records: Sequence[Any], previous: Awaitable[None] | None) -> Any:
        if previous is not None:
            await asyncio.shield(previous)  # one stage: nothing of it may overlap
        await self.process(records)

    async def complete(self, prepared: Any) -> None:
        return None


class BatchPipeline:
    """Batches of records, processed one after another by :meth:`run`, acked after."""

    def __init__(
        self,
        process: Callable[[Sequence[Any]], Awaitable[None]] | Stages,
        ack: Callable[[Sequence[Any]], Any],
        batch_size: int,
        max_pending: int,
        catch_up_age_s: float = 0.1,
        catch_up_wait_s: float = 0.05,
        progress: Progress | None = None,
        fill_s: float = 0.0,
        *,
        depth: int = 1,
        phases: PhaseClock | None = None,
    ) -> None:
        """Process batches with ``process``; ack each batch with ``ack(records)``.

        Records are Faust messages (a ``timestamp`` in Unix seconds is all that is read).

        Args:
            process: the batch's :class:`Stages`, or one coroutine function
                ``process(records)`` doing all of it (nothing then overlaps).
            batch_size: most records processed together (queued chunks are merged up to it).
            max_pending: :meth:`put` waits (and :meth:`offer` refuses) while this many
                records are queued or in process.
            catch_up_age_s: a batch whose oldest record is older than this (the worker is
                behind) waits up to ``catch_up_wait_s`` for more records before it is
                processed, so that a backlog is worked off in full batches.
            progress: told when each batch starts and ends (for the progress watchdog).
            fill_s: a batch that is not full (and not behind) waits for more records until
                ``fill_s`` after its first chunk arrived.
            depth: batches in hand at once: 1, one after the other; 2, a batch's first stage
                overlaps the previous batch's second (the module docstring).
            phases: where the waits for input and the acks are timed (wall clock).
        """
        if depth not in (1, 2):
            raise ValueError(f"pipeline depth must be 1 or 2, not {depth}")
        self._stages: Stages = _OneStage(process) if callable(process) else process
        self.depth = depth
        self.phases = phases or PhaseClock()
        self._ack = ack
        self.catch_up_age_s = catch_up_age_s
        self.catch_up_wait_s = catch_up_wait_s
        self.fill_s = fill_s
        self.batch_size = batch_size
        self.max_pending = max_pending
        self._batches: deque[tuple[float, list[Any]]] = deque()
        """Chunks queued, each with its arrival (``time.monotonic``)."""
        self._arrived = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        self._pending = 0
        self._failed: BaseException | None = None
        self._progress = progress or Progress()
        self._preparing = False
        """A batch's first stage runs now (from the batch's start to its second stage)."""
        self._starts: deque[float] = deque()
        """Progress-clock start of each batch in hand, oldest first."""
        self._tail_failed: BaseException | None = None
        """The failure of a second stage that ran in the background."""
        self._finishing = False

    @property
    def pending(self) -> int:
        """Records handed over and not yet acked."""
        return self._pending

    def offer(self, records: list[Any]) -> bool:
        """Queue ``records`` (kept as given) if fewer than ``max_pending`` are pending; else
        False. Nothing is accepted once the processing task has failed."""
        if self._pending >= self.max_pending or self._failed is not None:
            return False
        self._pending += len(records)
        self._batches.append((time.monotonic(), records))
        self._arrived.set()
        return True

    async def put(self, records: list[Any]) -> None:
        """Queue ``records`` (kept as given); waits while too much is pending. Cancelled
        while waiting, it has queued nothing.

        Raises:
            SegstreamError: the processing task has failed (nothing more is accepted).
        """
        while not self.offer(records):
            if self._failed is not None:
                raise SegstreamError(f"batch processing failed: {describe(self._failed)}")
            self._room.clear()
            await self._room.wait()

    def _merge(self, batch: list[Any]) -> bool:
        """Append queued chunks that fit; True when the next one does not fit."""
        while self._batches and len(batch) + len(self._batches[0][1]) <= self.batch_size:
            batch += self._batches.popleft()[1]
        return bool(self._batches)

    def _behind(self, batch: list[Any]) -> bool:
        """The batch's oldest record is older than ``catch_up_age_s`` (by its Kafka timestamp)."""
        oldest_s: float = batch[0].timestamp  # Unix seconds
        return time.time() - oldest_s > self.catch_up_age_s

    def _check_tail(self) -> None:
        """Raise the failure of a second stage running in the background, if any."""
        if self._tail_failed is not None:
            raise self._tail_failed

    async def _next_batch(self) -> list[Any]:
        """The next batch (module docstring); raises a background second stage's failure."""
        clock = self.phases
        since = clock.clock()
        while not self._batches:
            self._check_tail()
            self._arrived.clear()
            await self._arrived.wait()
        self._check_tail()
        since = clock.add("wait for input", since)
        arrived, batch = self._batches.popleft()
        if len(batch) > self.batch_size:  # a chunk larger than a batch: the rest goes next
            self._batches.appendleft((arrived, batch[self.batch_size :]))
            return batch[: self.batch_size]
        batch = list(batch)  # the chunk as handed over stays as it was
        full = self._merge(batch)
        if full or len(batch) >= self.batch_size:
            return batch
        if self._behind(batch):
            # Behind: latency is lost already, so let the fetcher fill a fuller batch (the
            # wait hands it the CPU) rather than pay a batch's fixed costs for a few records.
            deadline = time.monotonic() + self.catch_up_wait_s
        else:
            deadline = arrived + self.fill_s
        while len(batch) < self.batch_size:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            self._arrived.clear()
            try:
                async with asyncio.timeout(remaining):
                    await self._arrived.wait()
            except TimeoutError:
                break
            self._check_tail()
            if self._merge(batch):
                break
        clock.add("fill wait", since)
        return batch

    def _note_progress(self) -> None:
        """Tell the watchdog when the oldest batch in hand started (None: none in hand)."""
        self._progress.batch_started = self._starts[0] if self._starts else None

    async def _second(self, batch: list[Any], prepared: Any) -> None:
        """The batch's second stage, then its ack; a failure wakes :meth:`run` to raise it."""
        try:
            await self._stages.complete(prepared)
        except BaseException as exc:
            self._tail_failed = exc
            self._arrived.set()
            raise
        since = self.phases.clock()
        self._ack(batch)
        self.phases.add("ack", since)
        self._starts.popleft()
        self._note_progress()
        self._pending -= len(batch)
        self._room.set()

    async def run(self) -> None:
        """Process queued batches in order until cancelled or finished (:meth:`finish`); a
        failed batch ends it, unacked (with the batch before it acked if its second stage
        succeeded)."""
        tail: asyncio.Future[None] | None = None
        """The previous batch's second stage (and ack), while it may run."""
        try:
            while not self._finishing:
                batch = await self._next_batch()
                self._preparing = True
                self._starts.append(self._progress.clock())
                self._note_progress()
                prepared = await self._stages.prepare(batch, tail)
                if tail is not None:
                    # Second stages in order: this batch's starts when the previous one's ended.
                    since = self.phases.clock()
                    await asyncio.shield(tail)
                    self.phases.add("wait previous batch", since)
                tail = asyncio.ensure_future(self._second(batch, prepared))
                self._preparing = False
                if self.depth == 1:
                    await asyncio.shield(tail)
            if tail is not None:
                await asyncio.shield(tail)
        except asyncio.CancelledError:
            if self._preparing and tail is not None:
                # Cancelled in a first stage: only finish()'s bound does that; stop it all.
                tail.cancel()
            self._preparing = False
            await self._finish_tail(tail)
            self._starts.clear()
            self._note_progress()
            raise
        except BaseException as exc:
            self._preparing = False
            if tail is not None:
                # The batch before the failed one may still complete and be acked (gather
                # also retrieves its own failure, raised here already when it is the cause).
                await asyncio.gather(tail, return_exceptions=True)
            self._starts.clear()
            self._note_progress()
            self._failed = exc
            self._room.set()  # wake a put() waiting for room
            raise

    async def _finish_tail(self, tail: asyncio.Future[None] | None) -> None:
        """On cancellation: let a second stage in hand finish (and ack) unless this task is
        cancelled again (:meth:`finish`'s bound), in which case it is cancelled too, unacked."""
        if tail is None:
            return
        try:
            await asyncio.wait({tail})  # waits without raising the stage's own failure
        except asyncio.CancelledError:
            tail.cancel()
            await asyncio.gather(tail, return_exceptions=True)
            raise
        if not tail.cancelled() and (failure := tail.exception()) is not None:
            log.warning(
                "the batch in hand failed while the pipeline stopped; it is not acked: %s",
                describe(failure),
            )

    async def finish(self, task: asyncio.Future[None], timeout_s: float) -> bool:
        """Stop :meth:`run` (running as ``task``) after the batch in hand, if any.

        A batch being processed is finished and acked, within ``timeout_s`` seconds; batches
        queued behind it are not started (never acked, they are redelivered to the
        partitions' next owner). Past ``timeout_s`` the batch in hand is cancelled too, unacked.
        Returns False only then. A task that already ended (a failed batch) returns True.
        """
        self._finishing = True
        if not self._preparing:
            # Waiting for a batch, or merging one not yet started; a second stage in hand is
            # finished and acked on the way out (run's cancellation).
            task.cancel()
        try:
            async with asyncio.timeout(timeout_s):
                await asyncio.shield(task)
        except TimeoutError:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            return False
        except (asyncio.CancelledError, Exception):
            # The task was cancelled above or failed (already reported by its owner); if
            # this coroutine itself is being cancelled, the task must not outlive it.
            if not task.done():
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
                raise
        return True
