"""``segstream worker --processes N``: N worker processes in one consumer group, one supervisor.

One worker process runs every batch's Python work on one event loop, so it uses one core.
The supervisor starts N children, each an ordinary ``segstream worker`` with
``SEGSTREAM_WORKER_PROCESSES=1`` (the single-process worker, unchanged), in the same
consumer group (``SEGSTREAM_APP_ID``): Kafka's group protocol gives each its share of the
input partitions, and moves a share when a process stops or dies. Each child serves its
HTTP side on a private loopback port; the supervisor serves the one operators use
(``SEGSTREAM_HTTP_HOST:SEGSTREAM_HTTP_PORT``, :mod:`segstream.stream.http.front`), and runs
no worker itself.

Guarantees:

- **Start**: a child is *up* once its HTTP port answers (its model loaded, its
  dependencies checked, its agent started). A child that exits before it was ever up, at the
  command's start, is a child that cannot start (a bad setting, a missing model): the other
  children are stopped and the command exits with that child's message (its last
  ``segstream worker:`` line), not a hang.
- **Deaths**: a child that exits on its own later is logged with its exit code and started
  again after a backoff (:data:`RESTART_FIRST_DELAY_S` doubling to
  :data:`RESTART_MAX_DELAY_S` with its recent deaths). Its partitions go to the others
  meanwhile; what it had not acknowledged is redelivered. :data:`RESTART_LIMIT` deaths of one
  child within :data:`RESTART_WINDOW_S` is a crash loop: everything is stopped and the command
  exits non-zero naming the child, its exit code and its last lines.
- **Stop**: SIGTERM or SIGINT to the supervisor sends SIGTERM to every child once (they run
  in sessions of their own, so a terminal's Ctrl-C reaches the supervisor alone); each
  finishes its batch in hand, commits and leaves the group, bounded by its own
  ``SEGSTREAM_SHUTDOWN_TIMEOUT_S`` watchdog. A child still running :data:`STOP_MARGIN_S` past
  that bound is SIGKILLed (logged).
- **No orphans**: each child asks the kernel for SIGTERM when the supervisor dies
  (``PR_SET_PDEATHSIG``, set between fork and exec), so a SIGKILLed supervisor leaves no
  worker running; a child whose supervisor died before that call exits at once.

Each child's output is relayed line by line to the supervisor's stderr, prefixed with
``[worker <i>]``; the children log a line per 10 s at most in steady state, so relaying
costs nothing measurable.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import signal
import socket
import sys
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import faust

from segstream.errors import ServiceError
from segstream.net import port_is_open
from segstream.settings import Settings, as_environment
from segstream.stream.kafka.topics import partitions_of
from segstream.stream.sources.select import input_topics
from segstream.stream.worker.assigner import Assigner
from segstream.stream.worker.processes import ProcessCount, choose_processes, usable_cores
from segstream.stream.worker.run import check_dependencies, run_worker

__all__ = [
    "RESTART_LIMIT",
    "RESTART_WINDOW_S",
    "ChildView",
    "Front",
    "Supervisor",
    "child_settings",
    "run_workers",
]

log = logging.getLogger(__name__)

WORKER_COMMAND: tuple[str, ...] = (sys.executable, "-m", "segstream.cli", "worker")
"""A child: the single-process ``segstream worker`` of the same interpreter."""

RESTART_LIMIT = 5
"""Deaths of one child within :data:`RESTART_WINDOW_S` that end the command (a crash loop)."""
RESTART_WINDOW_S = 120.0
"""The crash-loop guard's window, in seconds."""
RESTART_FIRST_DELAY_S = 1.0
"""Pause before restarting a child after its first recent death, in seconds (then doubled)."""
RESTART_MAX_DELAY_S = 30.0
"""Longest pause before restarting a child, in seconds."""
STOP_MARGIN_S = 5.0
"""How long past ``SEGSTREAM_SHUTDOWN_TIMEOUT_S`` a stopping child may take before SIGKILL."""
UP_POLL_S = 0.25
"""How often a starting child's HTTP port is probed, in seconds."""
TAIL_LINES = 40
"""Lines of each child's output kept for the message when it cannot start or crash-loops."""
RELAY_CHUNK_BYTES = 64 * 1024
"""Largest piece of a child's output relayed at once (a longer line is cut into pieces)."""

_PR_SET_PDEATHSIG = 1
"""prctl(2) option: the signal the calling process gets when its parent thread dies."""

ChildState = Literal["starting", "running", "restarting", "stopping", "stopped"]


@dataclass(frozen=True, slots=True)
class ChildView:
    """What the supervisor's HTTP side shows of one child (a snapshot)."""

    index: int
    """0-based, stable across the child's restarts (the ``process`` label of its gauges)."""
    pid: int | None
    """Of the running incarnation; None between two."""
    port: int
    """Its private HTTP port on 127.0.0.1."""
    state: ChildState
    restarts: int
    """Times it was started again after a death."""
    last_exit: int | None
    """Exit code of its previous incarnation (negative: killed by that signal)."""


Front = Callable[["Supervisor"], Awaitable[Callable[[], Awaitable[None]] | None]]
"""The supervisor's HTTP side: started once the children are spawned, returns its stop."""


def _free_loopback_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def child_settings(settings: Settings, port: int) -> Settings:
    """A child's settings: the supervisor's, one process, HTTP on loopback ``port``."""
    return settings.model_copy(
        update={"worker_processes": 1, "http_port": port, "http_host": "127.0.0.1"}
    )


def _die_with_parent(parent: int) -> Callable[[], None]:
    """A ``preexec_fn`` making the child get SIGTERM when ``parent`` dies (Linux)."""
    prctl = ctypes.CDLL(None, use_errno=True).prctl if sys.platform == "linux" else None

    def arm() -> None:  # runs in the child between fork and exec: no allocation-heavy work
        if prctl is not None:
            prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before the call: nothing would tell us
            os._exit(70)

    return arm


class _Child:
    """One child slot: its current process, state and recent deaths."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.port = 0
        self.process: asyncio.subprocess.Process | None = None
        self.state: ChildState = "starting"
        self.restarts = 0
        self.last_exit: int | None = None
        self.up_once = False
        self.deaths: deque[float] = deque()
        self.tail: deque[str] = deque(maxlen=TAIL_LINES)

    def view(self) -> ChildView:
        pid = self.process.pid if self.process and self.process.returncode is None else None
        return ChildView(self.index, pid, self.port, self.state, self.restarts, self.last_exit)

    def message(self) -> str:
        """The child's own error line (``segstream worker: ...``), else its last lines."""
        for line in reversed(self.tail):
            if line.startswith("segstream worker:"):
                return line.removeprefix("segstream worker:").strip()
        lines = "\n".join(self.tail)
        return f"its last output:\n{lines}" if lines else "it printed nothing"


class Supervisor:
    """Runs ``n`` children until stopped (see the module docstring)."""

    def __init__(
        self,
        settings: Settings,
        n: int,
        *,
        front: Front | None = None,
        command: Sequence[str] = WORKER_COMMAND,
        restart_limit: int = RESTART_LIMIT,
        restart_window_s: float = RESTART_WINDOW_S,
        first_delay_s: float = RESTART_FIRST_DELAY_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``command`` starts one child (the single-process worker; its settings come in its
        environment); the crash-loop guard and the backoff default to the module's constants.
        """
        if n < 2:
            raise ValueError(f"a supervisor runs 2 or more children, not {n}")
        self.settings = settings
        self.n = n
        self.front = front
        self.command = tuple(command)
        self.restart_limit = restart_limit
        self.restart_window_s = restart_window_s
        self.first_delay_s = first_delay_s
        self.clock = clock
        self.children = [_Child(i) for i in range(n)]
        self._stop = asyncio.Event()
        self._fatal: ServiceError | None = None
        self._stopping = False

    def views(self) -> list[ChildView]:
        """A snapshot of every child, by index."""
        return [child.view() for child in self.children]

    async def run(self) -> int:
        """Start the children and supervise them until SIGTERM/SIGINT; returns 0 on a clean
        stop.

        Raises:
            ServiceError: a child could not start, crash-looped, or did not stop cleanly.
        """
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_signal, sig)
        log.info(
            "supervising %d worker processes of group %s (HTTP side on %s)",
            self.n,
            self.settings.app_id,
            f"{self.settings.http_host}:{self.settings.http_port}"
            if self.settings.http_port
            else "no port: SEGSTREAM_HTTP_PORT=0",
        )
        tasks = [asyncio.create_task(self._keep(child)) for child in self.children]
        stop_front: Callable[[], Awaitable[None]] | None = None
        try:
            if self.front is not None:
                stop_front = await self.front(self)
            await self._stop.wait()
        finally:
            self._stopping = True
            clean = await self._stop_children()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if stop_front is not None:
                await stop_front()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
        if self._fatal is not None:
            raise self._fatal
        if not clean:
            raise ServiceError(
                "not every worker process stopped cleanly (see the log above); what they had "
                "not acknowledged is redelivered to the partitions' next owner"
            )
        log.info("every worker process stopped")
        return 0

    def _on_signal(self, sig: int) -> None:
        if not self._stop.is_set():
            log.info(
                "%s: stopping %d worker processes (each finishes its batch in hand, within "
                "SEGSTREAM_SHUTDOWN_TIMEOUT_S=%.0f s)",
                signal.Signals(sig).name,
                self.n,
                self.settings.shutdown_timeout_s,
            )
        self._stop.set()

    def _fail(self, error: ServiceError) -> None:
        if self._fatal is None:
            self._fatal = error
            log.critical("%s", error)
        self._stop.set()

    # --- one child ----------------------------------------------------------------------------

    async def _keep(self, child: _Child) -> None:
        """Start ``child`` and start it again after each death, until the stop."""
        while not self._stopping:
            try:
                code = await self._run_once(child)
            except OSError as exc:  # no fork or exec: no point in trying again
                self._fail(ServiceError(f"cannot start worker process {child.index}: {exc}"))
                return
            if self._stopping:
                return
            child.last_exit = code
            if not child.up_once:
                self._fail(
                    ServiceError(
                        f"worker process {child.index} could not start (exit code {code}): "
                        f"{child.message()}"
                    )
                )
                return
            now = self.clock()
            child.deaths.append(now)
            while child.deaths and now - child.deaths[0] > self.restart_window_s:
                child.deaths.popleft()
            if len(child.deaths) >= self.restart_limit:
                self._fail(
                    ServiceError(
                        f"worker process {child.index} died {len(child.deaths)} times within "
                        f"{self.restart_window_s:.0f} s (last exit code {code}): a crash loop, so "
                        f"every worker process is stopped; {child.message()}"
                    )
                )
                return
            delay = min(RESTART_MAX_DELAY_S, self.first_delay_s * 2 ** (len(child.deaths) - 1))
            log.warning(
                "worker process %d exited with code %s; its partitions go to the others, and it "
                "is started again in %.1f s (%d death(s) within %.0f s; at %d the command stops)",
                child.index,
                code,
                delay,
                len(child.deaths),
                self.restart_window_s,
                self.restart_limit,
            )
            child.state = "restarting"
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._stop.wait()
            child.restarts += 1

    async def _run_once(self, child: _Child) -> int:
        """Spawn one incarnation of ``child``, relay its output, return its exit code."""
        child.port = _free_loopback_port()
        child.state = "starting"
        env = as_environment(child_settings(self.settings, child.port), os.environ)
        process = await asyncio.create_subprocess_exec(
            *self.command,
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,  # a terminal's Ctrl-C is the supervisor's to forward
            preexec_fn=_die_with_parent(os.getpid()),
        )
        child.process = process
        log.info("worker process %d started (pid %d)", child.index, process.pid)
        relay = asyncio.create_task(self._relay(child, process))
        watch = asyncio.create_task(self._watch_up(child, process))
        code = await process.wait()
        watch.cancel()
        await asyncio.gather(relay, watch, return_exceptions=True)
        child.state = "stopped"
        return code

    async def _relay(self, child: _Child, process: asyncio.subprocess.Process) -> None:
        """Copy the child's output to stderr, each line prefixed, until it closes.

        Read in chunks, not lines: a line longer than the reader's limit must neither stop the
        relay nor leave the pipe undrained (the child would block writing to it)."""
        assert process.stdout is not None
        prefix = f"[worker {child.index}] ".encode()
        out = sys.stderr.buffer
        pending = b""
        while chunk := await process.stdout.read(RELAY_CHUNK_BYTES):
            *lines, pending = (pending + chunk).split(b"\n")
            if len(pending) > RELAY_CHUNK_BYTES:  # a line without end: pass it on in pieces
                lines.append(pending)
                pending = b""
            for line in lines:
                child.tail.append(line.decode(errors="replace").rstrip())
                out.write(prefix + line + b"\n")
            out.flush()
        if pending:
            child.tail.append(pending.decode(errors="replace").rstrip())
            out.write(prefix + pending + b"\n")
            out.flush()

    async def _watch_up(self, child: _Child, process: asyncio.subprocess.Process) -> None:
        while process.returncode is None:
            if await asyncio.to_thread(port_is_open, child.port, "127.0.0.1"):
                if not child.up_once:
                    log.info("worker process %d is up (pid %d)", child.index, process.pid)
                child.up_once = True
                if child.state == "starting":
                    child.state = "running"
                return
            await asyncio.sleep(UP_POLL_S)

    # --- stop ---------------------------------------------------------------------------------

    async def _stop_children(self) -> bool:
        """SIGTERM every running child, wait for them within the bound, SIGKILL the rest;
        True when each exited with 0 (or was never running)."""
        running = [
            c for c in self.children if c.process is not None and c.process.returncode is None
        ]
        for child in running:
            child.state = "stopping"
            assert child.process is not None
            with contextlib.suppress(ProcessLookupError):
                child.process.send_signal(signal.SIGTERM)
        bound = self.settings.shutdown_timeout_s + STOP_MARGIN_S
        clean = True
        for child in running:
            assert child.process is not None
            try:
                async with asyncio.timeout(bound):
                    code = await child.process.wait()
            except TimeoutError:
                log.error(
                    "worker process %d (pid %d) did not stop within %.0f s "
                    "(SEGSTREAM_SHUTDOWN_TIMEOUT_S + %.0f): killed",
                    child.index,
                    child.process.pid,
                    bound,
                    STOP_MARGIN_S,
                )
                with contextlib.suppress(ProcessLookupError):
                    child.process.kill()
                code = await child.process.wait()
            child.state = "stopped"
            if code != 0:
                clean = False
                if self._fatal is None:
                    log.error("worker process %d stopped with exit code %d", child.index, code)
        return clean


def _resolve(settings: Settings) -> ProcessCount:
    """Check the dependencies as ``segstream worker`` does, then choose the process count."""

    async def check() -> int:
        await check_dependencies(settings)
        return len(await partitions_of(settings, input_topics(settings)[0]))

    partitions = asyncio.run(check())
    return choose_processes(settings.worker_processes, usable_cores(), partitions)


def run_workers(
    settings: Settings,
    create: Callable[[Settings], faust.App],
    front: Front | None = None,
) -> int:
    """``segstream worker``: one worker in this process, or a supervisor of several.

    ``SEGSTREAM_WORKER_PROCESSES=1`` runs :func:`~segstream.stream.worker.run.run_worker`
    at once (no supervisor, no extra check). Otherwise the model must load and the
    dependencies answer first (the errors of ``run_worker``), the count is chosen
    (:func:`~segstream.stream.worker.processes.choose_processes`) and logged with its reason;
    a count of 1 then runs the worker here too.

    Raises:
        ArtifactError, ServiceError, ConfigError: as :func:`run_worker`; ServiceError also
            when a child cannot start, crash-loops or does not stop cleanly.
    """
    if settings.worker_processes == 1:
        return run_worker(settings, create)
    model = Assigner(settings.model_dir)  # a missing model is reported once, from here
    log.info("model %s (k=%d) from %s", model.version, model.model.k, settings.model_dir)
    count = _resolve(settings)
    (log.warning if count.idle else log.info)("%s", count.reason)
    if count.n == 1:
        return run_worker(settings, create)
    return asyncio.run(Supervisor(settings, count.n, front=front).run())
