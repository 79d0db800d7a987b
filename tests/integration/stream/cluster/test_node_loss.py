"""One node lost for good, the stream goes on: two workers in one group over 6 partitions, with
the cluster defaults (``SEGSTREAM_REDIS_MIN_REPLICAS`` unset: 1; topics RF 3, min ISR 2).

A Redis primary is SIGKILLed and left down: its replica is promoted with no replica of its
own, so its writes cannot be WAITed for; the workers write it degraded, say so on ``/readyz``
and ``segstream_redis_degraded``, and consume every record. Then a broker is SIGKILLed and
left down: the workers consume every record again. Afterwards every user has the batch's
features and segment, and each user's change events are gap-free (nothing acked is lost).
The nodes are brought back at the end only, for the session's other cluster tests.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.stream.cluster.conftest import Clusters
from tests.integration.stream.conftest import (
    Dataset,
    WorkerProcess,
    input_lag,
    replay,
    wait_until_consumed,
)
from tests.integration.stream.faults.conftest import (
    chunks,
    http_get,
    metric,
    readiness,
    wait_for,
)
from tests.integration.stream.parity import check_parity, check_sequences

pytestmark = pytest.mark.slow

WORKERS = 2
PARTITIONS = 6
KILLED_BROKER = 1


@pytest.fixture
def restored(clusters: Clusters) -> Iterator[Clusters]:
    """The clusters, every node started again and healthy once the test is over."""
    yield clusters
    for node_id, node in clusters.kafka.nodes.items():
        if not node.process.is_running():
            clusters.kafka.restart(node_id)
    clusters.redis.start()


def degraded_series(worker: WorkerProcess) -> dict[str, float]:
    """``segstream_redis_degraded`` of the worker's ``/metrics``: primary -> value."""
    status, body = http_get(worker, "/metrics")
    assert status == 200, body
    series = {}
    for line in body.splitlines():
        if line.startswith("segstream_redis_degraded{"):
            labels, value = line.rsplit(" ", 1)
            series[labels.split('primary="', 1)[1].split('"', 1)[0]] = float(value)
    return series


def test_a_redis_primary_then_a_broker_lost_for_good_leave_the_stream_consuming(
    restored: Clusters, dataset: Dataset, start_worker, tmp_path: Path
) -> None:
    clusters = restored
    settings = clusters.worker_settings(dataset.models_dir, tmp_path / "worker-data", PARTITIONS)
    first, second, third = chunks(dataset.plan, 3)
    workers = [start_worker(settings) for _ in range(WORKERS)]
    replay(settings, first)
    wait_for(
        lambda: input_lag(settings) < len(first.events) * 0.8,
        300,  # slack: worker start-up on a loaded host
        "the workers to make progress",
    )

    # (a) a Redis primary crashes and stays down; not the seed node, which every client knows.
    victim = next(p for p in clusters.redis.primaries() if p != clusters.redis.nodes[0].port)
    killed_at = time.monotonic()
    failover = clusters.redis.kill_primary(victim)
    replay(settings, second)
    wait_until_consumed(settings, workers, timeout_s=300)
    redis_to_lag_0 = time.monotonic() - killed_at
    promoted = f":{failover.promoted}"
    for worker in workers:
        status, document = readiness(worker)
        assert status == 503, document
        (reason,) = [r for r in document["reasons"] if r.startswith("redis_replicas:")]
        assert promoted in reason and "SEGSTREAM_REDIS_MIN_REPLICAS" in reason, reason
        degraded = [p for p, v in degraded_series(worker).items() if v == 1]
        assert len(degraded) == 1 and degraded[0].endswith(promoted), degraded
        assert worker.process.poll() is None, worker.log_tail()
        # Not a stall: the watchdog counted none, so it stops no worker (no crash loop).
        assert metric(worker, "segstream_stalls_total") == 0, worker.log_tail()
        # One WARNING when the primary turned degraded, however many batches wrote it.
        assert worker.log_path.read_text().count(f"{promoted} has 0 replica(s) connected") == 1

    # (b) a broker crashes and stays down too.
    killed_at = time.monotonic()
    clusters.kafka.kill(KILLED_BROKER)
    replay(settings, third)
    wait_until_consumed(settings, workers, timeout_s=300)
    broker_to_lag_0 = time.monotonic() - killed_at
    assert input_lag(settings) == 0
    print(
        f"Redis failover in {failover.seconds:.1f} s; kill to lag 0: Redis primary "
        f"{redis_to_lag_0:.1f} s ({len(second.events):,} records replayed), broker "
        f"{broker_to_lag_0:.1f} s ({len(third.events):,} records replayed)"
    )
    for worker in workers:
        assert worker.stop(signal.SIGTERM) == 0, worker.log_tail()
    final = check_parity(settings, dataset, tmp_path)
    check_sequences(settings, final)
