"""Outputs go to Kafka's default partition of their key, in order."""

from __future__ import annotations

from aiokafka.partitioner import DefaultPartitioner

from segstream.stream.domain.topics import Output
from segstream.stream.kafka.publisher import default_partition, group_by_partition


def test_records_go_to_kafkas_default_partition_in_order() -> None:
    keys = [str(uid).encode() for uid in range(200)]
    outputs = [Output("t", key, bytes([i % 256])) for i, key in enumerate(keys)]
    outputs += [Output("u", keys[0], b"later")]
    groups = group_by_partition(outputs, {"t": 4, "u": 3}.__getitem__)
    for (topic, partition), group in groups.items():
        for output in group:
            expected = DefaultPartitioner()(output.key, list(range(4 if topic == "t" else 3)), [])
            assert partition == expected
        assert group == [o for o in outputs if o in group]  # original order kept
    assert sum(len(g) for g in groups.values()) == len(outputs)
    assert default_partition(None, 4, fallback=6) == 2
