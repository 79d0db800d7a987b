"""The progress watchdog: a batch or a commit that does not finish in time stops the worker.

A worker that stops making progress without failing is the worst kind of fault: offsets freeze,
lag grows, and the process still looks alive. The batch pipeline and the consumer record what
they are doing in a :class:`Progress` (plain attributes, a few assignments per batch or
commit); :class:`Watchdog`, a daemon thread, reads it twice a second and decides with the pure
function :func:`find_stalls`:

- a **batch** stall: the batch in process started more than ``batch_deadline_s`` ago;
- a **commit** stall: offset commits have failed or timed out since more than
  ``commit_deadline_s`` ago, with none succeeding since (one commit failing during a rebalance
  is normal and recovers on the next one).

A stall is reported at once: it is logged, counted once (``WorkerObserver.stall``), and its
reason is what :meth:`Watchdog.reasons` returns, which ``/readyz`` shows as not ready. A stall
still present ``stall_grace_s`` later stops the worker (a graceful stop, so a supervisor
restarts it: redelivery and the Redis fences make that safe).

Every stop is bounded. Once the worker is stopping (a signal, a stall, a crash), the
watchdog's thread ends the process with :func:`os._exit` if it is still alive
``shutdown_timeout_s`` later: a stop can hang on a dead broker (leaving the group, a last
commit), and a worker that ignores SIGTERM is worse than one that stops without its last
commit. A thread, not a task, so that it also works while the event loop is blocked.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from segstream.logs import flush_summaries
from segstream.stream.domain.observer import WorkerObserver

__all__ = [
    "EXIT_STALLED",
    "STALL_KINDS",
    "Deadlines",
    "Progress",
    "Stall",
    "Watchdog",
    "find_stalls",
]

log = logging.getLogger(__name__)

EXIT_STALLED = 3
"""Exit status of a worker ended by its watchdog (a stall, or a stop that did not finish)."""

CHECK_EVERY_S = 0.5
"""How often the watchdog looks at the worker's progress, in seconds."""

StallKind = Literal["batch", "commit"]
STALL_KINDS: tuple[StallKind, ...] = ("batch", "commit")
"""Every kind of stall (the label values of ``segstream_stalls_total``)."""


@dataclass(frozen=True, slots=True)
class Deadlines:
    """The watchdog's limits, in seconds (from the settings of the same names)."""

    batch_s: float
    commit_s: float
    grace_s: float
    shutdown_s: float


@dataclass(frozen=True, slots=True)
class Stall:
    """One way the worker is not progressing."""

    kind: StallKind
    since: float
    """Monotonic time at which it became a stall (deadline passed)."""
    reason: str
    """For people: what is stuck, for how long, and the setting involved."""


class Progress:
    """What the worker is doing, written by the event loop and read by the watchdog thread.

    Plain attributes (each write is atomic under the GIL); monotonic seconds.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.batch_started: float | None = None
        """When the batch in process started; None between batches."""
        self.commit_trouble_since: float | None = None
        """When the first of the commits failing since the last success started."""
        self.commit_failures = 0
        """Commits failed or timed out since the last success."""
        self.last_commit_error = ""

    def batch_start(self) -> None:
        """A batch starts processing."""
        self.batch_started = self.clock()

    def batch_end(self) -> None:
        """The batch in process finished (or failed)."""
        self.batch_started = None

    def commit_failed(self, started: float, error: str) -> None:
        """A commit that started at ``started`` (monotonic) failed or timed out with ``error``."""
        if self.commit_trouble_since is None:
            self.commit_trouble_since = started
        self.commit_failures += 1
        self.last_commit_error = error

    def commit_done(self) -> None:
        """A commit finished: commits work."""
        self.commit_trouble_since = None
        self.commit_failures = 0


def find_stalls(progress: Progress, now: float, deadlines: Deadlines) -> list[Stall]:
    """The stalls ``progress`` shows at monotonic time ``now`` (pure; see the module docstring)."""
    stalls = []
    started = progress.batch_started
    if started is not None and now - started > deadlines.batch_s:
        stalls.append(
            Stall(
                "batch",
                started + deadlines.batch_s,
                f"a batch has been running for {now - started:.0f} s "
                f"(SEGSTREAM_BATCH_DEADLINE_S={deadlines.batch_s:g})",
            )
        )
    trouble = progress.commit_trouble_since
    if trouble is not None and now - trouble > deadlines.commit_s:
        stalls.append(
            Stall(
                "commit",
                trouble + deadlines.commit_s,
                f"no offset commit has succeeded for {now - trouble:.0f} s "
                f"(SEGSTREAM_COMMIT_DEADLINE_S={deadlines.commit_s:g}); "
                f"{progress.commit_failures} failed, last: {progress.last_commit_error}",
            )
        )
    return stalls


class Watchdog:
    """The daemon thread that watches a :class:`Progress`; see the module docstring."""

    def __init__(
        self,
        progress: Progress,
        deadlines: Deadlines,
        *,
        observer: WorkerObserver | None = None,
        stopping: Callable[[], bool] = lambda: False,
        stop: Callable[[str], None] = lambda reason: None,
        exit_process: Callable[[int], None] = os._exit,
        check_every_s: float = CHECK_EVERY_S,
    ) -> None:
        """Watch ``progress``; nothing runs until :meth:`start`.

        Args:
            observer: told of each new stall (``stall(kind)``), from the watchdog's thread.
            stopping: True once the worker is stopping (polled, from the watchdog's thread).
            stop: asks the worker to stop because of a stall; must be thread-safe.
            exit_process: ends the process with a status when a stop overruns.
        """
        self.progress = progress
        self.deadlines = deadlines
        self.observer = observer
        self._stopping = stopping
        self._stop = stop
        self._exit = exit_process
        self._check_every_s = check_every_s
        self._stalls: list[Stall] = []
        self._reported: set[tuple[StallKind, float]] = set()
        self._stop_asked_at: float | None = None
        self._exit_status = 1
        self._closed = threading.Event()
        self._thread: threading.Thread | None = None

    def reasons(self) -> Sequence[str]:
        """Why the worker is not progressing, one line per stall; empty when it is."""
        return [stall.reason for stall in self._stalls]

    def start(self) -> None:
        """Start the thread, once (a daemon: it never keeps the process alive)."""
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name="segstream-watchdog", daemon=True
            )
            self._thread.start()

    def close(self) -> None:
        """Stop watching (the worker stopped on its own)."""
        self._closed.set()

    def stopping(self, status: int = 1) -> None:
        """The worker begins to stop: it must be gone ``shutdown_s`` from now (else ``status``)."""
        if self._stop_asked_at is None:
            self._stop_asked_at = self.progress.clock()
            self._exit_status = status

    def check(self) -> None:
        """One look at the progress (what the thread does every ``check_every_s``)."""
        now = self.progress.clock()
        self._stalls = find_stalls(self.progress, now, self.deadlines)
        for stall in self._stalls:
            key = (stall.kind, stall.since)
            if key not in self._reported:
                self._reported.add(key)
                log.error("worker stalled: %s", stall.reason)
                if self.observer is not None:
                    self.observer.stall(stall.kind)
            if now - stall.since > self.deadlines.grace_s and self._stop_asked_at is None:
                log.critical(
                    "worker stalled for longer than SEGSTREAM_STALL_GRACE_S=%g s, stopping it "
                    "so that it is restarted: %s",
                    self.deadlines.grace_s,
                    stall.reason,
                )
                self.stopping(EXIT_STALLED)
                self._stop(stall.reason)
        if self._stop_asked_at is None and self._stopping():
            self.stopping()
        asked = self._stop_asked_at
        if asked is not None and now - asked > self.deadlines.shutdown_s:
            log.critical(
                "the worker did not stop within SEGSTREAM_SHUTDOWN_TIMEOUT_S=%g s; exiting now "
                "(offsets not committed are redelivered)",
                self.deadlines.shutdown_s,
            )
            flush_summaries()  # os._exit runs no exit hook
            logging.shutdown()
            self._exit(self._exit_status)

    def _run(self) -> None:
        while not self._closed.wait(self._check_every_s):
            self.check()
