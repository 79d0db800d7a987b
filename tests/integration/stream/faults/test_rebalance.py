"""A rebalance while the first worker's stream buffer is full: both workers go on, parity holds."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from segstream.settings import Settings
from segstream.stream.worker.app import stream_buffer_size
from tests.integration.stream.conftest import (
    Dataset,
    WorkerProcess,
    input_lag,
    replay,
    wait_until_consumed,
)
from tests.integration.stream.faults.conftest import wait_for
from tests.integration.stream.parity import check_parity

pytestmark = pytest.mark.slow


def test_worker_joining_while_the_buffer_is_full_loses_nothing(
    stream_settings: Settings, dataset: Dataset, start_worker, tmp_path: Path
) -> None:
    # Tiny batches: each is slow for its size, so fetching runs far ahead and the worker's
    # queue (two batches) stays full while the first worker works: the fetcher's hand-over
    # waits for room when the second worker's join suspends the flow.
    settings = stream_settings.model_copy(update={"batch_size": 20})
    buffer = stream_buffer_size(settings.batch_size)
    replay(settings, dataset.plan)
    one: WorkerProcess = start_worker(settings)
    wait_for(
        lambda: "input partitions assigned: users [0, 1, 2, 3]" in one.log_tail(400),
        90,
        "the first worker to own every partition",
    )
    wait_for(lambda: input_lag(settings) < len(dataset.plan.events), 90, "a first commit")
    assert input_lag(settings) > 2 * buffer, "too little left to keep the buffer full"
    two: WorkerProcess = start_worker(settings)  # joins: a rebalance under a full buffer
    wait_for(
        lambda: (
            "input partitions assigned: users [" in two.log_tail(400)
            and "users []" not in two.log_tail(400)
        ),
        120,
        "the second worker to get partitions",
    )
    wait_until_consumed(settings, [one, two], timeout_s=300)
    assert one.stop(signal.SIGTERM) == 0, one.log_tail()
    assert two.stop(signal.SIGTERM) == 0, two.log_tail()
    check_parity(settings, dataset, tmp_path)
