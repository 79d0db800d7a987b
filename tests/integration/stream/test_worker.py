"""The worker end to end on the real Kafka and Redis: parity with the batch pipeline, through
a clean run, a SIGKILL mid-replay, and a rebalance between two workers."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
import redis

from segstream.settings import Settings
from segstream.stream.state.keys import state_prefix
from tests.integration.stream.conftest import (
    FAUST_WORKER,
    Dataset,
    input_lag,
    replay,
    wait_until_assigned,
    wait_until_consumed,
)
from tests.integration.stream.parity import check_parity
from tests.waiting import wait_until

pytestmark = pytest.mark.slow


def _assigned_users(settings: Settings) -> int:
    """Users with a segment in Redis so far (a progress probe while a worker runs)."""
    client = redis.Redis.from_url(settings.redis_url)
    try:
        pattern = state_prefix(settings) + "{u:*}"
        keys = list(client.scan_iter(match=pattern, count=5_000, _type="HASH"))
        pipe = client.pipeline(transaction=False)
        for key in keys:
            pipe.hexists(key, "seg")
        return sum(pipe.execute())
    finally:
        client.close()


def _wait_for_progress(settings: Settings, users: int, timeout_s: float = 120.0) -> None:
    wait_until(
        lambda: _assigned_users(settings) >= users,
        timeout_s,
        f"fewer than {users} users assigned in time",
        interval_s=0.2,
    )


DEPTHS = pytest.mark.parametrize(
    "depth", [1, 2], ids=["one batch in hand", "two batches overlapping"]
)
"""SEGSTREAM_PIPELINE_DEPTH: the sequential default, and the overlap (worker/batching.py)."""


@DEPTHS
def test_replayed_dataset_matches_the_batch_pipeline(
    stream_settings: Settings, dataset: Dataset, start_worker, tmp_path: Path, depth: int
) -> None:
    stream_settings = stream_settings.model_copy(update={"pipeline_depth": depth})
    replay(stream_settings, dataset.plan)
    worker = start_worker(stream_settings)
    wait_until_consumed(stream_settings, [worker])
    assert worker.stop(signal.SIGTERM) == 0, worker.log_tail()
    check_parity(stream_settings, dataset, tmp_path)


@DEPTHS
def test_worker_killed_mid_replay_resumes_with_nothing_counted_twice_or_lost(
    stream_settings: Settings, dataset: Dataset, start_worker, tmp_path: Path, depth: int
) -> None:
    stream_settings = stream_settings.model_copy(update={"pipeline_depth": depth})
    replay(stream_settings, dataset.plan)
    first = start_worker(stream_settings)
    _wait_for_progress(stream_settings, len(dataset.features) // 3)
    assert first.stop(signal.SIGKILL) == -signal.SIGKILL
    # Killed before its last commit: the next worker takes over records, some of them already
    # applied (the fences' case) and the rest new. Not "fewer users than all assigned": one
    # loaded run found all 6,374 assigned at the kill, which the users topic alone gives while
    # orders are still pending.
    assert input_lag(stream_settings) > 0, "killed after the last commit"
    second = start_worker(stream_settings)
    wait_until_consumed(stream_settings, [second])
    assert second.stop(signal.SIGTERM) == 0, second.log_tail()
    check_parity(stream_settings, dataset, tmp_path)


def test_two_workers_share_partitions_and_survive_one_leaving(
    stream_settings: Settings, dataset: Dataset, start_worker, tmp_path: Path
) -> None:
    # One started the Faust way, one with `segstream worker`: the same app, one group.
    one, two = start_worker(stream_settings, FAUST_WORKER), start_worker(stream_settings)
    wait_until_assigned([one, two])  # both in the group before the events, so both get work
    replay(stream_settings, dataset.plan, rate=8_000)
    _wait_for_progress(stream_settings, len(dataset.features) // 3)
    assert two.stop(signal.SIGTERM) == 0, two.log_tail()  # rebalance: `one` takes all
    wait_until_consumed(stream_settings, [one])
    assert one.stop(signal.SIGTERM) == 0, one.log_tail()
    assert "input partitions assigned: users" in two.log_tail(400), "two never got work"
    check_parity(stream_settings, dataset, tmp_path)
