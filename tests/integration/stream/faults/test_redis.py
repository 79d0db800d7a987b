"""Redis out of memory under a running worker: it waits and retries, then catches up losslessly."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
import redis

from segstream.services.redis import RedisServer
from tests.integration.stream.conftest import (
    Dataset,
    WorkerProcess,
    app_settings,
    input_lag,
    replay,
    wait_until_consumed,
)
from tests.integration.stream.faults.conftest import chunks, metric, wait_for
from tests.integration.stream.parity import check_parity

pytestmark = pytest.mark.slow


def test_redis_at_maxmemory_is_waited_out_and_nothing_is_lost(
    own_redis: RedisServer, kafka_bootstrap: str, dataset: Dataset, start_worker, tmp_path: Path
) -> None:
    settings = app_settings(
        kafka_bootstrap,
        own_redis.url,
        model_dir=dataset.models_dir,
        data_dir=tmp_path / "worker-data",
        batch_size=500,
    )
    client = redis.Redis.from_url(own_redis.url)
    client.config_set("maxmemory-policy", "noeviction")
    first, rest = chunks(dataset.plan, 4)[0], chunks(dataset.plan, 4)[1:]
    worker: WorkerProcess = start_worker(settings)
    replay(settings, first)
    wait_until_consumed(settings, [worker])
    used = int(client.info("memory")["used_memory"])
    client.config_set("maxmemory", used + 256 * 1024)  # full within a few batches
    for part in rest:
        replay(settings, part)
    wait_for(
        lambda: metric(worker, "segstream_redis_retries_total") >= 3,
        120,
        "the worker to retry Redis's OOM replies",
    )
    assert worker.process.poll() is None, worker.log_tail()
    assert input_lag(settings) > 0  # it waits: nothing skipped while Redis refuses writes
    assert "OutOfMemoryError" in worker.log_tail(400)
    client.config_set("maxmemory", 0)
    wait_until_consumed(settings, [worker], timeout_s=240)
    assert worker.stop(signal.SIGTERM) == 0, worker.log_tail()
    client.close()
    check_parity(settings, dataset, tmp_path)
