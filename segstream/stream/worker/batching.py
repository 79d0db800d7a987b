"""Taking batches from a Faust stream while the previous batch is still being processed.

With ``stream.take_events`` alone the worker alternates: Faust fills a batch (up to
``batch_size`` events, at most ``batch_timeout_s``), then the batch is processed, and only
then does Faust start filling the next one, because ``take_events`` holds new events back
while its caller works. Latency is then window + the previous batch's processing + this one's,
and a short window means small batches under load, each paying its round trips.

:class:`BatchPipeline` lets both happen at once. The agent hands each batch to
:meth:`BatchPipeline.put` and goes straight back to ``take_events``; one task processes the
batches strictly in order, merging those that queued up meanwhile (up to ``batch_size``
events), so batches are short when the load is light and full when it is heavy. When the
worker is behind (a batch's oldest event is more than ``catch_up_age_s`` old), it also waits a
little for more events before processing: a steady load just above what small batches can
sustain would otherwise keep batches small, and the worker behind, for good.

Acknowledgement stays where it must be: ``take_events`` acks a batch as soon as its caller
moves on, so every message carries one more reference, taken by the worker's consumer when it
hands the message over (``use_lean_consumer(hold_messages=True)``; Faust acks a message when
its reference count drops to zero, as for a message read by two streams). The processing
task releases that reference with ``stream.ack`` only after the batch's outputs were
acknowledged by the broker; Faust commits an offset only when every message before it is
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
    """Batches of Faust events, processed one after another by :meth:`run`, acked after."""

    def __init__(
        self,
        process: Callable[[Sequence[Any]], Awaitable[None]],
        ack: Callable[[Any], Awaitable[Any]],
        batch_size: int,
        max_pending: int,
        catch_up_age_s: float = 0.1,
        catch_up_wait_s: float = 0.05,
        progress: Progress | None = None,
    ) -> None:
        """Process batches with ``process(messages)``; ack each event with ``ack(event)``.

        Args:
            batch_size: most events processed together (queued batches are merged up to it).
            max_pending: :meth:`put` waits while this many events are queued or in process.
            catch_up_age_s: a batch whose oldest event is older than this (the worker is
                behind) waits up to ``catch_up_wait_s`` for more events before it is
                processed, so that a backlog is worked off in full batches.
            progress: told when each batch starts and ends (for the progress watchdog).
        """
        self._process = process
        self._ack = ack
        self.catch_up_age_s = catch_up_age_s
        self.catch_up_wait_s = catch_up_wait_s
        self.batch_size = batch_size
        self.max_pending = max_pending
        self._batches: deque[list[Any]] = deque()
        self._arrived = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        self._pending = 0
        self._failed: BaseException | None = None
        self._progress = progress or Progress()
        self._in_hand = False
        """A batch is being processed and acked now (from the batch's start to its last ack)."""
        self._finishing = False

    @property
    def pending(self) -> int:
        """Events handed over and not yet acked."""
        return self._pending

    async def put(self, events: Sequence[Any]) -> None:
        """Queue a batch taken from the stream; waits while too much is pending.

        Each event's message must hold a reference for the pipeline (the consumer takes it),
        released by ``ack`` once processed.

        Raises:
            SegstreamError: the processing task has failed (nothing more is accepted).
        """
        while self._pending >= self.max_pending and self._failed is None:
            self._room.clear()
            await self._room.wait()
        if self._failed is not None:
            raise SegstreamError(f"batch processing failed: {describe(self._failed)}")
        self._pending += len(events)
        self._batches.append(list(events))
        self._arrived.set()

    def _merge(self, batch: list[Any]) -> bool:
        """Append queued batches that fit; True when the next one does not fit."""
        while self._batches and len(batch) + len(self._batches[0]) <= self.batch_size:
            batch += self._batches.popleft()
        return bool(self._batches)

    def _behind(self, batch: list[Any]) -> bool:
        """The batch's oldest event is older than ``catch_up_age_s`` (by its Kafka timestamp)."""
        oldest_s: float = batch[0].message.timestamp  # Unix seconds
        return time.time() - oldest_s > self.catch_up_age_s

    async def _next_batch(self) -> list[Any]:
        while not self._batches:
            self._arrived.clear()
            await self._arrived.wait()
        batch = self._batches.popleft()
        full = self._merge(batch)
        if full or len(batch) >= self.batch_size or not self._behind(batch):
            return batch
        # Behind: latency is lost already, so let Faust fill a fuller batch (the wait hands
        # it the CPU) rather than pay a batch's fixed costs for a few events.
        deadline = time.monotonic() + self.catch_up_wait_s
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
                await self._process([event.message for event in batch])
                for event in batch:
                    await self._ack(event)
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
