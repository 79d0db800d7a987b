"""How many worker processes ``segstream worker`` runs: the rule, as a pure function.

One worker process uses one core (the event loop runs every batch's Python work); Kafka's
consumer group spreads the input partitions over the processes. A process beyond the
partition count would own none, so the default is the usable cores capped by the
partitions, and an explicit count above them is honoured with a warning (a process waiting
idle takes over at once when another one dies).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

__all__ = ["ProcessCount", "choose_processes", "cpu_quota_cores", "usable_cores"]


@dataclass(frozen=True, slots=True)
class ProcessCount:
    """The number of worker processes to run, and the sentence saying why (for the log)."""

    n: int
    reason: str
    idle: int = 0
    """Processes that will own no input partition (an explicit count above the partitions)."""


CGROUP_V2_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")
"""cgroup v2's CPU quota of this process's group: ``<quota µs|max> <period µs>``."""
CGROUP_V1_CPU = Path("/sys/fs/cgroup/cpu")
"""cgroup v1's CPU controller: ``cpu.cfs_quota_us`` (-1: none) and ``cpu.cfs_period_us``."""


def cpu_quota_cores(quota: str, period: str) -> int | None:
    """Whole cores a CFS quota of ``quota`` µs per ``period`` µs allows (rounded up, at least
    1); None for no quota (``max``, ``-1``) or text that is not a quota."""
    quota, period = quota.strip(), period.strip()
    if not (quota.isdigit() and period.isdigit()) or int(period) == 0 or int(quota) == 0:
        return None
    return max(1, math.ceil(int(quota) / int(period)))


def _cgroup_cores() -> int | None:
    """The CPU quota of this process's cgroup in cores (a container's CPU limit), if any."""
    try:
        quota, _, period = CGROUP_V2_CPU_MAX.read_text().partition(" ")
        return cpu_quota_cores(quota, period)
    except OSError:
        pass
    try:
        return cpu_quota_cores(
            (CGROUP_V1_CPU / "cpu.cfs_quota_us").read_text(),
            (CGROUP_V1_CPU / "cpu.cfs_period_us").read_text(),
        )
    except OSError:
        return None


def usable_cores() -> int:
    """The CPUs this process may run on: its affinity mask (which ``taskset`` and a
    container's CPU set narrow), capped by its cgroup's CPU quota (a container's CPU limit,
    which the mask does not show); not the machine's count. At least 1."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux: no affinity mask to read
        cores = os.cpu_count() or 1
    quota = _cgroup_cores()
    return max(1, min(cores, quota) if quota is not None else cores)


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
