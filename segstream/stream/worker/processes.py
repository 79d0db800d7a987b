"""How many worker processes ``segstream worker`` runs: the rule, as a pure function.

One worker process uses one core (the event loop runs every batch's Python work); Kafka's
consumer group spreads the input partitions over the processes. A process beyond the
partition count would own none, so the default is the usable cores capped by the
partitions, and an explicit count above them is honoured with a warning (a process waiting
idle takes over at once when another one dies).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

__all__ = ["ProcessCount", "choose_processes", "usable_cores"]


@dataclass(frozen=True, slots=True)
class ProcessCount:
    """The number of worker processes to run, and the sentence saying why (for the log)."""

    n: int
    reason: str
    idle: int = 0
    """Processes that will own no input partition (an explicit count above the partitions)."""


def usable_cores() -> int:
    """The CPUs this process may run on (its affinity mask, which containers and ``taskset``
    narrow), not the machine's count; at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux: no affinity mask to read
        return max(1, os.cpu_count() or 1)


def choose_processes(requested: int | None, cores: int, partitions: int) -> ProcessCount:
    """The worker processes for ``requested`` (``--processes`` or
    ``SEGSTREAM_WORKER_PROCESSES``; None: unset), ``cores`` usable CPUs and ``partitions``
    partitions per input topic (the topics are co-partitioned, so that is what the group
    divides).

    Unset: ``min(cores, partitions)``, at least 1. Given: exactly that many; those beyond the
    partitions are counted in :attr:`ProcessCount.idle`.
    """
    if cores < 1 or partitions < 1:
        raise ValueError(f"cores ({cores}) and partitions ({partitions}) must be positive")
    if requested is not None:
        if requested < 1:
            raise ValueError(f"requested processes must be positive, got {requested}")
        idle = max(0, requested - partitions)
        why = f"{requested} worker process(es) as asked (--processes/SEGSTREAM_WORKER_PROCESSES)"
        if idle:
            why += (
                f"; the input topics have {partitions} partition(s), so {idle} of them will "
                "own none and wait as stand-bys (raise SEGSTREAM_TOPIC_PARTITIONS for new "
                "topics, or add partitions to the existing ones)"
            )
        return ProcessCount(requested, why, idle)
    n = min(cores, partitions)
    if cores <= partitions:
        why = f"one per usable core ({cores}; the input topics have {partitions} partition(s))"
    else:
        why = (
            f"one per input partition ({partitions}), fewer than the {cores} usable cores: a "
            "process beyond the partitions would own none"
        )
    return ProcessCount(n, f"{n} worker process(es): {why}; set --processes or "
                        "SEGSTREAM_WORKER_PROCESSES to choose", 0)  # fmt: skip
