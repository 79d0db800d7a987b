"""The status page's Delivery section: each webhook destination's consumer group, from Kafka.

``segstream deliver`` consumes ``segment-changes`` in one consumer group per destination
(docs/delivery.md), so Kafka itself knows, per destination, how many changes are not yet
acknowledged (the group's backlog), how old the oldest of them is, and whether any deliver
process is in the group. :class:`DeliveryWatch` reads those figures in the background, every
``interval_s``, with one :class:`~segstream.stream.kafka.lag.LagReader` for all the groups
(the way the page reads the worker's lag): a request only formats the last figures and never
waits for Kafka. The figures are right while no deliver process runs, which is when an
operator needs them.

Dead letters waiting: the delivery dead-letter topic's records after the offsets
``segstream deliver --redrive`` committed (its group), counted from offsets. Per destination,
each letter is read once (its destination only is decoded) and remembered as runs of
consecutive offsets of one destination (:class:`LetterTally`; letters come a batch at a time,
so a run is typically a batch), forgotten as ``--redrive`` commits past them. At most
:data:`LETTERS_PER_REFRESH` letters are read per refresh, so a flood of letters costs the
worker's loop a bounded share; until the reading has caught up, the per-destination figures
are lower bounds (``complete`` false).

The formatting (:func:`backlog_growth`, :func:`destination_warnings`, :func:`destination_doc`)
is pure and unit-tested.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from segstream.errors import ServiceError, describe
from segstream.settings import Settings
from segstream.stream.clients.kafka import consumer as kafka_consumer
from segstream.stream.clients.retry import KAFKA_TRANSIENT, backoff_delays
from segstream.stream.kafka.lag import LagReader, LagSnapshot

__all__ = [
    "BEHIND_WARN_S",
    "GROWTH_WINDOW_S",
    "LETTERS_PER_REFRESH",
    "DeliveryGroups",
    "DeliveryWatch",
    "LetterTally",
    "backlog_growth",
    "destination_doc",
    "destination_warnings",
]

log = logging.getLogger(__name__)

_READ_ERRORS: tuple[type[BaseException], ...] = (ServiceError, *KAFKA_TRANSIENT)

BEHIND_WARN_S = 10.0
"""A destination is flagged once its oldest undelivered change is this old, in seconds (as the
page flags a worker partition): a few changes in flight between two POSTs is normal flow."""
GROWTH_WINDOW_S = 10.0
"""Window over which a destination's backlog growth is measured, in seconds."""


LETTERS_PER_REFRESH = 2_000
"""Most dead letters read per refresh (each decoded for its destination only)."""


class LetterTally:
    """Dead letters waiting per destination, each letter counted once: per partition, runs
    ``[first offset, end offset, destination]`` of consecutive letters of one destination."""

    def __init__(self) -> None:
        self._runs: dict[int, deque[list[Any]]] = {}
        self.next: dict[int, int] = {}
        """Per partition, the next offset to read."""

    def add(self, partition: int, offset: int, destination: str) -> None:
        """Count the letter at ``offset`` (offsets of a partition given in increasing order)."""
        runs = self._runs.setdefault(partition, deque())
        if runs and runs[-1][2] == destination and runs[-1][1] == offset:
            runs[-1][1] = offset + 1
        else:
            runs.append([offset, offset + 1, destination])
        self.next[partition] = offset + 1

    def trim(self, partition: int, resume: int) -> int:
        """Forget the letters below ``resume`` (redriven, or deleted by retention); returns
        the next offset to read of the partition."""
        runs = self._runs.get(partition)
        while runs and runs[0][1] <= resume:
            runs.popleft()
        if runs and runs[0][0] < resume:
            runs[0][0] = resume
        self.next[partition] = max(self.next.get(partition, resume), resume)
        return self.next[partition]

    def counts(self) -> dict[str, int]:
        """Letters counted per destination."""
        totals: dict[str, int] = {}
        for runs in self._runs.values():
            for first, end, destination in runs:
                totals[destination] = totals.get(destination, 0) + end - first
        return totals


@dataclass(frozen=True)
class DeliveryGroups:
    """What the page watches of ``segstream deliver``, built where the delivery config is read
    (:mod:`segstream.stream.service`)."""

    config: str
    """The config file (``SEGSTREAM_DELIVERY_CONFIG``), as shown to the operator."""
    destinations: tuple[tuple[str, str], ...]
    """``(destination, consumer group)`` in the config's order."""
    dead_letter_topic: str
    """``SEGSTREAM_TOPIC_DELIVERY_DEAD_LETTERS``."""
    redrive_group: str
    """The consumer group of ``segstream deliver --redrive``."""
    destination_of: Callable[[bytes | None], str | None] | None = None
    """The destination a dead letter's value names (``None``: not a letter); ``None``: dead
    letters are not counted per destination."""
    error: str | None = None
    """Why the config could not be read (then ``destinations`` is empty)."""


def backlog_growth(
    history: Sequence[tuple[float, int]], window_s: float = GROWTH_WINDOW_S
) -> int | None:
    """How much the backlog grew over the last ``window_s`` seconds, from ``(taken_at, backlog)``
    samples, oldest first: the newest minus the oldest sample at most ``window_s`` older.

    ``None`` while the samples span less than half the window (too early to tell); negative
    when the backlog shrank.
    """
    if not history:
        return None
    newest_at, newest = history[-1]
    oldest_at, oldest = next((h for h in history if newest_at - h[0] <= window_s), history[-1])
    if newest_at - oldest_at < window_s / 2:
        return None
    return newest - oldest


def destination_warnings(
    group: str,
    *,
    members: int | None,
    backlog: int | None,
    seconds_behind: float | None,
    growth: int | None,
    dead_letters: int | None = None,
    behind_warn_s: float = BEHIND_WARN_S,
) -> list[str]:
    """Why a destination needs an operator's look, one sentence each; empty when it is fine.

    - ``members == 0``: no deliver process is in its group, so nothing is delivered to it;
    - a backlog whose oldest change is at least ``behind_warn_s`` old (or of unknown age):
      the destination is down, slow or rate-limited, said with the growth when it grows;
    - dead letters waiting: changes the destination never received until a redrive.

    ``None`` figures (not read yet) raise no warning of their own.
    """
    warnings = []
    if members == 0:
        warnings.append(
            f"no deliver process in group {group}: start `segstream deliver` with this "
            "destination in SEGSTREAM_DELIVERY_CONFIG"
        )
    if backlog and (seconds_behind is None or seconds_behind >= behind_warn_s):
        age = (
            "of unknown age" if seconds_behind is None else f"the oldest {seconds_behind:.0f} s old"
        )
        trend = f", growing (+{growth} in {GROWTH_WINDOW_S:.0f} s)" if growth and growth > 0 else ""
        warnings.append(
            f"{backlog} changes not delivered, {age}{trend}: the destination is down, slow "
            "or rate-limited (the deliver process logs its answers; "
            "segstream_delivery_retries_total)"
        )
    if dead_letters:
        warnings.append(
            f"{dead_letters} dead letters not received by the destination: fix the cause, "
            "then `segstream deliver --redrive`"
        )
    return warnings


def destination_doc(
    name: str,
    group: str,
    *,
    snapshot: LagSnapshot | None,
    members: int | None,
    growth: int | None,
    error: str | None,
    dead_letters: int | None = None,
) -> dict[str, Any]:
    """One destination's entry of ``/status.json``'s ``delivery.destinations``.

    ``backlog`` is in changes (``segment-changes`` records not acknowledged by the
    destination's group), ``seconds_behind`` the age of the oldest of them, ``growth`` the
    backlog's change over :data:`GROWTH_WINDOW_S`; all ``None`` until first read. ``state`` is
    ``"ok"``, ``"warning"`` (``warnings`` says why) or ``"unknown"`` (not read: ``error``).
    ``dead_letters``: its letters waiting for a redrive (``None``: not counted).
    """
    backlog = None if snapshot is None else snapshot.total_lag
    behind = None if snapshot is None else snapshot.max_seconds_behind
    warnings = destination_warnings(
        group,
        members=members,
        backlog=backlog,
        seconds_behind=behind,
        growth=growth,
        dead_letters=dead_letters,
    )
    state = "warning" if warnings else ("unknown" if snapshot is None else "ok")
    return {
        "name": name,
        "group": group,
        "members": members,
        "backlog": backlog,
        "seconds_behind": behind,
        "growth": growth,
        "dead_letters": dead_letters,
        "taken_at": None if snapshot is None else snapshot.taken_at,
        "partitions": [] if snapshot is None else [
            {"partition": p.partition, "committed": p.committed, "end": p.end, "lag": p.lag}
            for p in snapshot.partitions
        ],
        "state": state,
        "warnings": warnings,
        "error": error,
    }  # fmt: skip


class DeliveryWatch:
    """Reads every delivery group's figures in the background; see the module docstring."""

    def __init__(self, settings: Settings, groups: DeliveryGroups, interval_s: float = 2.0):
        self.settings = settings
        self.groups = groups
        self.interval_s = interval_s
        first = groups.destinations[0][1] if groups.destinations else groups.redrive_group
        self.reader = LagReader(settings, first, [settings.topic_segment_changes])
        self._started = False
        self.error: str | None = groups.error or "not read yet"
        self._snapshots: dict[str, LagSnapshot] = {}
        self._members: dict[str, int] = {}
        self._history: dict[str, deque[tuple[float, int]]] = {
            name: deque(maxlen=64) for name, _ in groups.destinations
        }
        self._letters: LagSnapshot | None = None
        self._tally = LetterTally()
        self._tally_complete = False
        self._consumer: AIOKafkaConsumer | None = None

    async def run(self) -> None:
        """Refresh every ``interval_s`` until cancelled; a failing Kafka is recorded, backed
        off from and tried again, never raised."""
        if self.groups.error is not None:
            return  # nothing to watch: the section shows the config's error
        delay = backoff_delays(0.5, 10.0)
        failures = 0
        try:
            while True:
                try:
                    await self.refresh()
                except _READ_ERRORS as exc:
                    failures += 1
                    self.error = describe(exc)
                    log.debug("delivery groups not read (%s), retry %d", self.error, failures)
                    await self._stop_clients()
                    await asyncio.sleep(delay(failures))
                    continue
                failures = 0
                await asyncio.sleep(self.interval_s)
        finally:
            await self._stop_clients()

    async def _stop_clients(self) -> None:
        await self.reader.stop()
        self._started = False
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            await consumer.stop()

    async def refresh(self) -> None:
        """Read every destination group's backlog and members, and the waiting dead letters.

        Raises:
            ServiceError, aiokafka's errors, TimeoutError: Kafka did not answer.
        """
        if not self._started:
            await self.reader.start()
            self._started = True
        topic = self.settings.topic_segment_changes
        for name, group in self.groups.destinations:
            async with asyncio.timeout(15.0):
                snapshot = await self.reader.read(group, [topic])
            async with asyncio.timeout(15.0):
                self._members[name] = await self.reader.members(group)
            self._snapshots[name] = snapshot
            self._history[name].append((snapshot.taken_at, snapshot.total_lag))
        async with asyncio.timeout(15.0):
            letters = await self.reader.read(
                self.groups.redrive_group, [self.groups.dead_letter_topic]
            )
        self._letters = letters
        if self.groups.destination_of is not None:
            async with asyncio.timeout(15.0):
                await self._count_letters(letters, self.groups.destination_of)
        self.error = None

    async def _count_letters(
        self, letters: LagSnapshot, destination_of: Callable[[bytes | None], str | None]
    ) -> None:
        """Read up to :data:`LETTERS_PER_REFRESH` letters not counted yet into the tally."""
        ends: dict[TopicPartition, int] = {}
        for p in letters.partitions:
            resume = p.start if p.committed is None else max(p.committed, p.start)
            position = self._tally.trim(p.partition, resume)
            if position < p.end:
                ends[TopicPartition(p.topic, p.partition)] = p.end
        if not ends:
            self._tally_complete = True
            return
        if self._consumer is None:
            # Kept before it starts: a start that fails or is cut short is closed with the rest.
            self._consumer = kafka_consumer(self.settings, group_id=None, enable_auto_commit=False)
            await self._consumer.start()
        consumer = self._consumer
        consumer.assign(list(ends))
        for tp in ends:
            consumer.seek(tp, self._tally.next[tp.partition])
        read = 0
        deadline = time.monotonic() + 2.0
        try:
            while read < LETTERS_PER_REFRESH and time.monotonic() < deadline:
                behind = [tp for tp, end in ends.items() if self._tally.next[tp.partition] < end]
                if not behind:
                    break
                batches = await consumer.getmany(
                    *behind, timeout_ms=500, max_records=LETTERS_PER_REFRESH - read
                )
                for tp, records in batches.items():
                    for record in records:
                        if record.offset >= self._tally.next[tp.partition]:
                            name = destination_of(record.value) or "(not a letter)"
                            self._tally.add(tp.partition, record.offset, name)
                            read += 1
        finally:
            consumer.unsubscribe()  # stop prefetching: the next round assigns afresh
        self._tally_complete = all(
            self._tally.next[tp.partition] >= end for tp, end in ends.items()
        )

    def document(self) -> dict[str, Any]:
        """``/status.json``'s ``delivery`` part, from the last figures read (no I/O)."""
        letters = self._letters
        counted = self.groups.destination_of is not None and letters is not None
        by_destination = self._tally.counts() if counted else None
        destinations = [
            destination_doc(
                name,
                group,
                snapshot=self._snapshots.get(name),
                members=self._members.get(name),
                growth=backlog_growth(list(self._history[name])),
                error=self.error,
                dead_letters=None if by_destination is None else by_destination.get(name, 0),
            )
            for name, group in self.groups.destinations
        ]
        # A topic not created yet (the first deliver process creates it) holds no letter: 0.
        waiting = None if letters is None else letters.total_lag
        return {
            "config": self.groups.config,
            "error": self.error if self.groups.error is None else self.groups.error,
            "taken_at": None if letters is None else letters.taken_at,
            "destinations": destinations,
            "dead_letters": {
                "topic": self.groups.dead_letter_topic,
                "redrive_group": self.groups.redrive_group,
                "waiting": waiting,
                "by_destination": by_destination,
                "complete": counted and self._tally_complete,
            },
            "warnings": sum(d["state"] == "warning" for d in destinations),
        }
