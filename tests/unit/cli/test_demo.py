"""The demos' background commands: started with their output in a log, the worker's log and
status page named."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from segstream.cli.demo import _start_worker
from segstream.settings import Settings


def test_the_demo_worker_runs_in_the_background_logging_to_the_work_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    work = tmp_path / "demo"  # created by the start
    # A worker with no model refuses to start: quick, and its refusal must reach the log.
    env = {**os.environ, "SEGSTREAM_MODEL_DIR": str(tmp_path / "no-models")}
    settings = Settings(http_host="127.0.0.1", http_port=6123)
    worker = _start_worker(env, work, settings)
    assert worker.wait(timeout=120) != 0
    log = (work / "worker.log").read_text()
    assert "no-models" in log
    assert "Traceback" not in log
    printed = capsys.readouterr().out
    assert f"worker pid {worker.pid}, log {work / 'worker.log'}" in printed
    assert "status page http://127.0.0.1:6123/" in printed
