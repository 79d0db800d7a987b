"""The latest segment changes, tailed from the ``segment-changes`` topic for the status page.

:class:`ChangeFeed` reads the topic with its own consumer, outside any group (it commits
nothing and never takes partitions from the workers), so it needs nothing from the worker and
shows what downstream consumers see. On start it reads back the last ``keep`` records of each
partition, so the page is not empty after a restart, then follows the topic; it keeps the
``keep`` newest changes (by Kafka timestamp) and a rolling count of the live ones.

If the topic does not exist yet (no worker ever ran) or the broker is down, :meth:`run`
waits and tries again with backoff, forever; it never creates the topic (it assigns itself the
partitions of the topic only once the topic exists). Partitions added to
the topic while it runs are picked up at its next reconnection only.
"""

from __future__ import annotations

import asyncio
import heapq
import json
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from segstream.errors import describe
from segstream.settings import Settings
from segstream.stream.clients.kafka import admin_client
from segstream.stream.clients.kafka import consumer as kafka_consumer
from segstream.stream.clients.retry import KAFKA_TRANSIENT, backoff_delays
from segstream.stream.domain.rates import RollingCounter
from segstream.stream.kafka.lag import topic_partitions

__all__ = ["ChangeFeed", "ChangeSummary", "parse_change"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ChangeSummary:
    """What the status page shows of one change event."""

    user_id: int
    previous_segment: int | None
    segment: int | None
    """``None``: the user was unassigned (no longer every feature, so no segment)."""
    model_version: str
    occurred_at: str
    """RFC 3339 business time of the event that caused the change."""
    published_ms: int
    """Kafka timestamp of the change record, ms since the epoch."""
    drift_epoch: int | None = None
    """Drift mode: the drift epoch that assigned the segment; ``None`` without drift."""

    def as_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "user_id": self.user_id,
            "previous_segment": self.previous_segment,
            "segment": self.segment,
            "model_version": self.model_version,
            "occurred_at": self.occurred_at,
            "published_ms": self.published_ms,
            "drift_epoch": self.drift_epoch,
        }


def parse_change(value: bytes | None, timestamp_ms: int) -> ChangeSummary | None:
    """The summary of a ``segment-changes`` value; ``None`` if it is not a change event."""
    if not value:
        return None
    try:
        doc = json.loads(value)
        previous, segment, epoch = doc["previous_segment"], doc["segment"], doc.get("drift_epoch")
        summary = ChangeSummary(
            user_id=int(doc["user_id"]),
            previous_segment=None if previous is None else int(previous),
            segment=None if segment is None else int(segment),
            model_version=str(doc["model_version"]),
            occurred_at=str(doc["occurred_at"]),
            published_ms=int(timestamp_ms),
            drift_epoch=None if epoch is None else int(epoch),
        )
    except (ValueError, TypeError, KeyError):
        return None
    return summary


class ChangeFeed:
    """The ``keep`` latest changes of ``topic`` and the live change rate; see the module doc."""

    def __init__(
        self,
        settings: Settings,
        topic: str,
        *,
        keep: int = 50,
        poll_timeout_s: float = 1.0,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.settings = settings
        self.topic = topic
        self.keep = keep
        self.poll_timeout_s = poll_timeout_s
        self.rate = RollingCounter() if clock is None else RollingCounter(clock=clock)
        self.connected = False
        """True while the topic is being followed."""
        self.last_error: str | None = None
        self._recent: deque[ChangeSummary] = deque(maxlen=keep)

    def recent(self, n: int | None = None) -> list[ChangeSummary]:
        """The latest changes, newest first (at most ``n``)."""
        items = list(reversed(self._recent))
        return items if n is None else items[:n]

    def _add(self, records: list[Any], live: bool) -> None:
        if live:
            # Counted, not parsed: the topic is the workers' own output, and parsing every
            # record cost the worker ~3% of its CPU at 10k changes/s for a rate on a page.
            self.rate.add(len(records))
        # Only the newest ``keep`` of a partition's batch can be among the newest overall.
        changes = [parse_change(r.value, r.timestamp) for r in records[-self.keep :]]
        valid = [c for c in changes if c is not None]
        # Partitions interleave: keep the deque ordered by publication time.
        merged = heapq.merge(
            self._recent, sorted(valid, key=lambda c: c.published_ms), key=lambda c: c.published_ms
        )
        self._recent = deque(merged, maxlen=self.keep)

    async def run(self) -> None:
        """Follow the topic until cancelled, reconnecting with backoff after failures."""
        delay = backoff_delays(0.5, 10.0)
        failures = 0
        while True:
            try:
                await self._follow()
            except KAFKA_TRANSIENT as exc:
                self.last_error = describe(exc)
            # A feed that was following starts its backoff afresh.
            failures = 1 if self.connected else failures + 1
            self.connected = False
            log.debug("change feed of %s: %s; retry %d", self.topic, self.last_error, failures)
            await asyncio.sleep(delay(failures))

    async def _follow(self) -> None:
        admin = admin_client(self.settings)
        consumer = kafka_consumer(
            self.settings,
            group_id=None,
            enable_auto_commit=False,
        )
        try:
            await admin.start()
            partitions, missing = await topic_partitions(admin, [self.topic])
            if missing or not partitions:
                self.last_error = f"topic {self.topic} does not exist yet"
                return
            await consumer.start()
            consumer.assign(partitions)
            starts = await consumer.beginning_offsets(partitions)
            ends = await consumer.end_offsets(partitions)
            for tp in partitions:
                consumer.seek(tp, max(starts[tp], ends[tp] - self.keep))
            self.connected, self.last_error = True, None
            while True:
                batches = await consumer.getmany(timeout_ms=int(self.poll_timeout_s * 1000))
                for tp, records in batches.items():
                    backlog = [r for r in records if r.offset < ends[tp]]
                    live = [r for r in records if r.offset >= ends[tp]]
                    self._add(backlog, live=False)
                    self._add(live, live=True)
        finally:
            await consumer.stop()
            await admin.close()
