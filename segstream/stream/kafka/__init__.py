"""Kafka I/O: publishing outputs, creating and reading topics, consumer lag, the change feed."""

from __future__ import annotations

from segstream.stream.kafka.changefeed import ChangeFeed, ChangeSummary, parse_change
from segstream.stream.kafka.lag import (
    LagReader,
    LagSnapshot,
    PartitionLag,
    partition_lag,
    read_lag,
    topic_partitions,
)
from segstream.stream.kafka.publisher import (
    AiokafkaSender,
    Sender,
    default_partition,
    group_by_partition,
)
from segstream.stream.kafka.topics import ensure_topics, partitions_of, read_all, topic_specs

__all__ = [
    "AiokafkaSender",
    "ChangeFeed",
    "ChangeSummary",
    "LagReader",
    "LagSnapshot",
    "PartitionLag",
    "Sender",
    "default_partition",
    "ensure_topics",
    "group_by_partition",
    "parse_change",
    "partition_lag",
    "partitions_of",
    "read_all",
    "read_lag",
    "topic_partitions",
    "topic_specs",
]
