"""The Prometheus metrics: what is recorded is what the text format says, parsed back."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from segstream.stream.domain.events import REASONS
from segstream.stream.http.metrics import Metrics
from segstream.stream.kafka.lag import partition_lag


class FakeClock:
    """A settable monotonic clock (time is plain data here, not a client)."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def samples(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = metrics.exposition().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_recorded_counts_read_back_from_the_text_format() -> None:
    m = Metrics()
    m.consumed("users", 3)
    m.consumed("orders", 5)
    m.consumed("orders", 2)
    m.observe_batch(0.004, 10)
    m.observe_batch(0.2, 300)
    m.changes(4)
    m.dead_letter("not_json")
    m.dead_letter("key_mismatch", 2)
    for _ in range(3):
        m.redis_error()
    m.redis_retry()
    m.redis_wait_timeout()
    m.redis_wait_timeout()
    s = samples(m)
    assert s[("segstream_events_consumed_total", (("topic", "users"),))] == 3
    assert s[("segstream_events_consumed_total", (("topic", "orders"),))] == 7
    assert s[("segstream_batch_processing_seconds_count", ())] == 2
    assert s[("segstream_batch_processing_seconds_sum", ())] == pytest.approx(0.204)
    assert s[("segstream_batch_processing_seconds_bucket", (("le", "0.005"),))] == 1
    assert s[("segstream_batch_processing_seconds_bucket", (("le", "0.25"),))] == 2
    assert s[("segstream_batch_events_sum", ())] == 310
    assert s[("segstream_segment_changes_total", ())] == 4
    assert s[("segstream_dead_letters_total", (("reason", "not_json"),))] == 1
    assert s[("segstream_dead_letters_total", (("reason", "key_mismatch"),))] == 2
    assert s[("segstream_redis_errors_total", ())] == 3
    assert s[("segstream_redis_retries_total", ())] == 1
    assert s[("segstream_redis_wait_timeouts_total", ())] == 2


def test_every_dead_letter_reason_is_exported_from_the_start() -> None:
    s = samples(Metrics())
    for reason in REASONS:
        assert s[("segstream_dead_letters_total", (("reason", reason),))] == 0


def test_population_gauges_are_replaced_not_accumulated() -> None:
    m = Metrics()
    m.set_population({"v1": {0: 5, 1: 7}, "v0": {2: 1}})
    m.set_population({"v1": {0: 6, 1: 7}})
    s = samples(m)
    pop = {k[1]: v for k, v in s.items() if k[0] == "segstream_segment_population"}
    assert pop == {
        (("model_version", "v1"), ("segment", "0")): 6,
        (("model_version", "v1"), ("segment", "1")): 7,
    }


def test_model_version_is_an_info_metric() -> None:
    m = Metrics()
    m.set_model("20260101T000000Z-abc")
    s = samples(m)
    assert s[("segstream_model_info", (("version", "20260101T000000Z-abc"),))] == 1
    assert m.model_version == "20260101T000000Z-abc"


def test_lag_gauges_in_messages_and_seconds_per_partition() -> None:
    m = Metrics()
    m.set_lag(
        [
            partition_lag(
                "users", 0, committed=4, start=0, end=10, first_pending_ms=1_000, now_ms=4_000
            ),
            partition_lag(
                "users", 1, committed=8, start=0, end=8, first_pending_ms=None, now_ms=4_000
            ),
            partition_lag(
                "orders", 0, committed=0, start=0, end=2, first_pending_ms=None, now_ms=4_000
            ),
        ]
    )
    s = samples(m)
    messages = {k[1]: v for k, v in s.items() if k[0] == "segstream_consumer_lag_messages"}
    seconds = {k[1]: v for k, v in s.items() if k[0] == "segstream_consumer_lag_seconds"}
    assert messages == {
        (("partition", "0"), ("topic", "users")): 6,
        (("partition", "1"), ("topic", "users")): 0,
        (("partition", "0"), ("topic", "orders")): 2,
    }
    # Unknown age (orders/0) is left out rather than exported as a made-up number.
    assert seconds == {
        (("partition", "0"), ("topic", "users")): 3.0,
        (("partition", "1"), ("topic", "users")): 0.0,
    }


def test_two_metrics_objects_do_not_share_series() -> None:
    a, b = Metrics(), Metrics()
    a.consumed("users", 9)
    assert ("segstream_events_consumed_total", (("topic", "users"),)) not in samples(b)


def test_throughput_reports_rates_and_totals() -> None:
    clock = FakeClock(0.0)
    m = Metrics(clock=clock)
    clock.now = 100.0
    m.consumed("users", 40)
    m.changes(4)
    m.dead_letter("not_json")
    clock.now = 101.0
    t = m.throughput(10)
    assert (t.events_total, t.changes_total, t.dead_letters_total) == (40, 4, 1)
    assert t.events_per_s == pytest.approx(4.0)
    assert t.changes_per_s == pytest.approx(0.4)
    assert t.dead_letters_per_s == pytest.approx(0.1)


def test_stalls_are_counted_by_kind_and_both_kinds_start_at_zero() -> None:
    m = Metrics()
    s = samples(m)
    assert s[("segstream_stalls_total", (("kind", "batch"),))] == 0
    assert s[("segstream_stalls_total", (("kind", "commit"),))] == 0
    m.stall("commit")
    m.stall("commit")
    m.stall("batch")
    s = samples(m)
    assert s[("segstream_stalls_total", (("kind", "commit"),))] == 2
    assert s[("segstream_stalls_total", (("kind", "batch"),))] == 1


def test_drift_gauges_name_the_state_version_and_the_epoch_assigned_with() -> None:
    m = Metrics()
    m.set_drift("v1", 40, [0.1, 0.0], drift_epoch=7)
    m.set_drift("v2", 3, [0.2, 0.5], drift_epoch=2)
    got = samples(m)
    assert got[("segstream_drift_epoch", (("model_version", "v2"),))] == 2
    assert got[("segstream_drift_state_version", (("model_version", "v2"),))] == 3
    assert got[("segstream_drift_distance", (("model_version", "v2"), ("segment", "1")))] == 0.5
    assert ("segstream_drift_epoch", (("model_version", "v1"),)) not in got, "replaced"


def _named(m: Metrics, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    return {labels: v for (n, labels), v in samples(m).items() if n == name}


def test_committed_offsets_are_exported_per_partition_and_absent_before_a_commit() -> None:
    m = Metrics()
    m.set_lag(
        [
            partition_lag(
                "users", 0, committed=4, start=0, end=10, first_pending_ms=None, now_ms=0
            ),
            partition_lag(
                "users", 1, committed=None, start=3, end=9, first_pending_ms=None, now_ms=0
            ),
        ]
    )
    committed = _named(m, "segstream_consumer_committed_offset")
    assert committed == {(("partition", "0"), ("topic", "users")): 4}
    m.set_lag(
        [partition_lag("users", 0, committed=9, start=0, end=10, first_pending_ms=None, now_ms=0)]
    )
    assert _named(m, "segstream_consumer_committed_offset") == {
        (("partition", "0"), ("topic", "users")): 9
    }


def test_readiness_gauges_are_one_per_check_and_replaced_at_each_reading() -> None:
    m = Metrics()
    m.set_readiness({"kafka": True, "redis": False, "model": True, "progress": True})
    assert _named(m, "segstream_ready") == {
        (("check", "kafka"),): 1.0,
        (("check", "redis"),): 0.0,
        (("check", "model"),): 1.0,
        (("check", "progress"),): 1.0,
    }
    m.set_readiness({"kafka": True, "redis": True, "model": True})  # `segstream api`: no worker
    assert _named(m, "segstream_ready") == {
        (("check", "kafka"),): 1.0,
        (("check", "redis"),): 1.0,
        (("check", "model"),): 1.0,
    }
