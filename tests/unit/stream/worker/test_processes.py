"""Choosing how many worker processes ``segstream worker`` runs."""

from __future__ import annotations

import os

import pytest

from segstream.stream.worker.processes import choose_processes, cpu_quota_cores, usable_cores


class TestDefault:
    def test_one_process_per_core_when_the_partitions_suffice(self) -> None:
        count = choose_processes(None, cores=4, partitions=12)
        assert count.n == 4
        assert count.idle == 0
        assert "one per usable core (4" in count.reason

    def test_capped_by_the_partitions_a_group_can_divide(self) -> None:
        count = choose_processes(None, cores=16, partitions=6)
        assert count.n == 6
        assert count.idle == 0
        assert "one per input partition (6)" in count.reason
        assert "16 usable cores" in count.reason

    def test_one_core_gives_one_process(self) -> None:
        assert choose_processes(None, cores=1, partitions=12).n == 1

    def test_the_reason_names_the_settings_that_choose(self) -> None:
        reason = choose_processes(None, cores=2, partitions=4).reason
        assert "--processes" in reason and "SEGSTREAM_WORKER_PROCESSES" in reason


class TestRequested:
    def test_a_requested_count_is_honoured(self) -> None:
        count = choose_processes(3, cores=16, partitions=12)
        assert (count.n, count.idle) == (3, 0)
        assert "as asked" in count.reason

    def test_more_than_the_partitions_counts_the_idle_ones_and_says_how_to_fix_it(
        self,
    ) -> None:
        count = choose_processes(6, cores=2, partitions=4)
        assert (count.n, count.idle) == (6, 2)
        assert "2 of them will own none" in count.reason
        assert "SEGSTREAM_TOPIC_PARTITIONS" in count.reason

    @pytest.mark.parametrize(
        ("requested", "cores", "partitions"), [(0, 2, 2), (1, 0, 2), (1, 2, 0)]
    )
    def test_non_positive_figures_are_refused(
        self, requested: int, cores: int, partitions: int
    ) -> None:
        with pytest.raises(ValueError, match="positive"):
            choose_processes(requested, cores, partitions)


def test_usable_cores_is_at_most_this_process_affinity() -> None:
    assert 1 <= usable_cores() <= len(os.sched_getaffinity(0))


@pytest.mark.parametrize(
    ("quota", "period", "cores"),
    [("200000", "100000", 2), ("150000", "100000", 2), ("50000", "100000", 1),
     ("max", "100000", None), ("-1", "100000", None), ("", "", None), ("100", "0", None)],
)  # fmt: skip
def test_a_container_cpu_limit_in_whole_cores(quota: str, period: str, cores: int | None) -> None:
    assert cpu_quota_cores(quota, period) == cores
