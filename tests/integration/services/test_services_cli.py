"""`segstream services up | down | status` on ports of its own, as an operator runs it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from segstream.net import port_is_open
from tests.ports import free_port
from tests.waiting import wait_until


def _segstream(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "segstream.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {
        **os.environ,
        "SEGSTREAM_DATA_DIR": str(tmp_path / "data"),
        "SEGSTREAM_KAFKA_PORT": str(free_port()),
        "SEGSTREAM_KAFKA_CONTROLLER_PORT": str(free_port()),
        "SEGSTREAM_REDIS_PORT": str(free_port()),
    }


def test_up_twice_status_down_leaves_nothing_running(env: dict[str, str]) -> None:
    kafka_port, redis_port = int(env["SEGSTREAM_KAFKA_PORT"]), int(env["SEGSTREAM_REDIS_PORT"])
    first = _segstream(env, "services", "up")
    try:
        assert first.returncode == 0, first.stderr
        assert "started" in first.stdout
        pids = [line.split("pid ")[1].split()[0] for line in first.stdout.splitlines()]
        second = _segstream(env, "services", "up")
        assert second.returncode == 0, second.stderr
        assert second.stdout.count("already running") == 2
        status = _segstream(env, "services", "status")
        assert status.returncode == 0
        assert "Apache Kafka 4." in status.stdout
    finally:
        down = _segstream(env, "services", "down")
    assert down.returncode == 0
    assert down.stdout.count("stopped") == 2
    for pid in pids:
        assert (
            not Path(f"/proc/{pid}").exists()
            or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]
        )
    assert not port_is_open(kafka_port)
    assert not port_is_open(redis_port)
    after = _segstream(env, "services", "status")
    assert after.returncode == 3
    assert after.stdout.count("stopped") == 2


def test_port_taken_by_another_process_is_a_clear_error(env: dict[str, str]) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", int(env["SEGSTREAM_REDIS_PORT"])))
        squatter.listen()
        result = _segstream(env, "services", "up")
    assert result.returncode == 2
    assert f"port {env['SEGSTREAM_REDIS_PORT']} is already in use" in result.stderr
    assert "SEGSTREAM_REDIS_PORT" in result.stderr


def test_stale_pid_file_is_ignored_by_up(env: dict[str, str]) -> None:
    pid_file = Path(env["SEGSTREAM_DATA_DIR"]) / "redis" / "redis.pid"
    pid_file.parent.mkdir(parents=True)
    pid_file.write_text("999999\n")
    try:
        result = _segstream(env, "services", "up")
        assert result.returncode == 0, result.stderr
        assert int(pid_file.read_text()) != 999999
    finally:
        _segstream(env, "services", "down")


def test_invalid_setting_is_reported_before_anything_starts(env: dict[str, str]) -> None:
    result = _segstream({**env, "SEGSTREAM_KAFKA_PORT": "seventy"}, "services", "up")
    assert result.returncode == 2
    assert "SEGSTREAM_KAFKA_PORT" in result.stderr


def test_up_with_monitoring_runs_prometheus_with_the_rules_and_down_stops_it(
    env: dict[str, str],
) -> None:
    import json
    import urllib.request

    from segstream.services.alert_rules import alert_rules, load_rules

    port, http_port = free_port(), free_port()
    env = {**env, "SEGSTREAM_PROMETHEUS_PORT": str(port), "SEGSTREAM_HTTP_PORT": str(http_port)}

    def api(path: str) -> dict:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/{path}", timeout=10) as r:
            return json.loads(r.read())["data"]

    up = _segstream(env, "services", "up", "--monitoring")
    try:
        assert up.returncode == 0, up.stderr
        assert f"prometheus http://127.0.0.1:{port}" in " ".join(up.stdout.split())
        assert f"http://127.0.0.1:{port}/alerts" in up.stdout
        loaded = {r["name"] for g in api("rules")["groups"] for r in g["rules"]}
        assert {r["alert"] for r in alert_rules(load_rules())} <= loaded
        # The workers' default address is scraped in the job the rules read `up` of.
        targets = wait_until(
            lambda: api("targets")["activeTargets"], 30, "no scrape target", interval_s=0.5
        )
        assert [(t["labels"]["job"], t["labels"]["instance"]) for t in targets] == [
            ("segstream", f"127.0.0.1:{http_port}")
        ]
        status = _segstream(env, "services", "status")
        assert status.returncode == 0 and "prometheus" in status.stdout
        again = _segstream(env, "services", "up", "--monitoring")
        assert again.stdout.count("already running") == 3, again.stdout
    finally:
        down = _segstream(env, "services", "down")
    assert down.returncode == 0
    assert "prometheus stopped" in " ".join(down.stdout.split())
    assert not port_is_open(port)


def test_a_taken_prometheus_port_stops_up_before_anything_starts(env: dict[str, str]) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        result = _segstream(
            {**env, "SEGSTREAM_PROMETHEUS_PORT": str(taken)}, "services", "up", "--monitoring"
        )
    assert result.returncode == 2
    assert f"port {taken} is already in use" in result.stderr
    assert "SEGSTREAM_PROMETHEUS_PORT" in result.stderr
    assert not port_is_open(int(env["SEGSTREAM_REDIS_PORT"]))
