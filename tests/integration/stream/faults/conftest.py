"""Servers of the fault tests' own: a broker to SIGKILL and SIGSTOP, a Redis to starve.

The session's Kafka and Redis are shared by every test, so a test that kills or starves a
server gets one of its own, started by the product's own ``segstream.services`` code.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from segstream.services.kafka import KafkaBroker
from segstream.services.redis import RedisServer
from segstream.stream.lifecycle.replay import ReplayPlan
from tests.integration.stacks import Private, private_settings, start_again
from tests.integration.stream.conftest import WorkerProcess
from tests.waiting import wait_until


def server_settings(tmp: Path) -> Private:
    """Settings of a private broker and Redis under ``tmp``, on free ports (not started)."""
    return private_settings(tmp)


@pytest.fixture(scope="module")
def own_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaBroker]:
    """A broker of this module's own (its tests kill and pause it)."""
    broker = KafkaBroker(*server_settings(tmp_path_factory.mktemp("own-kafka")))
    broker.start()
    try:
        yield broker
    finally:
        pid = broker.process.pid()
        if pid is not None:
            os.kill(pid, signal.SIGCONT)  # a test that paused it may have failed
        broker.stop()


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A Redis of this test's own, started."""
    server = RedisServer(*server_settings(tmp_path / "own-redis"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


def kill_broker(broker: KafkaBroker) -> None:
    """SIGKILL the broker (a crash: no clean shutdown) and wait until it is gone."""
    pid = broker.process.pid()
    assert pid is not None, "the broker is not running"
    os.kill(pid, signal.SIGKILL)
    wait_until(
        lambda: not broker.process.is_running(), 30, "the broker survived SIGKILL", interval_s=0.05
    )


def restart_broker(broker: KafkaBroker, timeout_s: float = 60.0) -> None:
    """Start the killed broker again, once its ports are free (see ``start_again``)."""
    start_again(broker, timeout_s)


@contextlib.contextmanager
def paused(broker: KafkaBroker) -> Iterator[None]:
    """The broker SIGSTOPped (alive, connections open, answering nothing) for the block."""
    pid = broker.process.pid()
    assert pid is not None, "the broker is not running"
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


def chunks(plan: ReplayPlan, n: int) -> list[ReplayPlan]:
    """``plan`` cut into ``n`` consecutive parts (publication order kept)."""
    size = -(-len(plan.events) // n)
    return [
        dataclasses.replace(plan, events=plan.events[i : i + size])
        for i in range(0, len(plan.events), size)
    ]


def http_get(worker: WorkerProcess, path: str, timeout_s: float = 5.0) -> tuple[int, str]:
    """``(status, body)`` of ``GET path`` on the worker's HTTP side."""
    url = f"http://127.0.0.1:{worker.http_port}{path}"
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def metric(worker: WorkerProcess, name: str) -> float:
    """The sum of every sample of series ``name`` on the worker's ``/metrics``."""
    status, body = http_get(worker, "/metrics")
    assert status == 200, body
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in body.splitlines()
        if line.startswith(name) and not line.startswith("#")
    )


def readiness(worker: WorkerProcess) -> tuple[int, dict[str, Any]]:
    """``(status, document)`` of the worker's ``/readyz``."""
    status, body = http_get(worker, "/readyz", timeout_s=10.0)
    return status, json.loads(body)


def wait_for(
    check: Callable[[], bool],
    timeout_s: float,
    what: str,
    interval_s: float = 0.5,
    worker: WorkerProcess | None = None,
) -> None:
    """Poll ``check`` until true; fail naming ``what`` (and with ``worker``'s log tail, if
    given) after ``timeout_s``."""

    def message() -> str:
        tail = f"\nworker log:\n{worker.log_tail(80)}" if worker is not None else ""
        return f"waiting for {what}{tail}"

    wait_until(check, timeout_s, message, interval_s=interval_s)
