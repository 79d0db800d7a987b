"""A local server process that segstream starts, tracks by pid file, and stops.

Only processes this module started are ever signalled: a pid file is trusted only when the
process behind it is alive *and* its command line still carries the marker we launched it
with, so a stale pid file (reboot, pid reuse) is detected and removed instead of killing a
stranger.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from segstream.errors import ServiceError

__all__ = ["ManagedProcess", "port_is_open", "wait_until"]


def port_is_open(port: int, host: str = "127.0.0.1") -> bool:
    """True when something accepts TCP connections on ``host:port``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def wait_until(check: object, timeout_s: float, interval_s: float = 0.1) -> bool:
    """Call ``check()`` until it returns true or ``timeout_s`` seconds have passed."""
    deadline = time.monotonic() + timeout_s
    while True:
        if check():  # type: ignore[operator]
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval_s)


@dataclass(frozen=True)
class ManagedProcess:
    """One server process: its name, pid file, log file and identifying command-line marker.

    ``marker`` is a string that appears in the process's command line (for example the path
    of its config file), so that a pid file pointing at a reused pid is recognised as stale.
    """

    name: str
    pid_file: Path
    log_file: Path
    marker: str

    def pid(self) -> int | None:
        """The pid of our running process, or None; removes a stale pid file."""
        try:
            pid = int(self.pid_file.read_text().strip())
        except FileNotFoundError:
            return None
        except ValueError:
            self.pid_file.unlink(missing_ok=True)
            return None
        if _cmdline(pid) is None or self.marker not in (_cmdline(pid) or ""):
            self.pid_file.unlink(missing_ok=True)
            return None
        return pid

    def is_running(self) -> bool:
        """True when the process we started is alive."""
        return self.pid() is not None

    def start(self, argv: Sequence[str], env: dict[str, str] | None = None) -> int:
        """Launch ``argv`` detached from this terminal, logging to ``log_file``; return its pid.

        The child gets its own session so that Ctrl-C in the shell that ran ``services up``
        does not reach it; ``stop`` is the way to end it.
        """
        self.pid_file.parent.mkdir(parents=True, exist_ok=True)
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_file, "ab") as log:
            try:
                proc = subprocess.Popen(
                    list(argv),
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    env=env,
                )
            except OSError as exc:
                raise ServiceError(f"cannot start {self.name} ({argv[0]}): {exc}") from exc
        # Right after fork the child's /proc entry is empty until exec completes; wait for the
        # marker so that the pid file is never judged stale while the server is starting.
        wait_until(lambda: self.marker in (_cmdline(proc.pid) or "") or not _alive(proc.pid), 10)
        self.pid_file.write_text(f"{proc.pid}\n")
        return proc.pid

    def exited_early(self) -> str | None:
        """If the process has died, the tail of its log explaining why; else None."""
        if self.is_running():
            return None
        return self.log_tail()

    def log_tail(self, lines: int = 25) -> str:
        """The last ``lines`` lines of the log file (empty when there is none)."""
        try:
            text = self.log_file.read_text(errors="replace")
        except FileNotFoundError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout_s: float = 30.0) -> bool:
        """SIGTERM the process, wait for it to exit, SIGKILL after ``timeout_s``.

        Returns True when a process was stopped, False when none was running.
        """
        pid = self.pid()
        if pid is None:
            return False
        _signal(pid, signal.SIGTERM)
        if not wait_until(lambda: not _alive(pid), timeout_s):
            _signal(pid, signal.SIGKILL)
            wait_until(lambda: not _alive(pid), 10.0)
        self.pid_file.unlink(missing_ok=True)
        return True


def _cmdline(pid: int) -> str | None:
    """The command line of a live, non-zombie process, or None."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        if "\nState:\tZ" in status:
            return None
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None


def _alive(pid: int) -> bool:
    # A child of ours that exited stays a zombie until reaped; reap it so it reads as gone.
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
    return _cmdline(pid) is not None


def _signal(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)
