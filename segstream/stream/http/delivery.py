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
``segstream deliver --redrive`` committed (its group), read from offsets only. Per destination
they are *not* counted: that would mean reading and decoding every letter (each names its
destination in its JSON value) at every refresh; the deliver processes count them per
destination in ``segstream_delivery_failed_total``.

The formatting (:func:`backlog_growth`, :func:`destination_warnings`, :func:`destination_doc`)
is pure and unit-tested.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from segstream.errors import ServiceError, describe
from segstream.settings import Settings
from segstream.stream.clients.retry import KAFKA_TRANSIENT, backoff_delays
from segstream.stream.kafka.lag import LagReader, LagSnapshot

__all__ = [
    "BEHIND_WARN_S",
    "GROWTH_WINDOW_S",
    "DeliveryGroups",
    "DeliveryWatch",
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
    behind_warn_s: float = BEHIND_WARN_S,
) -> list[str]:
    """Why a destination needs an operator's look, one sentence each; empty when it is fine.

    - ``members == 0``: no deliver process is in its group, so nothing is delivered to it;
    - a backlog whose oldest change is at least ``behind_warn_s`` old (or of unknown age):
      the destination is down, slow or rate-limited, said with the growth when it grows.

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
    return warnings


def destination_doc(
    name: str,
    group: str,
    *,
    snapshot: LagSnapshot | None,
    members: int | None,
    growth: int | None,
    error: str | None,
) -> dict[str, Any]:
    """One destination's entry of ``/status.json``'s ``delivery.destinations``.

    ``backlog`` is in changes (``segment-changes`` records not acknowledged by the
    destination's group), ``seconds_behind`` the age of the oldest of them, ``growth`` the
    backlog's change over :data:`GROWTH_WINDOW_S`; all ``None`` until first read. ``state`` is
    ``"ok"``, ``"warning"`` (``warnings`` says why) or ``"unknown"`` (not read: ``error``).
    """
    backlog = None if snapshot is None else snapshot.total_lag
    behind = None if snapshot is None else snapshot.max_seconds_behind
    warnings = destination_warnings(
        group, members=members, backlog=backlog, seconds_behind=behind, growth=growth
    )
    state = "warning" if warnings else ("unknown" if snapshot is None else "ok")
    return {
        "name": name,
        "group": group,
        "members": members,
        "backlog": backlog,
        "seconds_behind": behind,
        "growth": growth,
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
                    await self.reader.stop()
                    self._started = False
                    await asyncio.sleep(delay(failures))
                    continue
                failures = 0
                await asyncio.sleep(self.interval_s)
        finally:
            await self.reader.stop()
            self._started = False

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
            snapshot = await asyncio.wait_for(self.reader.read(group, [topic]), timeout=15.0)
            self._members[name] = await asyncio.wait_for(self.reader.members(group), 15.0)
            self._snapshots[name] = snapshot
            self._history[name].append((snapshot.taken_at, snapshot.total_lag))
        self._letters = await asyncio.wait_for(
            self.reader.read(self.groups.redrive_group, [self.groups.dead_letter_topic]), 15.0
        )
        self.error = None

    def document(self) -> dict[str, Any]:
        """``/status.json``'s ``delivery`` part, from the last figures read (no I/O)."""
        letters = self._letters
        destinations = [
            destination_doc(
                name,
                group,
                snapshot=self._snapshots.get(name),
                members=self._members.get(name),
                growth=backlog_growth(list(self._history[name])),
                error=self.error,
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
                "by_destination": None,
                "note": "waiting letters are counted from offsets, for every destination "
                "together; per destination see segstream_delivery_failed_total",
            },
            "warnings": sum(d["state"] == "warning" for d in destinations),
        }
