"""Kafka's default placement of keys, misplaced records as producer patterns, co-partitioning."""

from __future__ import annotations

import zlib

import pytest

from segstream.errors import ConfigError
from segstream.stream.domain.partitioning import (
    PatternLog,
    ProducerPattern,
    check_copartitioned,
    expected_partition,
    misplacement,
)

# Java's Utils.murmur2 of these UTF-8 strings, as Kafka's own UtilsTest lists them (signed int).
JAVA_MURMUR2 = {
    "21": -973932308,
    "foobar": -790332482,
    "a-little-bit-long-string": -985981536,
    "a-little-bit-longer-string": -1486304829,
    "lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
    "abc": 479470107,
}


class TestExpectedPartition:
    @pytest.mark.parametrize(("key", "java_hash"), JAVA_MURMUR2.items())
    @pytest.mark.parametrize("partitions", [1, 3, 4, 12, 100])
    def test_matches_javas_to_positive_murmur2_modulo(
        self, key: str, java_hash: int, partitions: int
    ) -> None:
        assert expected_partition(key.encode(), partitions) == (java_hash & 0x7FFFFFFF) % partitions

    def test_user_ids_spread_over_every_partition(self) -> None:
        placed = [expected_partition(str(uid).encode(), 4) for uid in range(1000)]
        assert set(placed) == {0, 1, 2, 3}
        assert min(placed.count(p) for p in range(4)) > 200

    def test_a_topic_without_partitions_is_refused(self) -> None:
        with pytest.raises(ValueError, match="at least one partition"):
            expected_partition(b"1", 0)


class TestMisplacement:
    def test_a_record_on_its_keys_partition_is_no_pattern(self) -> None:
        for uid in range(200):
            key = str(uid).encode()
            assert misplacement("orders", key, expected_partition(key, 8), 8) is None

    def test_a_record_without_key_is_not_checked(self) -> None:
        assert misplacement("orders", None, 3, 8) is None

    def test_librdkafkas_crc32_placement_is_named(self) -> None:
        key = next(
            k
            for k in (str(u).encode() for u in range(1000))
            if zlib.crc32(k) % 8 != expected_partition(k, 8)
        )
        pattern = misplacement("orders", key, zlib.crc32(key) % 8, 8, client="kcat")
        assert pattern == ProducerPattern("orders", "crc32", 8, client="kcat")
        assert "murmur2_random" in pattern.describe()
        assert "from kcat" in pattern.describe()

    def test_hashing_over_an_older_partition_count_is_named(self) -> None:
        # A producer that still sees 4 partitions of a topic altered to 8, for a key that
        # CRC32 would not explain.
        key = next(
            k
            for k in (str(u).encode() for u in range(1000))
            if expected_partition(k, 4) != expected_partition(k, 8)
            and zlib.crc32(k) % 8 != expected_partition(k, 4)
            and all(expected_partition(k, m) != expected_partition(k, 4) for m in (5, 6, 7))
        )
        pattern = misplacement("users", key, expected_partition(key, 4), 8)
        assert pattern == ProducerPattern("users", "fewer-partitions", 8, hashed_over=4)
        assert "over 4 partitions, the topic has 8" in pattern.describe()

    def test_an_unexplained_placement_names_both_partitions(self) -> None:
        # Over 4 partitions, a partition that neither murmur2 over 4, 3 or 2 nor CRC32 gives.
        def explained(k: bytes) -> set[int]:
            return {expected_partition(k, m) for m in (4, 3, 2)} | {zlib.crc32(k) % 4}

        key = next(k for k in (str(u).encode() for u in range(1000)) if len(explained(k)) == 3)
        actual = ({0, 1, 2, 3} - explained(key)).pop()
        pattern = misplacement("users", key, actual, 4)
        assert pattern is not None
        assert (pattern.cause, pattern.actual, pattern.expected) == (
            "unknown",
            actual,
            expected_partition(key, 4),
        )
        assert f"arrived on partition {actual}" in pattern.describe()


class TestPatternLog:
    def test_each_pattern_is_reported_once_and_every_record_counted(self) -> None:
        log = PatternLog()
        crc = ProducerPattern("orders", "crc32", 8)
        other = ProducerPattern("users", "crc32", 8)
        assert [log.first_time(p) for p in (crc, crc, other, crc)] == [True, False, True, False]
        assert log.records == 4

    def test_memory_is_bounded_past_the_limit(self) -> None:
        log = PatternLog(limit=2)
        patterns = [ProducerPattern("t", "unknown", 8, None, a, 0) for a in range(1, 5)]
        assert [log.first_time(p) for p in patterns] == [True, True, False, False]
        assert len(log.seen) == 2 and log.records == 4


class TestCopartitioned:
    def test_equal_counts_pass(self) -> None:
        check_copartitioned({"users": 8, "orders": 8})

    def test_different_counts_name_topics_counts_and_the_fix(self) -> None:
        with pytest.raises(ConfigError) as raised:
            check_copartitioned({"users": 4, "orders": 8})
        message = str(raised.value)
        assert "users has 4, orders has 8" in message
        assert "--alter --topic users --partitions 8" in message
        assert "--topic orders" not in message
        assert "recreate" in message

    def test_a_missing_topic_is_named(self) -> None:
        with pytest.raises(ConfigError, match="orders have no partitions"):
            check_copartitioned({"users": 4, "orders": 0})
