"""A local server process that segstream starts, tracks by pid file, and stops.

Only processes this module started are ever signalled: a pid file is trusted only when the
process behind it is alive *and* its command line still carries the marker we launched it
with, so a stale pid file (reboot, pid reuse) is detected and removed instead of killing a
stranger.

``LocalServer`` is the start/stop scaffolding the Kafka and Redis services share; each
service says only what is its own (ports, how to launch it, when it is ready).
"""

from __future__ import annotations

import abc
import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from segstream.errors import ServiceError
from segstream.net import port_is_open
from segstream.settings import Settings, StackSettings

__all__ = ["LocalServer", "ManagedProcess", "command_line", "log_tail", "wait_until"]


EXEC_GRACE_S = 1.0
"""How long an empty command line (a process between two programs) is waited out, seconds."""


def wait_until(check: object, timeout_s: float, interval_s: float = 0.1) -> bool:
    """Call ``check()`` until it returns true or ``timeout_s`` seconds have passed."""
    deadline = time.monotonic() + timeout_s
    while True:
        if check():  # type: ignore[operator]
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval_s)


def log_tail(path: Path, lines: int = 25) -> str:
    """The last ``lines`` lines of the text file at ``path`` (empty when there is none)."""
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


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
        if not self._carries_marker(pid):
            self.pid_file.unlink(missing_ok=True)
            return None
        return pid

    def _carries_marker(self, pid: int) -> bool:
        """True when ``pid`` is a live process whose command line holds the marker.

        A process in the middle of ``execve`` shows an empty command line for a moment (seen
        while ``setpriv`` becomes PostgreSQL, in 122 of 200 starts): that is looked at again
        for up to :data:`EXEC_GRACE_S`, never taken for a stale pid file, which would make a
        server that is starting look dead.
        """
        deadline = time.monotonic() + EXEC_GRACE_S
        while (cmdline := command_line(pid)) == "" and time.monotonic() < deadline:
            time.sleep(0.01)
        return cmdline is not None and self.marker in cmdline

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
        wait_until(
            lambda: self.marker in (command_line(proc.pid) or "") or not _alive(proc.pid), 10
        )
        self.pid_file.write_text(f"{proc.pid}\n")
        return proc.pid

    def log_tail(self, lines: int = 25) -> str:
        """The last ``lines`` lines of the log file (empty when there is none)."""
        return log_tail(self.log_file, lines)

    def kill(self, timeout_s: float = 10.0) -> bool:
        """SIGKILL the process, as a crash would end it (failover tests); wait until it is gone.

        Returns True when a process was killed, False when none was running. The pid file is
        left: the next ``pid()`` finds it stale and removes it.
        """
        pid = self.pid()
        if pid is None:
            return False
        _signal(pid, signal.SIGKILL)
        wait_until(lambda: not _alive(pid), timeout_s)
        return True

    def stop(self, timeout_s: float = 30.0, sig: signal.Signals = signal.SIGTERM) -> bool:
        """Send ``sig`` (SIGTERM), wait for the process to exit, SIGKILL after ``timeout_s``.

        Returns True when a process was stopped, False when none was running.
        """
        pid = self.pid()
        if pid is None:
            return False
        _signal(pid, sig)
        if not wait_until(lambda: not _alive(pid), timeout_s):
            _signal(pid, signal.SIGKILL)
            wait_until(lambda: not _alive(pid), 10.0)
        self.pid_file.unlink(missing_ok=True)
        return True


class LocalServer(abc.ABC):
    """A server segstream runs on loopback from ``<data_dir>/<name>/``: start, wait, stop.

    Its files live under ``home``: the config file (whose path is the marker that identifies
    our process), ``<name>.pid`` and the log of its stdout/stderr. A subclass sets the class
    attributes and says how to launch it and when it is ready; ``start`` and ``stop`` are
    the same for every server.
    """

    name: ClassVar[str]
    """Short name: the folder under ``data_dir``, the pid file's stem, used in messages."""
    config_name: ClassVar[str]
    """The config file's name under ``home``."""
    log_name: ClassVar[str]
    """The name under ``home`` of the file the process's stdout and stderr go to."""
    port_settings: ClassVar[str]
    """How an operator picks other ports, ending the "port is in use" error message."""
    start_timeout_s: ClassVar[float]
    """Seconds ``start`` waits for the server to become ready, unless told otherwise."""
    stop_timeout_s: ClassVar[float]
    """Seconds ``stop`` waits after SIGTERM before it sends SIGKILL."""
    stop_signal: ClassVar[signal.Signals] = signal.SIGTERM
    """The signal that asks the server to shut down cleanly."""

    def __init__(self, settings: Settings, stack: StackSettings) -> None:
        """``settings``: the product's (the data dir, the app id, what clients are given);
        ``stack``: the local stack's (ports, heaps, caches)."""
        self.settings = settings
        self.stack = stack
        self.home = settings.data_dir.resolve() / self.name
        self.config_file = self.home / self.config_name
        self.process = ManagedProcess(
            name=self.name,
            pid_file=self.home / f"{self.name}.pid",
            log_file=self.home / self.log_name,
            marker=str(self.config_file),
        )

    @abc.abstractmethod
    def ports(self) -> tuple[int, ...]:
        """The loopback ports the server listens on, all of which must be free to start."""

    @abc.abstractmethod
    def _launch(self) -> None:
        """Find the binaries, write the config files and ``self.process.start`` the server.

        Raises:
            ServiceError: a binary is missing or a preparation step failed.
        """

    @abc.abstractmethod
    def wait_ready(self, timeout_s: float) -> None:
        """Block until the server serves clients.

        Raises:
            ServiceError: it died (with its log's tail) or was not ready within ``timeout_s``.
        """

    def start(self, timeout_s: float | None = None) -> bool:
        """Start the server unless ours already runs, then wait until it is ready.

        ``timeout_s`` defaults to the class's ``start_timeout_s``. Returns True when this call
        started it, False when it was already running.

        Raises:
            ServiceError: a port is taken by another process, a binary is missing, or the
                server died or was not ready in time (see ``wait_ready``).
        """
        timeout = self.start_timeout_s if timeout_s is None else timeout_s
        if self.process.is_running():
            self.wait_ready(timeout)
            return False
        self.check_ports()
        self._launch()
        try:
            self.wait_ready(timeout)
        except BaseException:
            # A server that never became ready is not left behind half-started.
            self.stop()
            raise
        return True

    def check_ports(self) -> None:
        """Fail unless ours runs already or every port of the server is free.

        Raises:
            ServiceError: a port is taken by another process (named, with the setting to
                change).
        """
        if self.process.is_running():
            return
        for port in self.ports():
            if port_is_open(port):
                raise ServiceError(
                    f"port {port} is already in use by another process; stop it or choose "
                    f"{self.port_settings}"
                )

    def stop(self) -> bool:
        """Stop the server if we started it; True when one was stopped."""
        return self.process.stop(timeout_s=self.stop_timeout_s, sig=self.stop_signal)


def command_line(pid: int) -> str | None:
    """The command line of a live, non-zombie process, or None."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        if "\nState:\tZ" in status:
            return None
        # Any process's arguments may be bytes that are not UTF-8.
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:  # gone, or not ours to read
        return None
    return cmdline.replace(b"\0", b" ").decode(errors="replace")


def _alive(pid: int) -> bool:
    # A child of ours that exited stays a zombie until reaped; reap it so it reads as gone.
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
    return command_line(pid) is not None


def _signal(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)
