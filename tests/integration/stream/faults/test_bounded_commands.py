"""Every command that talks to Kafka or Redis ends within ``SEGSTREAM_COMMAND_TIMEOUT_S``.

Each verb runs as an operator runs it (``python -m segstream.cli``, in its own process) against
a dependency that is **down** (nothing listens on its port) or **paused** (a real server
SIGSTOPped: connections are accepted, nothing is answered, the case that hung ``segstream lag``
for minutes). It must exit with status 2 and a message naming the dependency's setting, no
traceback, within the limit plus the backstop plus generous slack for a loaded machine (the
bound is a behaviour, not a speed target).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from segstream.cli.deadline import BACKSTOP_S
from segstream.services.kafka import KafkaBroker
from segstream.services.redis import RedisServer
from tests.integration.stream.conftest import REPO, Dataset
from tests.integration.stream.faults.conftest import paused, server_settings
from tests.ports import free_port

TIMEOUT_S = 2.0
"""Short: every paused case waits it out (12 of them), and what is tested is that it ends."""
SLACK_S = 60.0
"""Interpreter start-up and imports on a machine shared by many test sessions."""
BOUND_S = TIMEOUT_S + BACKSTOP_S + SLACK_S

KAFKA_SETTING = "SEGSTREAM_KAFKA_BOOTSTRAP_SERVERS"
REDIS_SETTING = "SEGSTREAM_REDIS_URL"


@pytest.fixture(scope="module")
def paused_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A real Redis, SIGSTOPped for the whole module (resumed before it is stopped)."""
    server = RedisServer(*server_settings(tmp_path_factory.mktemp("paused-redis")))
    server.start()
    pid = server.process.pid()
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)
    try:
        yield server
    finally:
        os.kill(pid, signal.SIGCONT)
        server.stop()


def run_bounded(
    args: list[str], dataset: Dataset, *, kafka: str, redis: str
) -> tuple[int, str, float]:
    """``segstream <args>`` with the given dependencies: (exit status, stderr, seconds)."""
    env = {
        **os.environ,
        "SEGSTREAM_COMMAND_TIMEOUT_S": str(TIMEOUT_S),
        KAFKA_SETTING: kafka,
        REDIS_SETTING: redis,
        "SEGSTREAM_MODEL_DIR": str(dataset.models_dir),
        "SEGSTREAM_DRIFT": "river",
    }
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "segstream.cli", *args],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=BOUND_S + 60,  # a hang fails here, with the command named
        check=False,
    )
    return done.returncode, done.stderr, time.monotonic() - started


def assert_bounded(status: int, stderr: str, seconds: float, setting: str, address: str) -> None:
    assert status == 2, stderr
    assert seconds < BOUND_S, f"took {seconds:.0f} s: {stderr}"
    assert "Traceback" not in stderr, stderr
    assert setting in stderr and address in stderr, stderr


REDIS_COMMANDS = [
    pytest.param(["segment", "1"], id="segment"),
    pytest.param(["segment", "1", "--json"], id="segment-json"),
    pytest.param(["populations"], id="populations"),
    pytest.param(["populations", "--recount"], id="populations-recount"),
    pytest.param(["reassign"], id="reassign"),
    pytest.param(["drift", "show"], id="drift-show"),
    pytest.param(["drift", "reset"], id="drift-reset"),
]
KAFKA_COMMANDS = [
    pytest.param(["lag"], id="lag"),
    pytest.param(["lag", "--json"], id="lag-json"),
    pytest.param(["forget", "1"], id="forget"),
]


@pytest.mark.parametrize("args", REDIS_COMMANDS)
def test_a_redis_command_with_redis_paused_fails_in_time_naming_it(
    args: list[str], paused_redis: RedisServer, dataset: Dataset
) -> None:
    redis = paused_redis.url
    status, stderr, seconds = run_bounded(
        args, dataset, kafka=f"127.0.0.1:{free_port()}", redis=redis
    )
    assert_bounded(status, stderr, seconds, REDIS_SETTING, redis)


@pytest.mark.parametrize("args", REDIS_COMMANDS)
def test_a_redis_command_with_redis_down_fails_in_time_naming_it(
    args: list[str], dataset: Dataset
) -> None:
    redis = f"redis://127.0.0.1:{free_port()}/0"
    status, stderr, seconds = run_bounded(
        args, dataset, kafka=f"127.0.0.1:{free_port()}", redis=redis
    )
    assert_bounded(status, stderr, seconds, REDIS_SETTING, redis)


@pytest.fixture(scope="module")
def paused_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaBroker]:
    broker = KafkaBroker(*server_settings(tmp_path_factory.mktemp("paused-kafka")))
    broker.start()
    try:
        with paused(broker):
            yield broker
    finally:
        broker.stop()


@pytest.mark.parametrize("args", KAFKA_COMMANDS)
def test_a_kafka_command_with_the_broker_paused_fails_in_time_naming_it(
    args: list[str], paused_broker: KafkaBroker, dataset: Dataset
) -> None:
    bootstrap = paused_broker.bootstrap
    status, stderr, seconds = run_bounded(
        args, dataset, kafka=bootstrap, redis=f"redis://127.0.0.1:{free_port()}/0"
    )
    assert_bounded(status, stderr, seconds, KAFKA_SETTING, bootstrap)


@pytest.mark.parametrize("args", KAFKA_COMMANDS)
def test_a_kafka_command_with_the_broker_down_fails_in_time_naming_it(
    args: list[str], dataset: Dataset
) -> None:
    bootstrap = f"127.0.0.1:{free_port()}"
    status, stderr, seconds = run_bounded(
        args, dataset, kafka=bootstrap, redis=f"redis://127.0.0.1:{free_port()}/0"
    )
    assert_bounded(status, stderr, seconds, KAFKA_SETTING, bootstrap)


def test_replay_with_the_broker_paused_fails_in_time_naming_it(
    paused_broker: KafkaBroker, dataset: Dataset
) -> None:
    bootstrap = paused_broker.bootstrap
    status, stderr, seconds = run_bounded(
        ["replay", "--data", str(dataset.data_dir), "--limit", "50"],
        dataset,
        kafka=bootstrap,
        redis=f"redis://127.0.0.1:{free_port()}/0",
    )
    assert_bounded(status, stderr, seconds, KAFKA_SETTING, bootstrap)


def test_assign_with_drift_with_redis_paused_fails_in_time_naming_it(
    paused_redis: RedisServer, dataset: Dataset, tmp_path: Path
) -> None:
    redis = paused_redis.url
    status, stderr, seconds = run_bounded(
        [
            "assign",
            "--data",
            str(dataset.data_dir),
            "--with-drift",
            "--out",
            str(tmp_path / "a.parquet"),
        ],
        dataset,
        kafka=f"127.0.0.1:{free_port()}",
        redis=redis,
    )
    assert_bounded(status, stderr, seconds, REDIS_SETTING, redis)
