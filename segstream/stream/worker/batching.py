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
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from segstream.errors import SegstreamError
from segstream.stream.clients.retry import describe
from segstream.stream.worker.watchdog import Progress

__all__ = ["BatchPipeline"]

log = logging.getLogger(__name__)


class BatchPipeline:
    """Batches of records, processed one after another by :meth:`run`, acked after."""

    def __init__(
        self,
        process: Callable[[Sequence[Any]], Awaitable[None]],
        ack: Callable[[Sequence[Any]], Any],
        batch_size: int,
        max_pending: int,
        catch_up_age_s: float = 0.1,
        catch_up_wait_s: float = 0.05,
        progress: Progress | None = None,
        fill_s: float = 0.0,
    ) -> None:
        """Process batches with ``process(records)``; ack each batch with ``ack(records)``.

        Records are Faust messages (a ``timestamp`` in Unix seconds is all that is read).

        Args:
            batch_size: most records processed together (queued chunks are merged up to it).
            max_pending: :meth:`put` waits (and :meth:`offer` refuses) while this many
                records are queued or in process.
            catch_up_age_s: a batch whose oldest record is older than this (the worker is
                behind) waits up to ``catch_up_wait_s`` for more records before it is
                processed, so that a backlog is worked off in full batches.
            progress: told when each batch starts and ends (for the progress watchdog).
            fill_s: a batch that is not full (and not behind) waits for more records until
                ``fill_s`` after its first chunk arrived.
        """
        self._process = process
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
        self._in_hand = False
        """A batch is being processed and acked now (from the batch's start to its ack)."""
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

    async def _next_batch(self) -> list[Any]:
        while not self._batches:
            self._arrived.clear()
            await self._arrived.wait()
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
                await asyncio.wait_for(self._arrived.wait(), remaining)
            except TimeoutError:
                break
            if self._merge(batch):
                break
        return batch

    async def run(self) -> None:
        """Process queued batches in order until cancelled or finished (:meth:`finish`); a
        failed batch ends it, unacked."""
        progress = self._progress
        try:
            while not self._finishing:
                batch = await self._next_batch()
                self._in_hand = True
                progress.batch_start()
                await self._process(batch)
                self._ack(batch)
                progress.batch_end()
                self._in_hand = False
                self._pending -= len(batch)
                self._room.set()
        except asyncio.CancelledError:
            progress.batch_end()
            raise
        except BaseException as exc:
            progress.batch_end()
            self._failed = exc
            self._room.set()  # wake a put() waiting for room
            raise

    async def finish(self, task: asyncio.Future[None], timeout_s: float) -> bool:
        """Stop :meth:`run` (running as ``task``) after the batch in hand, if any.

        A batch being processed is finished and acked, within ``timeout_s`` seconds; batches
        queued behind it are not started (never acked, they are redelivered to the
        partitions' next owner). Past ``timeout_s`` the batch in hand is cancelled too, unacked.
        Returns False only then. A task that already ended (a failed batch) returns True.
        """
        self._finishing = True
        if not self._in_hand:
            task.cancel()  # waiting for a batch, or merging one not yet started
        try:
            await asyncio.wait_for(asyncio.shield(task), timeout_s)
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
