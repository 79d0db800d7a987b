"""Broker crashes and hangs under a running worker: commits resume, stalls stop it, stops are
bounded. The broker is this module's own (``own_broker``): the session's is shared."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from pathlib import Path

import pytest

from segstream.services.kafka import KafkaBroker
from segstream.settings import Settings
from segstream.stream.kafka.lag import read_lag
from tests.integration.stream.background import BackgroundReplay
from tests.integration.stream.conftest import (
    Dataset,
    WorkerProcess,
    app_settings,
    replay,
    wait_until_consumed,
)
from tests.integration.stream.faults.conftest import (
    chunks,
    kill_broker,
    metric,
    paused,
    readiness,
    restart_broker,
    wait_for,
)
from tests.integration.stream.parity import check_parity
from tests.waiting import wait_until

pytestmark = pytest.mark.slow

KILLS = 10
PAUSE_ATTEMPTS = 3
PAUSE_S = 12.0
"""The abandoned-commit test's pauses: the commit deadline (3 s), the commit interval (1 s) and
room for a loaded machine."""
_STALL_EXIT = "stopping it so that it is restarted"
"""The watchdog's words when it stops a stalled worker (segstream/stream/worker/watchdog.py)."""


def _committed(settings: Settings) -> int:
    """Input offsets the group has committed, summed over partitions."""
    snapshot = asyncio.run(
        read_lag(
            settings, settings.app_id, [settings.topic_users, settings.topic_orders], attempts=60
        )
    )
    return snapshot.committed_total


def _abandoned_commits(worker: WorkerProcess) -> int:
    """Commits the worker has logged as abandoned at their deadline so far."""
    return worker.log_path.read_text(errors="replace").count("offset commit abandoned")


def _settings(
    broker: KafkaBroker, redis_url: str, dataset: Dataset, tmp: Path, **more: object
) -> Settings:
    return app_settings(
        broker.bootstrap,
        redis_url,
        model_dir=dataset.models_dir,
        data_dir=tmp / "worker-data",
        batch_size=200,
        **more,
    )


def test_broker_killed_ten_times_commits_resume_and_parity_holds(
    own_broker: KafkaBroker, redis_url: str, dataset: Dataset, start_worker, tmp_path: Path
) -> None:
    settings = _settings(own_broker, redis_url, dataset, tmp_path)
    parts = chunks(dataset.plan, KILLS + 1)
    worker: WorkerProcess = start_worker(settings)
    replay(settings, parts[0])
    wait_for(lambda: _committed(settings) > 0, 120, "the first commit")
    restarted: list[int] = []
    for k in range(KILLS):
        time.sleep(1.0)  # the worker is mid-way through the events just published
        kill_broker(own_broker)
        restart_broker(own_broker)
        mark = _committed(settings)
        replay(settings, parts[k + 1])  # events keep flowing after the restart
        what = f"committed offsets to advance after broker restart {k + 1}"

        def resumed_or_exited(mark: int = mark, worker: WorkerProcess = worker) -> bool:
            return _committed(settings) > mark or worker.process.poll() is not None

        wait_for(resumed_or_exited, 150, what, worker=worker)
        if worker.process.poll() is not None:
            # Seen once in about 50 restarts: aiokafka's consumer kept asking a coordinator it had
            # marked dead (NodeNotReadyError, aio-libs/aiokafka#1133) and never rejoined. The
            # watchdog then stops the worker so that its supervisor restarts it (60 s: the
            # commit deadline and the stall grace); this test is that supervisor, once a kill.
            assert _STALL_EXIT in worker.log_tail(400), worker.log_tail()
            restarted.append(k + 1)
            worker = start_worker(settings)
            wait_for(lambda mark=mark: _committed(settings) > mark, 120, what, worker=worker)
        assert worker.process.poll() is None, worker.log_tail()
    wait_until_consumed(settings, [worker], timeout_s=240)
    print(f"worker restarted by the test after broker restarts {restarted or 'none'}")
    assert worker.stop(signal.SIGTERM) == 0, worker.log_tail()
    check_parity(settings, dataset, tmp_path)


def test_a_commit_abandoned_while_the_broker_hangs_is_made_up_by_the_next_ones(
    own_broker: KafkaBroker,
    redis_url: str,
    dataset: Dataset,
    start_worker,
    background_replays: list[BackgroundReplay],
    tmp_path: Path,
) -> None:
    # The commit in flight when the broker stops answering is abandoned at its deadline; the
    # acks it took must still be committed later, or the group's offsets freeze for good while
    # the worker goes on (a stall grace long enough that the watchdog does not stop it).
    settings = _settings(
        own_broker, redis_url, dataset, tmp_path, commit_deadline_s=3.0, stall_grace_s=600.0
    )
    first, rest = chunks(dataset.plan, 2)
    worker: WorkerProcess = start_worker(settings)
    replay(settings, first)
    wait_for(lambda: _committed(settings) > 0, 120, "the first commit", worker=worker)
    flow = BackgroundReplay(settings, rest.events, rate=300)  # about 35 s of events
    background_replays.append(flow)
    # A commit is abandoned only if one is due while the broker hangs: acks newer than the last
    # commit's start. Acks need the batch's changes delivered, so none come during the pause;
    # the pause must fall while the worker is acking (its commits advancing), and even then it
    # can land just after a commit that covered every ack. So: pause while the commits advance,
    # and if no commit is abandoned within its deadline and the 1 s commit interval, resume and
    # try again. (One CI run paused once before any flow event was processed, and failed.)
    baseline = _abandoned_commits(worker)  # a slow first commit may have been one already
    pauses = 0
    while pauses == 0 or _abandoned_commits(worker) == baseline:
        assert pauses < PAUSE_ATTEMPTS, (
            f"no commit abandoned in {PAUSE_ATTEMPTS} pauses:\n" + worker.log_tail()
        )
        assert flow.error is None and len(flow.sent_at) < len(flow.events), (
            "the flow ended before a commit was abandoned"
        )
        mark = _committed(settings)
        wait_for(
            lambda mark=mark: _committed(settings) > mark,
            120,
            "the worker's commits to advance",
            worker=worker,
        )
        pauses += 1
        with paused(own_broker), contextlib.suppress(AssertionError):  # none this time: again
            wait_until(
                lambda: _abandoned_commits(worker) > baseline,
                PAUSE_S,
                "a commit abandoned",
                interval_s=0.2,
            )
    print(f"a commit was abandoned in pause {pauses} of at most {PAUSE_ATTEMPTS}")
    flow.join(240)
    wait_until_consumed(settings, [worker], timeout_s=240)
    assert worker.stop(signal.SIGTERM) == 0, worker.log_tail()
    check_parity(settings, dataset, tmp_path)


def test_a_stalled_worker_is_not_ready_counts_the_stall_and_exits(
    own_broker: KafkaBroker, redis_url: str, dataset: Dataset, start_worker, tmp_path: Path
) -> None:
    settings = _settings(
        own_broker,
        redis_url,
        dataset,
        tmp_path,
        batch_deadline_s=4.0,
        commit_deadline_s=3.0,
        stall_grace_s=6.0,
        shutdown_timeout_s=5.0,
    )
    worker: WorkerProcess = start_worker(settings)
    replay(settings, chunks(dataset.plan, 4)[0])
    wait_for(lambda: _committed(settings) > 0, 120, "the first commit")
    replay(settings, chunks(dataset.plan, 4)[1])
    with paused(own_broker):
        paused_at = time.monotonic()

        def stalled() -> bool:
            status, document = readiness(worker)
            progress = document["checks"].get("progress", {})
            return status == 503 and not progress.get("ok", True)

        wait_for(stalled, 30, "/readyz to report the stall")
        _, document = readiness(worker)
        assert "SEGSTREAM_" in document["checks"]["progress"]["detail"]
        assert metric(worker, "segstream_stalls_total") >= 1
        try:
            code = worker.process.wait(60)
        except Exception:  # noqa: BLE001 - reported below with the log
            code = None
        assert code is not None, "the stalled worker did not exit:\n" + worker.log_tail()
        assert code != 0, worker.log_tail()
        # deadline (3-4 s) + grace (6 s) + a bounded stop (5 s), with room for a loaded machine
        assert time.monotonic() - paused_at < 45, worker.log_tail()
    assert "worker stalled" in worker.log_tail(400)


def test_sigterm_stops_the_worker_in_bounded_time_while_the_broker_hangs(
    own_broker: KafkaBroker, redis_url: str, dataset: Dataset, start_worker, tmp_path: Path
) -> None:
    settings = _settings(own_broker, redis_url, dataset, tmp_path, shutdown_timeout_s=8.0)
    worker: WorkerProcess = start_worker(settings)
    replay(settings, chunks(dataset.plan, 4)[0])
    wait_for(lambda: _committed(settings) > 0, 120, "the first commit")
    replay(settings, chunks(dataset.plan, 4)[1])
    with paused(own_broker):
        time.sleep(2.0)  # commits and publishing now hang on the silent broker
        started = time.monotonic()
        worker.process.send_signal(signal.SIGTERM)
        try:
            code = worker.process.wait(60)
        except Exception:  # noqa: BLE001 - reported below with the log
            code = None
        took = time.monotonic() - started
    assert code is not None, "SIGTERM was ignored:\n" + worker.log_tail()
    assert took < 8.0 + 10.0, f"stopping took {took:.1f} s:\n{worker.log_tail()}"
