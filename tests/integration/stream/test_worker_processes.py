"""``segstream worker --processes 2`` on the real Kafka and Redis: both processes own input
partitions of the one group, parity with the batch holds, the one ``/metrics`` sums the
children's work, SIGTERM stops every process, a SIGKILLed child is restarted with nothing
lost, and a SIGKILLed supervisor leaves no worker behind."""

from __future__ import annotations

import json
import os
import re
import signal
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from segstream.settings import Settings
from tests.integration.stream.background import BackgroundReplay
from tests.integration.stream.conftest import (
    SEGSTREAM_WORKER,
    Dataset,
    WorkerProcess,
    replay,
    wait_until_consumed,
)
from tests.integration.stream.parity import check_parity
from tests.waiting import wait_until

pytestmark = pytest.mark.slow

TWO_PROCESSES = (*SEGSTREAM_WORKER, "--processes", "2")
KILL_REPLAY_RATE = 2_000
"""Events a second of the replay a process is killed in: under two processes' throughput."""
_ASSIGNED = re.compile(
    r"\[worker (\d)\] .*input partitions assigned: users \[([\d, ]*)\], orders \[([\d, ]*)\]"
)


def _get(port: int, path: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _livez(worker: WorkerProcess) -> list[dict[str, Any]]:
    status, body = _get(worker.http_port, "/livez")
    assert status == 200, body
    processes: list[dict[str, Any]] = json.loads(body)["processes"]
    return processes


def _ready(worker: WorkerProcess) -> bool:
    assert worker.process.poll() is None, worker.log_tail()
    try:
        return _get(worker.http_port, "/readyz")[0] == 200
    except OSError:  # not listening yet
        return False


def _consumed(port: int) -> float:
    """``segstream_events_consumed_total`` summed over topics, from ``/metrics`` on ``port``."""
    status, body = _get(port, "/metrics")
    assert status == 200, body
    return sum(
        sample.value
        for family in text_string_to_metric_families(body.decode())
        if family.name == "segstream_events_consumed"
        for sample in family.samples
        if sample.name == "segstream_events_consumed_total"
    )


def _assignments(worker: WorkerProcess) -> dict[int, tuple[set[int], set[int]]]:
    """Each child's latest logged input partitions: index -> (users, orders)."""
    latest: dict[int, tuple[set[int], set[int]]] = {}
    for match in _ASSIGNED.finditer(worker.log_path.read_text(errors="replace")):
        users, orders = ({int(p) for p in g.split(",") if p.strip()} for g in match.group(2, 3))
        latest[int(match.group(1))] = (users, orders)
    return latest


def _both_own_partitions(worker: WorkerProcess) -> bool:
    latest = _assignments(worker)
    return len(latest) == 2 and all(users and orders for users, orders in latest.values())


def _gone(pids: list[int]) -> bool:
    """No process of ``pids`` runs (one that exited but is not reaped yet, a zombie, counts
    as gone: whoever adopted it reaps it in its own time)."""
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
        except (FileNotFoundError, ProcessLookupError):
            continue
        if state not in ("Z", "X"):
            return False
    return True


def test_two_processes_share_every_partition_and_one_metrics_sums_their_work(
    stream_settings: Settings, dataset: Dataset, start_worker, tmp_path: Path
) -> None:
    supervisor = start_worker(stream_settings, TWO_PROCESSES)
    wait_until(lambda: _both_own_partitions(supervisor), 180, supervisor.log_tail, interval_s=0.5)
    wait_until(lambda: _ready(supervisor), 60, supervisor.log_tail, interval_s=0.5)
    assert "2 worker process(es) as asked" in supervisor.log_tail(400)
    latest = _assignments(supervisor)
    (users_0, orders_0), (users_1, orders_1) = latest[0], latest[1]
    everything = set(range(stream_settings.topic_partitions))
    assert users_0 | users_1 == everything and not users_0 & users_1
    assert orders_0 | orders_1 == everything and users_0 == orders_0  # co-partitioned

    replay(stream_settings, dataset.plan)
    wait_until_consumed(stream_settings, [supervisor])

    children = _livez(supervisor)
    assert len(children) == 2 and all(c["state"] == "running" for c in children)
    own = [_consumed(c["port"]) for c in children]
    merged = _consumed(supervisor.http_port)
    # No rebalance during the replay: each record was consumed once, by one of the two.
    assert merged == sum(own) == len(dataset.plan.events)
    assert all(n > 0 for n in own)
    status, body = _get(supervisor.http_port, "/status.json")
    assert status == 200, body
    document = json.loads(body)
    assert [(p["process"], p["ready"]) for p in document["processes"]] == [(0, True), (1, True)]
    assert document["throughput"]["this_process"]["events_total"] == len(dataset.plan.events)
    status, body = _get(supervisor.http_port, "/segments")  # the API, passed on to a child
    assert status == 200 and json.loads(body)["model_version"] == dataset.model.version, body

    pids = [c["pid"] for c in children]
    assert supervisor.stop(signal.SIGTERM) == 0, supervisor.log_tail()
    assert _gone(pids), "a worker process outlived its supervisor's clean stop"
    assert supervisor.log_tail(200).count("Stopping...") >= 2  # both left the group cleanly
    check_parity(stream_settings, dataset, tmp_path)


def test_a_killed_process_is_restarted_and_the_stream_completes_with_nothing_lost(
    stream_settings: Settings,
    dataset: Dataset,
    start_worker,
    background_replays: list[BackgroundReplay],
    tmp_path: Path,
) -> None:
    supervisor = start_worker(stream_settings, TWO_PROCESSES)
    wait_until(lambda: _both_own_partitions(supervisor), 180, supervisor.log_tail, interval_s=0.5)
    # Paced, so the kill lands mid-stream whatever the dataset's size: three quarters of the
    # events are still to be sent when the victim dies.
    flow = BackgroundReplay(stream_settings, dataset.plan.events, rate=KILL_REPLAY_RATE)
    background_replays.append(flow)
    wait_until(
        lambda: _consumed(supervisor.http_port) >= len(dataset.plan.events) // 4,
        120,
        supervisor.log_tail,
        interval_s=0.2,
    )
    victim = _livez(supervisor)[1]
    counted_before = _consumed(supervisor.http_port)
    os.kill(victim["pid"], signal.SIGKILL)

    def restarted() -> bool:
        child = _livez(supervisor)[1]
        return child["restarts"] == 1 and child["state"] == "running"

    wait_until(restarted, 120, supervisor.log_tail, interval_s=0.5)
    assert "worker process 1 exited with code -9" in supervisor.log_tail(400)
    flow.join()
    wait_until_consumed(stream_settings, [supervisor])
    # The merged counter carries the dead process's last scraped figures, so it never goes
    # down and grows with the restarted process's work. It is not a count of every record:
    # what the victim processed and committed after its last scrape is in neither process's
    # figures (segstream/stream/http/merge.py); nothing lost is what check_parity proves.
    counted_after = _consumed(supervisor.http_port)
    assert counted_after > counted_before >= len(dataset.plan.events) // 4
    assert supervisor.stop(signal.SIGTERM) == 0, supervisor.log_tail()
    check_parity(stream_settings, dataset, tmp_path)


def test_a_killed_supervisor_leaves_no_worker_process(
    stream_settings: Settings, start_worker
) -> None:
    supervisor = start_worker(stream_settings, TWO_PROCESSES)
    wait_until(lambda: _ready(supervisor), 180, supervisor.log_tail, interval_s=0.5)
    pids = [c["pid"] for c in _livez(supervisor)]
    assert len(pids) == 2 and all(pids)
    assert supervisor.stop(signal.SIGKILL) == -signal.SIGKILL
    wait_until(lambda: _gone(pids), 60, f"worker processes {pids} outlived the supervisor")
