"""Failover on the real clusters: three workers in one group over 12 partitions replay the
dataset while a Redis primary is SIGKILLed (its replica promoted) and a broker is SIGKILLed
and later restarted; afterwards every user has the batch's features and segment, and no
change event is lost (each user's sequence numbers are gap-free, the last is the batch's).

The workers run with the cluster defaults: ``SEGSTREAM_REDIS_MIN_REPLICAS`` unset (1, so no
batch is acked before a replica has its writes) and replication factor 3 (min ISR 2), as the
Redis ACL user of docs/operations.md (``segstream.stream.state.acl``): the cluster client's
discovery, the replica check, WAIT and its marker, the failover's slot-map refreshes must all
be allowed to it, and no node may log a refusal (``ACL LOG``).
"""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from tests.integration.stream.acl_user import confine
from tests.integration.stream.cluster.conftest import Clusters
from tests.integration.stream.conftest import (
    Dataset,
    WorkerProcess,
    input_lag,
    replay,
    wait_until_consumed,
)
from tests.integration.stream.faults.conftest import chunks, wait_for
from tests.integration.stream.parity import check_parity, check_sequences

pytestmark = pytest.mark.slow

WORKERS = 3
PARTITIONS = 12
KILLED_BROKER = 2


def test_three_workers_keep_parity_through_a_redis_primary_and_a_broker_crash(
    clusters: Clusters,
    dataset: Dataset,
    start_worker,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    settings = clusters.worker_settings(dataset.models_dir, tmp_path / "worker-data", PARTITIONS)
    user = confine(request, settings.app_id, [node.port for node in clusters.redis.nodes])
    settings = user.settings(settings)
    first, second, third = chunks(dataset.plan, 3)
    workers: list[WorkerProcess] = [start_worker(settings) for _ in range(WORKERS)]
    replay(settings, first)
    wait_for(
        lambda: input_lag(settings) < len(first.events) * 0.8,
        120,
        "the workers to make progress",
    )

    # (a) a Redis primary crashes mid-replay; not the seed node, which every client knows.
    victim = next(p for p in clusters.redis.primaries() if p != clusters.redis.nodes[0].port)
    failover = clusters.redis.kill_primary(victim)
    assert failover.promoted in clusters.redis.primaries()
    replay(settings, second)
    # The promoted primary has no replica: with MIN_REPLICAS=1 its slots wait for one.
    clusters.redis.node(victim).start()
    user.create_on(victim)  # restarted, it forgot the user (no aclfile here)
    clusters.redis.wait_healthy(60)

    # (b) a broker crashes mid-replay and comes back later.
    clusters.kafka.kill(KILLED_BROKER)
    replay(settings, third)
    wait_for(
        lambda: input_lag(settings) < len(third.events),
        120,
        "the workers to go on with a broker down",
    )
    clusters.kafka.restart(KILLED_BROKER)

    wait_until_consumed(settings, workers, timeout_s=240)
    # /metrics needs population counts, which do not run on a Redis Cluster yet: the logs.
    timeouts = sum(w.log_path.read_text().count("SEGSTREAM_REDIS_WAIT_TIMEOUT_MS") for w in workers)
    print(f"Redis failover in {failover.seconds:.1f} s; WAIT timeouts logged: {timeouts}")
    for worker in workers:
        assert worker.stop(signal.SIGTERM) == 0, worker.log_tail()
    final = check_parity(settings, dataset, tmp_path)
    check_sequences(settings, final)
    assert user.refusals() == []
