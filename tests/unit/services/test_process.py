"""Pid files are trusted only for the process we started."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from segstream.errors import ServiceError
from segstream.services.process import LocalServer, ManagedProcess
from segstream.settings import load_settings, load_stack_settings
from tests.ports import free_port


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


class _Sleeper(LocalServer):
    """A "server" that sleeps; ready when its config file says so."""

    name = "sleeper"
    config_name = "sleeper.conf"
    log_name = "sleeper.log"
    port_settings = "another port with SLEEPER_PORT"
    start_timeout_s = 0.5
    stop_timeout_s = 5.0

    def __init__(self, tmp_path: Path, port: int, ready: bool) -> None:
        super().__init__(load_settings(data_dir=tmp_path), load_stack_settings())
        self.port = port
        self.ready = ready
        self.launches = 0

    def ports(self) -> tuple[int, ...]:
        return (self.port,)

    def _launch(self) -> None:
        self.launches += 1
        self.home.mkdir(parents=True, exist_ok=True)
        self.config_file.write_text("ready\n" if self.ready else "")
        sleep = "import time; time.sleep(60)"
        self.process.start([sys.executable, "-c", sleep, str(self.config_file)])

    def wait_ready(self, timeout_s: float) -> None:
        if self.config_file.read_text() != "ready\n":
            raise ServiceError(f"{self.name} is not ready")


def test_local_server_starts_once_and_stops(tmp_path: Path) -> None:
    server = _Sleeper(tmp_path, free_port(), ready=True)
    try:
        assert server.start() is True
        assert server.process.pid_file == tmp_path.resolve() / "sleeper" / "sleeper.pid"
        assert server.start() is False
        assert server.launches == 1
    finally:
        stopped = server.stop()
    assert stopped is True
    assert server.process.pid() is None


def test_local_server_that_never_gets_ready_is_not_left_running(tmp_path: Path) -> None:
    server = _Sleeper(tmp_path, free_port(), ready=False)
    with pytest.raises(ServiceError, match="not ready"):
        server.start()
    assert server.process.pid() is None
    assert server.stop() is False


def test_local_server_refuses_a_taken_port_before_launching(tmp_path: Path) -> None:
    server = _Sleeper(tmp_path, free_port(), ready=True)
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", server.port))
        squatter.listen()
        with pytest.raises(ServiceError, match=f"port {server.port} is already in use.*SLEEPER"):
            server.start()
    assert server.launches == 0
    assert server.process.pid() is None


_REEXEC = """
import os, sys, time
left = int(sys.argv[1])
if left:  # become the next program, as setpriv becomes PostgreSQL
    os.execv(sys.executable, [sys.executable, __file__, str(left - 1), sys.argv[2]])
time.sleep(30)
"""


def test_a_process_between_two_programs_is_never_taken_for_a_stale_pid_file(
    tmp_path: Path,
) -> None:
    # While it execs, a process's command line reads empty for a moment; a pid file judged
    # stale then made a starting PostgreSQL look dead (a CI run's five CDC setup errors).
    marker = str(tmp_path / "marker-arg")
    script = tmp_path / "reexec.py"
    script.write_text(_REEXEC)
    proc = _managed(tmp_path, marker)
    proc.start([sys.executable, str(script), "30", marker])
    try:
        looks = 0
        while proc.pid() is not None and looks < 3000:
            looks += 1
        assert looks == 3000, f"judged stale at look {looks} while the process ran"
    finally:
        proc.stop(timeout_s=5)
