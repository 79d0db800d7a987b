"""Pid files are trusted only for the process we started."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from segstream.services.process import ManagedProcess


def _managed(tmp_path: Path, marker: str) -> ManagedProcess:
    return ManagedProcess(
        name="sleeper",
        pid_file=tmp_path / "sleeper.pid",
        log_file=tmp_path / "sleeper.log",
        marker=marker,
    )


def test_started_process_is_tracked_and_stopped(tmp_path: Path) -> None:
    marker = str(tmp_path / "marker-arg")
    proc = _managed(tmp_path, marker)
    pid = proc.start([sys.executable, "-c", "import time; time.sleep(60)", marker])
    assert proc.pid() == pid
    assert proc.stop(timeout_s=5) is True
    assert proc.pid() is None
    assert not proc.pid_file.exists()
    assert proc.stop() is False


def test_pid_file_of_a_dead_process_is_stale(tmp_path: Path) -> None:
    finished = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    proc = _managed(tmp_path, "anything")
    proc.pid_file.write_text(finished.stdout)
    assert proc.pid() is None
    assert not proc.pid_file.exists()


def test_pid_file_pointing_at_a_stranger_is_stale_and_the_stranger_survives(
    tmp_path: Path,
) -> None:
    stranger = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        proc = _managed(tmp_path, str(tmp_path / "our-config"))
        proc.pid_file.write_text(f"{stranger.pid}\n")
        assert proc.pid() is None
        assert proc.stop() is False
        assert stranger.poll() is None
    finally:
        stranger.kill()
        stranger.wait()


def test_garbage_pid_file_is_removed(tmp_path: Path) -> None:
    proc = _managed(tmp_path, "x")
    proc.pid_file.write_text("not a pid")
    assert proc.pid() is None
    assert not proc.pid_file.exists()
