"""The streaming worker on the real stack: a trained dataset, worker processes, topic readers.

Every test gets topics and a consumer group of its own (and so Redis keys of its own, which
are prefixed by the group); the 8,000-user dataset and its model are made once a session.
Workers run as ``python -m segstream.cli worker`` subprocesses, configured through the same
``SEGSTREAM_*`` environment a user would set, so they can be SIGKILLed like a real crash.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import uuid
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from segstream.settings import Settings, as_environment, load_settings
from segstream.stream.kafka.lag import read_lag
from segstream.stream.kafka.topics import ensure_topics
from segstream.stream.lifecycle.replay import ReplayPlan, publish_events, read_replay_plan
from segstream.training.artifact import Model, load_model
from segstream.training.data import DataSource, read_features
from segstream.training.generate import generate_tables, load_catalogue, write_tables
from segstream.training.pipeline import train_to_directory
from segstream.training.train import TrainConfig
from tests.integration.stream.background import BackgroundReplay
from tests.ports import free_port
from tests.waiting import wait_until

REPO = Path(__file__).resolve().parents[3]
PRODUCTS = REPO.parent / "shared" / "data" / "thelook" / "products.parquet"
N_USERS = 8_000


@dataclass(frozen=True)
class Dataset:
    """Generated thelook tables, the model trained on them, and their replay events."""

    data_dir: Path
    models_dir: Path
    model: Model
    features: pd.DataFrame
    """The SQL's feature rows (``read_features``): the users a worker must assign."""
    user_ids: list[int]
    """Every user of the users table."""
    plan: ReplayPlan


@pytest.fixture(scope="session")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Dataset:
    """8,000 generated users (real catalogue when present), trained with k=5."""
    root = tmp_path_factory.mktemp("stream-data")
    products = load_catalogue(PRODUCTS) if PRODUCTS.exists() else None
    tables = generate_tables(N_USERS, seed=7, products=products)
    write_tables(tables, root / "data")
    source = DataSource(path=root / "data")
    # A fixed k and few restarts: what is under test is the stream, not the elbow search.
    config = TrainConfig(k=5, k_values=(5,), n_init=2, silhouette_sample=2_000)
    train_to_directory(source, root / "models", config)
    return Dataset(
        data_dir=root / "data",
        models_dir=root / "models",
        model=load_model(root / "models"),
        features=read_features(source),
        user_ids=tables.users.column("id").to_pylist(),
        plan=read_replay_plan(source),
    )


def app_settings(
    kafka_bootstrap: str,
    redis_url: str,
    *,
    app_prefix: str = "t",
    create_topics: bool = True,
    **overrides: object,
) -> Settings:
    """Settings of a fresh app on the session's stack: an app id (so a consumer group and a
    Redis key prefix) and topics of its own, 4 partitions; ``overrides`` win.

    The topics are made here unless ``create_topics`` is false (a worker then makes them).
    """
    tag = uuid.uuid4().hex[:10]
    values: dict[str, object] = {
        "kafka_bootstrap_servers": kafka_bootstrap,
        "redis_url": redis_url,
        "app_id": f"{app_prefix}{tag}",
        "topic_users": f"users-{tag}",
        "topic_orders": f"orders-{tag}",
        "topic_segment_changes": f"changes-{tag}",
        "topic_user_segments": f"segments-{tag}",
        "topic_dead_letters": f"dead-{tag}",
        "topic_partitions": 4,
        # One process per `segstream worker`, as before --processes existed: the tests start
        # the workers they mean to (test_worker_processes.py asks for a supervisor itself).
        "worker_processes": 1,
        **overrides,
    }
    settings = load_settings(**values)
    if create_topics:
        asyncio.run(ensure_topics(settings))
    return settings


@pytest.fixture
def stream_settings(
    kafka_bootstrap: str, redis_url: str, dataset: Dataset, tmp_path: Path
) -> Settings:
    """Settings of a fresh app: its own group, topics (4 partitions) and Redis key prefix."""
    return app_settings(
        kafka_bootstrap,
        redis_url,
        model_dir=dataset.models_dir,
        data_dir=tmp_path / "worker-data",
        log_level="info",
    )


def settings_env(settings: Settings) -> dict[str, str]:
    """``settings`` as the SEGSTREAM_* environment of a child process."""
    return as_environment(settings, os.environ)


def cli_json(settings: Settings, *args: str, timeout_s: float = 60.0) -> Any:
    """``segstream <args> --json`` run as an operator would, in its own process: the JSON
    document it printed (the test fails on a non-zero exit, with its stderr)."""
    done = subprocess.run(
        [sys.executable, "-m", "segstream.cli", *args, "--json"],
        env=settings_env(settings),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


SEGSTREAM_WORKER = (sys.executable, "-m", "segstream.cli", "worker")
"""The worker as ``segstream worker`` starts it."""
FAUST_WORKER = (
    sys.executable, "-m", "faust", "-L", "uvloop", "-A", "segstream.stream.main:app", "worker",
    "--without-web", "-l", "info",
)  # fmt: skip
"""The same worker started the Faust way (the documented ``faust -A ... worker --without-web``:
without it Faust starts its own web server on port 6066, which segstream does not use)."""


class WorkerProcess:
    """One worker subprocess, logging to a file; always ended by the fixture."""

    def __init__(
        self, settings: Settings, log_path: Path, command: Sequence[str] = SEGSTREAM_WORKER
    ) -> None:
        self.log_path = log_path
        self._log = log_path.open("ab")
        # Each worker serves its HTTP side on a port of its own, as on separate machines.
        # Unset, the process count would follow this machine's cores: one, unless asked.
        one = settings.worker_processes or 1
        settings = settings.model_copy(update={"http_port": free_port(), "worker_processes": one})
        self.http_port = settings.http_port
        self.process = subprocess.Popen(
            list(command),
            env=settings_env(settings),
            cwd=REPO,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 30.0) -> int:
        """Send ``sig`` and wait for the exit; returns the exit code (-9 after SIGKILL)."""
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            return self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait(10)
        finally:
            self._log.close()

    def log_tail(self, lines: int = 40) -> str:
        """The last lines of the worker's output, for failure messages."""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


@pytest.fixture
def start_worker(tmp_path: Path) -> Iterator:
    """Factory: ``start_worker(settings[, command]) -> WorkerProcess``; all are stopped at
    teardown."""
    started: list[WorkerProcess] = []

    def start(settings: Settings, command: Sequence[str] = SEGSTREAM_WORKER) -> WorkerProcess:
        worker = WorkerProcess(settings, tmp_path / f"worker-{len(started)}.log", command)
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop(signal.SIGKILL)


def replay(settings: Settings, plan: ReplayPlan, rate: float | None = None) -> None:
    """Publish ``plan``'s events to the settings' input topics."""
    topics = {"users": settings.topic_users, "orders": settings.topic_orders}
    asyncio.run(publish_events(plan.events, settings=settings, topics=topics, rate=rate))


def input_lag(settings: Settings) -> int:
    """Input records the worker group has not committed yet (all of them before any commit)."""
    snapshot = asyncio.run(
        read_lag(
            settings,
            settings.app_id,
            [settings.topic_users, settings.topic_orders],
            attempts=30,  # the group coordinator may still be starting
        )
    )
    return snapshot.total_lag


_ASSIGNED = re.compile(r"input partitions assigned: users \[(\d|[^\]]*\], orders \[\d)")
"""The worker's log line for an assignment that gave it at least one input partition."""


def wait_until_assigned(workers: list[WorkerProcess], timeout_s: float = 120.0) -> None:
    """Block until every worker has logged input partitions of its own: one group's members
    have all joined and the rebalance between them is done."""
    wait_until(
        lambda: all(_ASSIGNED.search(w.log_path.read_text(errors="replace")) for w in workers),
        timeout_s,
        lambda: (
            "not every worker got input partitions:\n" + "\n".join(w.log_tail() for w in workers)
        ),
        interval_s=0.5,
    )


def wait_until_consumed(
    settings: Settings, workers: list[WorkerProcess], timeout_s: float = 180.0
) -> None:
    """Block until the group has committed every input record; fail if a worker died."""
    lags: list[int] = []

    def caught_up() -> bool:
        lags.append(input_lag(settings))
        if lags[-1] == 0:
            return True
        for worker in workers:
            code = worker.process.poll()
            assert code is None, f"worker exited with {code}:\n{worker.log_tail()}"
        return False

    wait_until(
        caught_up,
        timeout_s,
        lambda: f"still {lags[-1]} records behind:\n" + "\n".join(w.log_tail() for w in workers),
        interval_s=0.5,
    )


@pytest.fixture
def background_replays() -> Iterator[list[BackgroundReplay]]:
    """Replays started by a test, joined at teardown; one that does not end in time is
    reported as a warning (its thread and producer would outlive the test)."""
    started: list[BackgroundReplay] = []
    yield started
    for flow in started:
        if not flow.close():
            warnings.warn(
                f"a background replay still runs after its test ({len(flow.sent_at)} of "
                f"{len(flow.events)} events sent)",
                stacklevel=1,
            )
