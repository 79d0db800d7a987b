"""``segstream bench stream --profile``: where the worker's time goes, grouped by step.

The worker runs with :mod:`cProfile` ready (``python -m benchmarks.profiling --out FILE
--events N``, with the worker's ``SEGSTREAM_*`` environment); :class:`ProfileWindow` starts
the profile when the first batch reaches :class:`~segstream.stream.worker.processor.
BatchProcessor` and ends it after the batch that brings the records processed to ``N``, so
imports, model load, group join, idling and shutdown are not in it. The statistics are then
written to ``FILE`` (pstats format: ``python -m pstats FILE``, or snakeviz/gprof2dot for a
graph). The clock is the thread's CPU time: a wait costs nothing, as it costs no core.
:func:`breakdown` then folds the profile's entries into the steps of a batch (decode,
validation, Redis scripts, assignment, publishing, commit, Faust/asyncio overhead) by the
module and function each entry belongs to.

cProfile sees the thread it was enabled in, the worker's event loop, where every step of
a batch runs; Faust's consumer thread (the broker fetches) is not in the profile.
"""

from __future__ import annotations

import argparse
import cProfile
import sys
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeAlias

__all__ = ["GROUPS", "ProfileWindow", "breakdown", "format_breakdown", "group_of", "main"]

Func: TypeAlias = tuple[str, int, str]
"""A pstats entry's key: (file name, line, function name); builtins have file ``~``."""

Entry: TypeAlias = tuple[int, int, float, float, Mapping[Func, tuple[int, int, float, float]]]
"""A pstats entry: (primitive calls, calls, own seconds, cumulative seconds, callers); each
caller maps to the same four figures for the calls it made."""

GROUPS = (
    "decode",
    "validation",
    "Redis scripts",
    "assignment",
    "publishing",
    "commit",
    "batch bookkeeping",
    "Faust/asyncio overhead",
    "other",
)
"""The steps of :func:`breakdown`, in the order a batch goes through them."""

# (group, path fragments, function names or None for any); the first matching rule wins, so
# the specific functions come before the modules they live in.
_RULES: tuple[tuple[str, tuple[str, ...], frozenset[str] | None], ...] = (
    ("decode", ("stream/domain/events.py",), frozenset({"_decode", "_unique"})),
    ("decode", ("msgspec/", "faust/serializers/", "aiokafka/record/", "aiokafka/protocol/"), None),
    ("decode", ("~",), frozenset({"<method 'decode' of 'msgspec.json.Decoder' objects>"})),
    ("decode", ("stream/sources/debezium.py", "stream/sources/change_capture.py"), None),
    ("validation", ("stream/domain/events.py", "stream/domain/dead_letters.py"), None),
    ("validation", ("stream/domain/partitioning.py",), None),
    (
        "commit",
        ("stream/worker/consumer.py",),
        frozenset(
            {
                "commit",
                "_commit_within_deadline",
                "_start_commit",
                "ack",
                "ack_all",
                "_maybe_commit",
            }
        ),
    ),
    (
        "commit",
        ("faust/transport/consumer.py", "faust/transport/drivers/aiokafka.py"),
        frozenset(
            {
                "commit",
                "_commit",
                "_commit_offsets",
                "_commit_tick",
                "_commit_livelock_detector",
                "ack",
                "_acked_index",
                "_new_offset",
            }
        ),
    ),
    ("commit", ("aiokafka/consumer/group_coordinator.py",), frozenset({"commit_offsets"})),
    ("Redis scripts", ("stream/state/", "stream/clients/redis.py", "/redis/"), None),
    ("assignment", ("stream/worker/assigner.py", "segstream/training/", "/numpy/"), None),
    ("assignment", ("stream/domain/assignment.py", "/sklearn/", "/scipy/"), None),
    ("publishing", ("stream/kafka/publisher.py", "stream/domain/changes.py"), None),
    ("publishing", ("aiokafka/producer/", "aiokafka/partitioner.py"), None),
    ("publishing", ("faust/transport/producer.py",), None),
    ("batch bookkeeping", ("stream/worker/processor.py", "stream/domain/batch.py"), None),
    ("batch bookkeeping", ("stream/worker/batching.py", "stream/domain/user.py"), None),
    ("batch bookkeeping", ("stream/domain/observer.py", "stream/http/metrics.py"), None),
    ("batch bookkeeping", ("/prometheus_client/", "/logging/", "segstream/logs.py"), None),
    ("Faust/asyncio overhead", ("/faust/", "/mode/", "/asyncio/", "/uvloop/", "/aiokafka/"), None),
    ("Faust/asyncio overhead", ("/venusian/", "/yarl/", "/aiohttp/", "/croniter/"), None),
    ("Faust/asyncio overhead", ("stream/worker/",), None),
)


def _normal(path: str) -> str:
    return path.replace("\\", "/")


def group_of(func: Func) -> str | None:
    """The step ``func`` belongs to, or ``None`` for a builtin that no rule names (its time
    is then its callers' step: a socket send belongs to whoever sends)."""
    path, _, name = func
    path = _normal(path)
    for group, fragments, names in _RULES:
        if any(fragment in path for fragment in fragments) and (names is None or name in names):
            return group
    return None if path == "~" else "other"


def breakdown(stats: Mapping[Func, Entry]) -> dict[str, float]:
    """Own seconds per step of :data:`GROUPS` (every step present, 0.0 if none), summing to
    the profile's total own time.

    Each entry's own time goes to its step (:func:`group_of`); a builtin no rule names is
    split among its callers in proportion to the own time each caller's calls took, each
    share going to that caller's step ("other" when the caller is itself such a builtin or
    the entry has no caller).
    """
    totals = dict.fromkeys(GROUPS, 0.0)
    for func, (_, _, own, _, callers) in stats.items():
        group = group_of(func)
        if group is not None:
            totals[group] += own
            continue
        weights = {caller: figures[2] for caller, figures in callers.items()}
        weight = sum(weights.values())
        if weight <= 0.0:
            totals["other"] += own
            continue
        for caller, share in weights.items():
            totals[group_of(caller) or "other"] += own * share / weight
    return totals


def format_breakdown(totals: Mapping[str, float], events: int) -> list[tuple[str, str, str]]:
    """Rows (step, seconds, share and µs per event) of a breakdown, largest first; ``events``
    is the count of events processed while profiling (0: no per-event figure)."""
    whole = sum(totals.values()) or 1.0
    rows = []
    for group, seconds in sorted(totals.items(), key=lambda item: -item[1]):
        per_event = f", {seconds / events * 1e6:.1f} µs/event" if events else ""
        rows.append((group, f"{seconds:.2f} s", f"{seconds / whole:.0%}{per_event}"))
    return rows


class ProfileWindow:
    """Wraps a batch handler: ``start`` before the first batch, ``stop`` once, after the batch
    that brings the records handled to ``events`` (or at :meth:`close` if they never do)."""

    def __init__(self, events: int, start: Callable[[], object], stop: Callable[[], object]):
        self.events = events
        self.handled = 0
        self.state = "waiting"
        """``waiting`` (no batch yet), ``open`` (profiling), ``closed`` (stopped)."""
        self._start = start
        self._stop = stop

    def wrap(
        self, handler: Callable[[Any, Sequence[Any]], Awaitable[None]]
    ) -> Callable[[Any, Sequence[Any]], Awaitable[None]]:
        """``handler`` (a method taking a batch of records), run inside the window."""

        async def handle(owner: Any, records: Sequence[Any]) -> None:
            if self.state == "waiting":
                self.state = "open"
                self._start()
            try:
                await handler(owner, records)
            finally:
                self.handled += len(records)
                if self.state == "open" and self.handled >= self.events:
                    self.close()

        return handle

    def close(self) -> None:
        """Stop, if started and not stopped yet."""
        if self.state == "open":
            self._stop()
        self.state = "closed"


def main(argv: list[str] | None = None) -> int:
    """``python -m benchmarks.profiling --out FILE --events N``: the worker, profiled over
    its first ``N`` records; runs until stopped."""
    parser = argparse.ArgumentParser(prog="benchmarks.profiling")
    parser.add_argument("--out", required=True, type=Path, help="where to write the pstats file")
    parser.add_argument("--events", required=True, type=int, help="records to profile over")
    args = parser.parse_args(argv)

    from segstream.settings import load_settings
    from segstream.stream.service import create_service
    from segstream.stream.worker.processor import BatchProcessor
    from segstream.stream.worker.run import run_worker

    profile = cProfile.Profile(time.thread_time)

    def stop() -> None:
        profile.disable()
        profile.dump_stats(args.out)

    window = ProfileWindow(args.events, profile.enable, stop)
    # The worker takes the bound method when it builds its processor, after this.
    BatchProcessor.process = window.wrap(BatchProcessor.process)  # type: ignore[method-assign]
    try:
        return run_worker(load_settings(), create_service)
    finally:
        window.close()


if __name__ == "__main__":
    sys.exit(main())
