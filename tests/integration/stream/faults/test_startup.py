"""A dependency down at start-up: the worker waits for it, or exits 2 naming the setting."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from segstream.services.redis import RedisServer
from segstream.settings import Settings
from tests.integration.stream.conftest import (
    REPO,
    SEGSTREAM_WORKER,
    WorkerProcess,
    settings_env,
)
from tests.integration.stream.faults.conftest import server_settings, wait_for
from tests.ports import free_port


def test_worker_started_before_redis_waits_for_it_and_comes_up(
    stream_settings: Settings, start_worker, tmp_path: Path
) -> None:
    redis_server = RedisServer(*server_settings(tmp_path / "late-redis"))
    settings = stream_settings.model_copy(update={"redis_url": redis_server.url})
    worker: WorkerProcess = start_worker(settings)
    try:
        wait_for(
            lambda: "waiting for Redis at" in worker.log_tail(200),
            30,
            "the worker to say it waits for Redis",
        )
        time.sleep(3)  # the behaviour: it keeps waiting for Redis (3 s of it), it does not exit
        assert worker.process.poll() is None, worker.log_tail()
        redis_server.start()
        wait_for(
            lambda: "input partitions assigned" in worker.log_tail(400),
            90,
            "the worker to join its group once Redis is up",
        )
        log = worker.log_tail(400)
        assert "ConnectionError" in log  # the cause is named, with its text
        assert "retry" in log
        assert worker.stop() == 0, worker.log_tail()
    finally:
        redis_server.stop()


def _run_worker(settings: Settings, timeout_s: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        list(SEGSTREAM_WORKER),
        env=settings_env(settings.model_copy(update={"http_port": free_port()})),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )


def test_redis_that_never_comes_exits_2_naming_the_setting(stream_settings: Settings) -> None:
    settings = stream_settings.model_copy(
        update={"redis_url": f"redis://127.0.0.1:{free_port()}/0", "startup_timeout_s": 4.0}
    )
    started = time.monotonic()
    done = _run_worker(settings, timeout_s=60)
    assert done.returncode == 2, done.stderr
    assert time.monotonic() - started < 40
    assert "waiting for Redis at" in done.stderr
    assert "SEGSTREAM_STARTUP_TIMEOUT_S" in done.stderr
    assert "Traceback" not in done.stderr


def test_kafka_that_never_comes_exits_2_naming_the_setting(stream_settings: Settings) -> None:
    settings = stream_settings.model_copy(
        update={"kafka_bootstrap_servers": f"127.0.0.1:{free_port()}", "startup_timeout_s": 4.0}
    )
    done = _run_worker(settings, timeout_s=90)
    assert done.returncode == 2, done.stderr
    assert "waiting for Kafka at" in done.stderr
    assert "SEGSTREAM_STARTUP_TIMEOUT_S" in done.stderr
    assert "Traceback" not in done.stderr
