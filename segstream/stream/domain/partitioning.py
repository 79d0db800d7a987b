"""Where a keyed record should be, by Kafka's default partitioner, and what to say when it isn't.

The worker keeps one user's state in one place because every event of a user arrives on the
same partition number of ``users`` and ``orders``. That holds only when (a) both topics have
the same partition count (:func:`check_copartitioned`) and (b) every producer places a key
the way Kafka's Java client does by default: ``toPositive(murmur2(key)) % partitions``
(:func:`expected_partition`). A producer that hashes otherwise (librdkafka's default
``consistent_random`` is CRC32, used by kcat and confluent-kafka unless told otherwise), or
that still sees an older partition count, sends a user's events to two partitions, so two
workers may apply them out of order.

:func:`misplacement` turns one record into a :class:`ProducerPattern` (or None when it is
where its key hashes to); :class:`PatternLog` says which patterns are new, so a worker can
log each once instead of once per record. Everything here is pure.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, Literal

from aiokafka.partitioner import murmur2

from segstream.errors import ConfigError

__all__ = [
    "PatternLog",
    "ProducerPattern",
    "check_copartitioned",
    "expected_partition",
    "misplacement",
]

Cause = Literal["crc32", "fewer-partitions", "unknown"]


def expected_partition(key: bytes, partitions: int) -> int:
    """The partition Kafka's default (Java) partitioner picks for ``key``: 0..partitions-1.

    ``toPositive(murmur2(key)) % partitions``, murmur2 being aiokafka's port of Java's
    ``Utils.murmur2`` (seed ``0x9747b28c``); ``toPositive`` clears the sign bit. Costs about
    3 µs for a short key (pure Python).

    Raises:
        ValueError: ``partitions`` < 1.
    """
    if partitions < 1:
        raise ValueError(f"a topic has at least one partition, got {partitions}")
    hashed: int = murmur2(key)  # aiokafka is untyped: its murmur2 returns a signed 32-bit int
    return (hashed & 0x7FFFFFFF) % partitions


@dataclass(frozen=True, slots=True)
class ProducerPattern:
    """One way records arrive off their key's partition: the unit a worker logs once.

    ``cause`` is what the placement matches: ``crc32`` (librdkafka's default partitioner),
    ``fewer-partitions`` (murmur2 over ``hashed_over`` partitions: a producer with stale
    metadata, or the topic was altered since), or ``unknown`` (a custom partitioner or explicit
    partitions; then ``actual``/``expected`` tell which partitions are involved).
    """

    topic: str
    cause: Cause
    partitions: int
    hashed_over: int | None = None
    """For ``fewer-partitions``: the partition count the producer hashed over."""
    actual: int | None = None
    """For ``unknown``: the partition the record arrived on."""
    expected: int | None = None
    """For ``unknown``: the partition its key hashes to."""
    client: str | None = None
    """Who produced it, when the record says so (a header the caller reads); else None."""

    def describe(self) -> str:
        """One line for the log: the topic, the cause, the consequence and the fix."""
        who = f" from {self.client}" if self.client else ""
        where = f"records on {self.topic}{who} are not on the partition their key hashes to"
        if self.cause == "crc32":
            how = (
                "their placement matches CRC32 (librdkafka's default 'consistent_random', "
                "e.g. kcat or confluent-kafka): configure that producer with "
                "partitioner=murmur2_random"
            )
        elif self.cause == "fewer-partitions":
            how = (
                f"their placement matches murmur2 over {self.hashed_over} partitions, the topic "
                f"has {self.partitions}: the producer's metadata is stale or the topic was "
                "altered; restart that producer"
            )
        else:
            how = (
                f"a record arrived on partition {self.actual}, its key hashes to "
                f"{self.expected} of {self.partitions}: the producer uses a custom partitioner "
                "or explicit partitions; use Kafka's default (murmur2) partitioner"
            )
        return (
            f"{where}; {how}. Until then one user's events can reach two workers and be "
            "applied out of order."
        )


def misplacement(
    topic: str, key: bytes | None, partition: int, partitions: int, client: str | None = None
) -> ProducerPattern | None:
    """The pattern of a record that arrived on ``partition`` of ``partitions``, or None.

    None when the record is where Kafka's default partitioner puts its key, or when it has no
    key (nothing to check: such a record is refused elsewhere). The cause is the first that
    explains the placement: CRC32 over ``partitions``, then murmur2 over fewer partitions
    (largest first, at least 2), else unknown. One record can match a cause by chance (1 in
    ``partitions`` for CRC32), so a cause is what the placement is consistent with.
    """
    if key is None:
        return None
    expected = expected_partition(key, partitions)
    if partition == expected:
        return None
    if zlib.crc32(key) % partitions == partition:
        return ProducerPattern(topic, "crc32", partitions, client=client)
    hashed = murmur2(key) & 0x7FFFFFFF
    for fewer in range(partitions - 1, 1, -1):
        if hashed % fewer == partition:
            return ProducerPattern(topic, "fewer-partitions", partitions, fewer, client=client)
    return ProducerPattern(topic, "unknown", partitions, None, partition, expected, client)


_MAX_PATTERNS: Final = 1024


class PatternLog:
    """Remembers the patterns already reported, so each is logged once.

    At most ``limit`` distinct patterns are remembered (a few per topic in practice; ``unknown``
    ones at most partitions² per topic); past that, :meth:`first_time` says False and only
    :attr:`records` keeps counting, so a flood of odd placements cannot grow memory.
    """

    def __init__(self, limit: int = _MAX_PATTERNS) -> None:
        self.limit = limit
        self.seen: set[ProducerPattern] = set()
        self.records = 0
        """Misplaced records noted, every one counted (not only first times)."""

    def first_time(self, pattern: ProducerPattern) -> bool:
        """Count one misplaced record; True when its pattern was not reported before."""
        self.records += 1
        if pattern in self.seen or len(self.seen) >= self.limit:
            return False
        self.seen.add(pattern)
        return True


def check_copartitioned(partition_counts: Mapping[str, int]) -> None:
    """Refuse input topics whose partition counts differ (or that have none).

    Args:
        partition_counts: topic -> its partition count, for the topics that must be
            co-partitioned (``users`` and ``orders``), as the broker describes them.

    Raises:
        ConfigError: naming each topic with its count and the fix. Partitions can only be
            added, so the fix raises the smaller topics to the largest count; keys then move
            to other partitions, so producers are stopped and workers caught up first.
    """
    missing = sorted(topic for topic, count in partition_counts.items() if count < 1)
    if missing:
        raise ConfigError(
            f"input topic(s) {', '.join(missing)} have no partitions (do they exist?); create "
            "them with SEGSTREAM_TOPIC_PARTITIONS partitions, as the worker does on start-up"
        )
    if len(set(partition_counts.values())) <= 1:
        return
    counts = ", ".join(f"{topic} has {count}" for topic, count in partition_counts.items())
    target = max(partition_counts.values())
    alters = "; ".join(
        f"kafka-topics.sh --bootstrap-server <broker> --alter --topic {topic} --partitions {target}"
        for topic, count in partition_counts.items()
        if count < target
    )
    raise ConfigError(
        f"the input topics are not co-partitioned ({counts} partitions): one user's events "
        "would reach different workers. Stop the producers, let the workers catch up, then "
        f"raise the smaller to {target} ({alters}), or delete and recreate the topics with "
        "the same count (SEGSTREAM_TOPIC_PARTITIONS)"
    )
