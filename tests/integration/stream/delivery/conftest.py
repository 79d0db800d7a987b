"""Deliver processes against the real stack and a misbehaving in-process HTTP receiver."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from segstream.settings import Settings
from segstream.stream.kafka.topics import read_all
from tests.integration.stream.conftest import REPO, WorkerProcess, settings_env
from tests.integration.stream.delivery.receiver import SECRET, Receiver
from tests.waiting import wait_until

DELIVER = (sys.executable, "-m", "segstream.cli", "deliver")


def write_config(path: Path, receiver: Receiver, destinations: dict[str, dict[str, Any]]) -> Path:
    """A TOML config of ``destinations`` (name -> extra fields), each POSTing to its own path
    of ``receiver``, signed with the receiver's secret."""
    lines = []
    for name, extra in destinations.items():
        lines += [
            "[[destination]]",
            f'name = "{name}"',
            f'url = "{receiver.url(name)}"',
            f'secret = "{SECRET}"',
        ]
        lines += [f"{key} = {json.dumps(value)}" for key, value in extra.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def deliver_settings(settings: Settings, config: Path, tmp_path: Path) -> Settings:
    """``settings`` with the delivery config and a dead-letter topic of the test's own."""
    return settings.model_copy(
        update={
            "delivery_config": config,
            "topic_delivery_dead_letters": f"{settings.topic_dead_letters}-delivery",
            "delivery_http_port": 0,
        }
    )


@pytest.fixture
def start_deliver(tmp_path: Path) -> Iterator[Callable[..., WorkerProcess]]:
    """Factory: ``start_deliver(settings) -> process`` running ``segstream deliver``; all are
    SIGKILLed at teardown."""
    started: list[WorkerProcess] = []

    def start(settings: Settings) -> WorkerProcess:
        process = WorkerProcess(settings, tmp_path / f"deliver-{len(started)}.log", DELIVER)
        started.append(process)
        return process

    yield start
    for process in started:
        process.stop(9)


def run_deliver(settings: Settings, *args: str, timeout_s: float = 300) -> tuple[int, Any, str]:
    """``segstream deliver <args>`` to its end: exit code, its JSON report (or None), stderr."""
    done = subprocess.run(
        [*DELIVER, *args],
        env=settings_env(settings),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    report = json.loads(done.stdout) if done.stdout.strip().startswith("{") else None
    return done.returncode, report, done.stderr


def changes_by_key(settings: Settings) -> dict[str, dict[str, Any]]:
    """Every change of ``segment-changes`` by event id."""
    records = asyncio.run(read_all(settings, settings.topic_segment_changes))
    return {c["event_id"]: c for c in (json.loads(r.value) for r in records)}


def wait_for(
    condition: Callable[[], bool],
    what: str,
    processes: list[WorkerProcess],
    timeout_s: float = 300.0,
) -> None:
    """Poll ``condition`` until true; fail after ``timeout_s`` or when a process died."""

    def met() -> bool:
        if condition():
            return True
        for process in processes:  # a dead process fails at once, with its log
            code = process.process.poll()
            assert code is None, f"{process.log_path.name} exited {code}:\n{process.log_tail()}"
        return False

    wait_until(
        met,
        timeout_s,
        lambda: f"waiting for {what}:\n" + "\n".join(p.log_tail() for p in processes),
        interval_s=0.3,
    )


def check_received(
    events: list[dict[str, Any]], changes: dict[str, dict[str, Any]], final: dict[int, int]
) -> None:
    """What one destination received, against ``segment-changes`` and the batch's answer:

    - a duplicate is only ever a re-send: one idempotency key, one payload;
    - per user, the first receipts of the keys come in sequence order, 1..n without a gap;
    - every change was received (nothing lost), nothing else was;
    - each user's last delivered segment is the batch's.
    """
    first: dict[str, dict[str, Any]] = {}
    order: dict[int, list[int]] = {}
    for event in events:
        earlier = first.setdefault(event["idempotency_key"], event)
        assert earlier == event, f"one key, two payloads: {earlier} / {event}"
        if earlier is event:
            order.setdefault(event["user_id"], []).append(event["sequence"])
    out_of_order = {u: s for u, s in order.items() if s != list(range(1, len(s) + 1))}
    assert not out_of_order, (
        f"{len(out_of_order)} users out of order: {list(out_of_order.items())[:3]}"
    )
    assert set(first) == set(changes), (
        f"{len(set(changes) - set(first))} changes never delivered, "
        f"{len(set(first) - set(changes))} unknown ones delivered"
    )
    for key, event in first.items():
        assert event["segment"] == changes[key]["segment"]
    last = {
        u: e["segment"]
        for u, e in ((ev["user_id"], ev) for ev in first.values())
        if e["sequence"] == len(order[u])
    }
    assert last == final
