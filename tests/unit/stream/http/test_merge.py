"""Merging the worker processes' ``/metrics`` into one exposition."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from segstream.stream.http.merge import (
    GROUP_WIDE_GAUGES,
    PER_PROCESS_GAUGES,
    MetricsMerger,
    parse_exposition,
)
from segstream.stream.http.metrics import Metrics
from segstream.stream.kafka.lag import PartitionLag


def _samples(exposition: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(exposition.decode())
        for s in family.samples
    }


def _lag(lag: int) -> list[PartitionLag]:
    return [
        PartitionLag("orders", 0, committed=10, start=0, end=10 + lag, lag=lag, seconds_behind=1.5)
    ]


def _worker(consumed: int, batch_seconds: float, ready: bool, lag: int = 5) -> str:
    metrics = Metrics()
    metrics.consumed("orders", consumed)
    metrics.observe_batch(batch_seconds, consumed)
    metrics.changes(consumed // 2)
    metrics.set_readiness({"kafka": ready})
    metrics.set_model("v1")
    metrics.set_lag(_lag(lag))
    return metrics.exposition().decode()


class TestMerge:
    def test_counters_and_histograms_are_summed(self) -> None:
        merger = MetricsMerger()
        merger.update(0, 100, _worker(30, 0.004, True))
        merger.update(1, 101, _worker(12, 0.2, True))
        out = _samples(merger.exposition())
        assert out[("segstream_events_consumed_total", (("topic", "orders"),))] == 42
        assert out[("segstream_segment_changes_total", ())] == 15 + 6
        assert out[("segstream_batch_processing_seconds_count", ())] == 2
        assert out[("segstream_batch_processing_seconds_sum", ())] == pytest.approx(0.204)
        assert out[("segstream_batch_processing_seconds_bucket", (("le", "0.005"),))] == 1
        assert out[("segstream_batch_processing_seconds_bucket", (("le", "0.25"),))] == 2
        assert out[("segstream_batch_events_sum", ())] == 42

    def test_group_wide_gauges_are_taken_once_not_multiplied(self) -> None:
        merger = MetricsMerger()
        merger.update(1, 101, _worker(1, 0.01, True, lag=9))
        merger.update(0, 100, _worker(1, 0.01, True, lag=5))
        out = _samples(merger.exposition())
        labels = (("partition", "0"), ("topic", "orders"))
        assert out[("segstream_consumer_lag_messages", labels)] == 5  # process 0's reading
        assert not any(_has_process(k) for k in out if k[0].startswith("segstream_consumer"))

    def test_per_process_gauges_are_labelled_by_process(self) -> None:
        merger = MetricsMerger()
        merger.update(0, 100, _worker(1, 0.01, True))
        merger.update(1, 101, _worker(1, 0.01, False))
        out = _samples(merger.exposition())
        assert out[("segstream_ready", (("check", "kafka"), ("process", "0")))] == 1
        assert out[("segstream_ready", (("check", "kafka"), ("process", "1")))] == 0
        info = (("process", "1"), ("version", "v1"))
        assert out[("segstream_model_info", info)] == 1

    def test_a_restarted_process_carries_its_old_counts_so_the_sum_never_goes_down(
        self,
    ) -> None:
        merger = MetricsMerger()
        merger.update(0, 100, _worker(30, 0.01, True))
        merger.update(1, 101, _worker(12, 0.01, True))
        merger.update(1, 202, _worker(2, 0.01, True))  # process 1 died and came back
        out = _samples(merger.exposition())
        assert out[("segstream_events_consumed_total", (("topic", "orders"),))] == 30 + 12 + 2
        assert out[("segstream_batch_events_count", ())] == 3

    def test_the_same_incarnation_scraped_again_replaces_its_figures(self) -> None:
        merger = MetricsMerger()
        merger.update(0, 100, _worker(30, 0.01, True))
        merger.update(0, 100, _worker(31, 0.01, True))
        out = _samples(merger.exposition())
        assert out[("segstream_events_consumed_total", (("topic", "orders"),))] == 31

    def test_created_times_are_the_earliest(self) -> None:
        first = _worker(1, 0.01, True)
        second = _worker(1, 0.01, True)
        merger = MetricsMerger()
        merger.update(0, 100, second)
        merger.update(1, 101, first)
        key = ("segstream_segment_changes_created", ())
        expected = min(_samples(first.encode())[key], _samples(second.encode())[key])
        assert _samples(merger.exposition())[key] == expected

    def test_extra_families_are_appended(self) -> None:
        from prometheus_client.metrics_core import GaugeMetricFamily

        own = GaugeMetricFamily("segstream_worker_processes", "Worker processes.")
        own.add_metric([], 2)
        merger = MetricsMerger()
        merger.update(0, 100, _worker(1, 0.01, True))
        assert _samples(merger.exposition([own]))[("segstream_worker_processes", ())] == 2


def _has_process(key: tuple[str, tuple[tuple[str, str], ...]]) -> bool:
    return any(name == "process" for name, _ in key[1])


def test_every_gauge_the_worker_declares_is_classified_on_purpose() -> None:
    metrics = Metrics()
    gauges = {
        family.name
        for family in parse_exposition(metrics.exposition().decode()).values()
        if family.type == "gauge" and not family.name.endswith("_created")
    }
    # Info families are exposed as gauges too (segstream_model_info).
    assert gauges == GROUP_WIDE_GAUGES | PER_PROCESS_GAUGES
    assert not GROUP_WIDE_GAUGES & PER_PROCESS_GAUGES
