"""Consumer lag of the worker group, read from Kafka itself: messages and seconds behind.

For each partition of the group's input topics, Kafka knows three offsets: the group's
committed offset (the next record the group will process: Faust commits ``last acked + 1``),
the log start offset (older records were deleted by retention) and the end offset (the offset
the next produced record will get). The group resumes at ``max(committed, start)``, or at
``start`` when it never committed (the worker reads a new topic from the earliest record), so

- ``lag`` (messages) = ``end - resume``, never negative;
- ``seconds_behind`` = now - timestamp of the record at ``resume``, the oldest event not yet
  processed; 0 when the lag is 0. It is the record's Kafka timestamp: the producer's clock
  under the default ``message.timestamp.type=CreateTime``, the broker's under
  ``LogAppendTime``. ``None`` when the lag is positive but no record could be read at
  ``resume`` within the fetch timeout (only transaction markers left, a broker that did not
  answer in time).

Everything comes from the broker (the group coordinator's OffsetFetch, ListOffsets, one Fetch
per lagging partition), so the figures are right while every worker is down, which is when
an operator needs them. :class:`LagReader` keeps its clients open between reads (the status
page polls it every few seconds); :func:`read_lag` is the one-shot form used by ``segstream
lag``. Neither joins the group, commits, or creates topics: a topic that does not exist is
listed in :attr:`LagSnapshot.missing_topics`, a group the cluster does not know is flagged by
:attr:`LagSnapshot.group_known`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from segstream.errors import ServiceError, describe
from segstream.settings import Settings
from segstream.stream.clients.kafka import admin_client
from segstream.stream.clients.kafka import consumer as kafka_consumer
from segstream.stream.clients.retry import KAFKA_TRANSIENT, retry

__all__ = [
    "LagReader",
    "LagSnapshot",
    "PartitionLag",
    "partition_lag",
    "read_lag",
    "topic_partitions",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class PartitionLag:
    """The group's position on one partition and how far behind the end it is."""

    topic: str
    partition: int
    committed: int | None
    """The group's committed offset (next record to process); ``None``: never committed."""
    start: int
    """Log start offset: the oldest record still stored."""
    end: int
    """End offset: one past the newest record."""
    lag: int
    """Records not processed yet: ``end - max(committed, start)``, at least 0."""
    seconds_behind: float | None
    """Age in seconds of the oldest record not processed yet; 0 when ``lag`` is 0, ``None``
    when that record could not be read."""


def partition_lag(
    topic: str,
    partition: int,
    *,
    committed: int | None,
    start: int,
    end: int,
    first_pending_ms: int | None,
    now_ms: int,
) -> PartitionLag:
    """The lag of one partition from its offsets and the timestamp of its first pending record.

    Args:
        committed: the group's committed offset, ``None`` (or negative, Kafka's "none") when
            the group never committed on this partition.
        first_pending_ms: Kafka timestamp (ms since the epoch) of the first record at or after
            the resume offset, ``None`` when unknown or when there is none.
        now_ms: the current time, ms since the epoch.
    """
    if committed is not None and committed < 0:
        committed = None
    resume = start if committed is None else max(committed, start)
    lag = max(0, end - resume)
    if lag == 0:
        seconds: float | None = 0.0
    elif first_pending_ms is None:
        seconds = None
    else:
        # Clocks of producers and this host differ a little: an event "from the future" is 0 s old.
        seconds = max(0.0, (now_ms - first_pending_ms) / 1000.0)
    return PartitionLag(topic, partition, committed, start, end, lag, seconds)


@dataclass(frozen=True, slots=True)
class LagSnapshot:
    """The lag of every partition of the group's topics at one moment."""

    group: str
    taken_at: float
    """When the offsets were read, seconds since the epoch."""
    partitions: tuple[PartitionLag, ...]
    """Sorted by topic, then partition."""
    missing_topics: tuple[str, ...] = ()
    """Topics asked for that do not exist on the cluster."""
    group_known: bool = True
    """Whether the cluster knows the group (it has members or committed offsets); a group it
    does not know is most likely a misspelt one, or one no worker has joined yet."""

    @property
    def total_lag(self) -> int:
        """Records pending over all partitions."""
        return sum(p.lag for p in self.partitions)

    @property
    def max_seconds_behind(self) -> float | None:
        """The largest ``seconds_behind``; ``None`` when one partition's is unknown."""
        seconds = [p.seconds_behind for p in self.partitions]
        if any(s is None for s in seconds):
            return None
        return max((s for s in seconds if s is not None), default=0.0)

    @property
    def committed_total(self) -> int:
        """Sum of the committed offsets (never-committed partitions count as their start)."""
        return sum(p.start if p.committed is None else p.committed for p in self.partitions)


class LagReader:
    """Reads :class:`LagSnapshot` s of one consumer group from Kafka, keeping clients open.

    Use as ``async with LagReader(...) as reader: snapshot = await reader.read()``. Transient
    broker errors propagate from :meth:`read` as aiokafka's exceptions (the caller decides
    whether to retry); :meth:`start` raises :class:`ServiceError` if the broker is unreachable.
    """

    def __init__(
        self,
        settings: Settings,
        group: str,
        topics: Sequence[str],
        *,
        fetch_timeout_s: float = 2.0,
        request_timeout_s: float = 10.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """``topics``: the group's input topics; ``clock`` gives seconds since the epoch."""
        self.settings = settings
        self.group = group
        self.topics = tuple(dict.fromkeys(topics))
        self.fetch_timeout_s = fetch_timeout_s
        self.request_timeout_s = request_timeout_s
        self.clock = clock
        self._admin: AIOKafkaAdminClient | None = None
        self._consumer: AIOKafkaConsumer | None = None

    async def start(self) -> None:
        """Connect to the cluster.

        Raises:
            ServiceError: the brokers cannot be reached.
        """
        timeout_ms = int(self.request_timeout_s * 1000)
        admin = admin_client(self.settings, request_timeout_ms=timeout_ms)
        # No group: this consumer only lists offsets and peeks at one record per partition.
        consumer = kafka_consumer(
            self.settings,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            request_timeout_ms=timeout_ms,
            max_partition_fetch_bytes=64 * 1024,
        )
        try:
            # Bounded: a client's bootstrap can wait minutes on a broker that accepted the
            # connection and answers nothing; generous, since a loaded host is slow to start.
            async with asyncio.timeout(CONNECT_TIMEOUT_S):
                await admin.start()
            async with asyncio.timeout(CONNECT_TIMEOUT_S):
                await consumer.start()
        except KAFKA_TRANSIENT as exc:
            await _close_quietly(admin, consumer)
            raise ServiceError(
                f"cannot reach Kafka at {self.settings.kafka_bootstrap_servers}: {describe(exc)}"
            ) from exc
        except BaseException:
            # Cancelled while connecting (the app is stopping): leave no client open behind.
            await _close_quietly(admin, consumer)
            raise
        self._admin, self._consumer = admin, consumer

    async def stop(self) -> None:
        """Close the clients (idempotent)."""
        admin, consumer = self._admin, self._consumer
        self._admin = self._consumer = None
        if admin is not None and consumer is not None:
            await _close_quietly(admin, consumer)

    async def __aenter__(self) -> LagReader:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def ping(self) -> int:
        """Ask the cluster for its brokers (a metadata round trip); returns how many answered.

        Raises:
            RuntimeError: the reader is not started.
            aiokafka's KafkaError, OSError, TimeoutError: the broker failed to answer.
        """
        if self._admin is None:
            raise RuntimeError("LagReader.ping() before start()")
        cluster = await self._admin.describe_cluster()
        return len(cluster.get("brokers", ()))

    async def members(self, group: str | None = None) -> int:
        """Consumers in the group now (its workers); 0 for an empty or unknown group.

        ``group``: another group than the reader's own, read with the same clients (the
        status page reads the delivery groups this way).

        Raises:
            RuntimeError: the reader is not started.
            aiokafka's KafkaError, OSError, TimeoutError: the broker failed to answer.
        """
        if self._admin is None:
            raise RuntimeError("LagReader.members() before start()")
        name = self.group if group is None else group
        (response,) = await self._admin.describe_consumer_groups([name])
        return sum(len(each[5]) for each in response.groups if each[1] == name)

    async def read(
        self, group: str | None = None, topics: Sequence[str] | None = None
    ) -> LagSnapshot:
        """The group's lag on every partition of its topics, now.

        ``group``, ``topics``: another group, or other topics, than the reader's own, read
        with the same clients; never two reads at once (they share one consumer).

        Raises:
            RuntimeError: the reader is not started.
            aiokafka's KafkaError, OSError, TimeoutError: the broker failed to answer.
        """
        if self._admin is None or self._consumer is None:
            raise RuntimeError("LagReader.read() before start()")
        admin, consumer = self._admin, self._consumer
        name = self.group if group is None else group
        wanted = self.topics if topics is None else tuple(dict.fromkeys(topics))
        partitions, missing = await topic_partitions(admin, wanted)
        known = any(each[0] == name for each in await admin.list_consumer_groups())
        if not partitions:
            return LagSnapshot(name, self.clock(), (), missing, known)
        committed = await admin.list_consumer_group_offsets(name, partitions=partitions)
        starts = await consumer.beginning_offsets(partitions)
        ends = await consumer.end_offsets(partitions)
        taken_at = self.clock()
        resume = {
            tp: _resume(committed.get(tp), starts[tp])
            for tp in partitions
            if ends[tp] > _resume(committed.get(tp), starts[tp])
        }
        first = await self._first_timestamps(resume)
        now_ms = int(self.clock() * 1000)
        lags = tuple(
            partition_lag(
                tp.topic,
                tp.partition,
                committed=_offset(committed.get(tp)),
                start=starts[tp],
                end=ends[tp],
                first_pending_ms=first.get(tp),
                now_ms=now_ms,
            )
            for tp in partitions
        )
        return LagSnapshot(name, taken_at, lags, missing, known)

    async def _first_timestamps(
        self, resume: Mapping[TopicPartition, int]
    ) -> dict[TopicPartition, int]:
        """Timestamp (ms) of the first record at or after ``resume[tp]``, per partition."""
        assert self._consumer is not None
        consumer = self._consumer
        if not resume:
            return {}
        consumer.assign(list(resume))
        for tp, offset in resume.items():
            consumer.seek(tp, offset)
        found: dict[TopicPartition, int] = {}
        deadline = time.monotonic() + self.fetch_timeout_s
        try:
            while len(found) < len(resume):
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                batches = await consumer.getmany(
                    *[tp for tp in resume if tp not in found],
                    timeout_ms=max(1, int(left * 1000)),
                )
                for tp, records in batches.items():
                    first = next((r for r in records if r.offset >= resume[tp]), None)
                    if first is not None and tp not in found:
                        found[tp] = first.timestamp
        finally:
            # Stop prefetching: the next read assigns afresh.
            consumer.unsubscribe()
        return found


async def topic_partitions(
    admin: AIOKafkaAdminClient, topics: Sequence[str]
) -> tuple[list[TopicPartition], tuple[str, ...]]:
    """Every partition of the existing ``topics`` (sorted), and the topics that do not exist.

    Only existing topics are described: a metadata request naming a missing topic could make
    a broker with ``auto.create.topics.enable`` create it with the wrong partition count.
    """
    existing = set(await admin.list_topics())
    present = [t for t in topics if t in existing]
    missing = tuple(t for t in topics if t not in existing)
    if not present:
        return [], missing
    described = await admin.describe_topics(present)
    partitions = [
        TopicPartition(topic["topic"], p["partition"])
        for topic in described
        if topic["error_code"] == 0
        for p in topic["partitions"]
    ]
    return sorted(partitions, key=lambda tp: (tp.topic, tp.partition)), missing


def _offset(meta: object) -> int | None:
    offset = getattr(meta, "offset", None)
    return None if offset is None or offset < 0 else int(offset)


def _resume(meta: object, start: int) -> int:
    committed = _offset(meta)
    return start if committed is None else max(committed, start)


CONNECT_TIMEOUT_S = 60.0
"""Longest one client's start (bootstrap, metadata) may take."""
CLOSE_TIMEOUT_S = 10.0
"""Longest one client's close may take: a close waits on its fetches and in-flight requests,
which a broker that answers nothing never completes."""


async def _close_quietly(admin: AIOKafkaAdminClient, consumer: AIOKafkaConsumer) -> None:
    # Closing after a failed start must not hide the error that made us close.
    for close in (consumer.stop, admin.close):
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT_S):
                await close()
        except KAFKA_TRANSIENT as exc:
            log.debug("closing a Kafka client after a failed start: %r", exc)


async def read_lag(
    settings: Settings,
    group: str,
    topics: Sequence[str],
    *,
    attempts: int = 3,
    fetch_timeout_s: float = 2.0,
) -> LagSnapshot:
    """One :class:`LagSnapshot` of ``group`` on ``topics``, with connect and read retried.

    Raises:
        ServiceError: the brokers could not be reached or did not answer, ``attempts`` times.
    """

    async def once() -> LagSnapshot:
        async with LagReader(settings, group, topics, fetch_timeout_s=fetch_timeout_s) as reader:
            async with asyncio.timeout(30.0):
                return await reader.read()

    return await retry(
        once,
        what=f"read the lag of group {group!r} from Kafka at {settings.kafka_bootstrap_servers} "
        "(SEGSTREAM_KAFKA_BOOTSTRAP_SERVERS)",
        transient=(*KAFKA_TRANSIENT, ServiceError),
        attempts=attempts,
        first_delay_s=0.5,
        max_delay_s=2.0,
    )
