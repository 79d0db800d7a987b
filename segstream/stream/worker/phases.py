"""Wall-clock time per phase of the worker's batches, for ``segstream bench stream``.

A profile (:mod:`benchmarks.profiling`) counts the worker's own CPU; it cannot show what the
worker waits for (Redis, the broker's acknowledgements, more input), and a worker whose rate is
bound by waiting looks idle to it. :class:`PhaseClock` sums, per named phase, the wall-clock
seconds the event loop spent between entering and leaving it: the batch pipeline's waits and
each step of :class:`~segstream.stream.worker.processor.BatchProcessor`.

With the pipeline's overlap (``SEGSTREAM_PIPELINE_DEPTH=2``) a batch's second stage (publish
and acknowledgements, outbox clear) runs while the next batch's first stage does, so phases
overlap in time and their sum can exceed the wall-clock time of the run; each phase's figure is
still the time spent in it. The cost is two ``perf_counter`` calls and a dict update per phase
per batch (not per event).
"""

from __future__ import annotations

import time
from collections.abc import Callable

__all__ = ["PHASES", "PhaseClock"]

PHASES: tuple[str, ...] = (
    "wait for input",
    "fill wait",
    "decode + validate",
    "redis prepare",
    "redis apply",
    "assign",
    "redis settle",
    "wait previous batch",
    "publish + acks",
    "redis clear",
    "ack",
)
"""Every phase, in a batch's order (the order the bench prints them in).

- *wait for input*: the pipeline idle, no record queued;
- *fill wait*: a batch started and waiting for more records (``SEGSTREAM_BATCH_TIMEOUT_S``, or
  the catch-up wait when behind);
- *decode + validate*: the source's parse (decoding, validation, dead letters' shape);
- *redis prepare*: the source's own Redis step before apply (change data capture; none for
  the JSON topics) and after it;
- *redis apply*, *assign*, *redis settle*: the first stage's round trips and the model;
- *wait previous batch*: the first stage done, waiting for the previous batch's second stage
  (depth 2 only; what is left of it was not overlapped);
- *publish + acks*: the batch's changes, current segments and dead letters sent and
  acknowledged by the broker;
- *redis clear*: the acknowledged changes removed from the outboxes;
- *ack*: the batch's records acked to the consumer (the commit itself runs in the background).
"""


class PhaseClock:
    """Seconds of wall-clock time per phase, summed over batches (not thread-safe: one loop)."""

    def __init__(self, clock: Callable[[], float] = time.perf_counter) -> None:
        self.clock = clock
        self.seconds: dict[str, float] = {}
        """Phase name -> total seconds spent in it."""
        self.first: float | None = None
        """The :attr:`clock` reading the first phase started at (None: none yet)."""
        self.last: float | None = None
        """The :attr:`clock` reading the last phase ended at."""

    def add(self, phase: str, since: float) -> float:
        """Add the time from ``since`` (a :attr:`clock` reading) to now to ``phase``; returns
        now, so that consecutive phases chain without a second clock reading."""
        now = self.clock()
        self.seconds[phase] = self.seconds.get(phase, 0.0) + (now - since)
        if self.first is None or since < self.first:
            self.first = since
        self.last = now
        return now

    @property
    def span_s(self) -> float:
        """Wall-clock seconds from the first phase's start to the last one's end (0: none)."""
        return 0.0 if self.first is None or self.last is None else self.last - self.first

    def as_dict(self) -> dict[str, float]:
        """The totals in :data:`PHASES` order (seconds, rounded to µs), phases never entered
        left out (another name, if any, after them)."""
        names = [*PHASES, *sorted(set(self.seconds) - set(PHASES))]
        return {name: round(self.seconds[name], 6) for name in names if name in self.seconds}
