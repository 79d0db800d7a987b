"""The time limit of the commands that talk to Kafka or Redis (``SEGSTREAM_COMMAND_TIMEOUT_S``).

A broker or a Redis node that is down, paused (connections accepted, nothing answered) or
rebalancing can leave a client waiting for minutes; an operator's command must instead fail
with the dependency and the setting named. :class:`CommandDeadline` bounds a command in two
layers:

1. its coroutine runs in its event loop against the deadline; past it, the coroutine is
   cancelled and :class:`~segstream.errors.CommandTimeout` raised (``segstream`` prints it and
   exits with status 2);
2. a daemon thread backs that up: when the loop does not come back (a blocking call, a client
   whose cancellation hangs in its close), it prints the same message and ends the process
   with status 2 :data:`BACKSTOP_S` after the deadline.

Commands that work through many batches (``reassign``, ``replay``) call
:meth:`CommandDeadline.progress` after each: their limit is on a stretch without progress.
"""

from __future__ import annotations

import asyncio
import os
import sys
import threading
import time
from collections.abc import Callable, Coroutine
from typing import Any, Final, TypeVar

from segstream.errors import CommandTimeout
from segstream.settings import Settings

__all__ = ["BACKSTOP_S", "EXIT_TIMEOUT", "KAFKA", "REDIS", "CommandDeadline"]

T = TypeVar("T")

EXIT_TIMEOUT: Final = 2
"""Exit status of a command past its deadline (the status of every ``SegstreamError``)."""
BACKSTOP_S: Final = 10.0
"""How long after the deadline the backstop thread ends a process whose loop did not return."""
KAFKA: Final = "kafka"
REDIS: Final = "redis"


def _dependency(settings: Settings, name: str) -> str:
    if name == KAFKA:
        return f"Kafka at {settings.kafka_bootstrap_servers} (SEGSTREAM_KAFKA_BOOTSTRAP_SERVERS)"
    return f"Redis at {settings.redis_display} (SEGSTREAM_REDIS_URL)"


class CommandDeadline:
    """One command's limit; see the module docstring. Monotonic seconds throughout."""

    def __init__(
        self,
        settings: Settings,
        command: str,
        *dependencies: str,
        clock: Callable[[], float] = time.monotonic,
        backstop_s: float = BACKSTOP_S,
    ) -> None:
        """``command``: what is being done, for the message (e.g. ``"reading the lag"``);
        ``dependencies``: :data:`KAFKA` and/or :data:`REDIS`, what it waits on."""
        self.seconds = settings.command_timeout_s
        self.clock = clock
        self.backstop_s = backstop_s
        deps = " or ".join(_dependency(settings, d) for d in dependencies)
        self.message = (
            f"{command} did not finish within SEGSTREAM_COMMAND_TIMEOUT_S={self.seconds:g} s: "
            f"{deps} did not answer in time (down, paused or rebalancing?). Check it is up and "
            "reachable, or raise SEGSTREAM_COMMAND_TIMEOUT_S"
        )
        self._until = clock() + self.seconds
        self._finished = threading.Event()

    def progress(self) -> None:
        """Work was done: the limit starts again from now."""
        self._until = self.clock() + self.seconds

    def tracking(self, callback: Callable[..., object]) -> Callable[..., None]:
        """``callback`` (a progress bar's, say), which also reports progress when called."""

        def call(*args: Any, **kwargs: Any) -> None:
            callback(*args, **kwargs)
            self.progress()

        return call

    def remaining(self) -> float:
        """Seconds left before the deadline (negative once past it)."""
        return self._until - self.clock()

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """``asyncio.run(coroutine)`` within the deadline.

        Raises:
            CommandTimeout: the deadline passed first (the coroutine was cancelled).
        """
        self._finished.clear()
        backstop = threading.Thread(target=self._backstop, name="segstream-deadline", daemon=True)
        backstop.start()
        try:
            return asyncio.run(self._bounded(coroutine))
        finally:
            self._finished.set()

    async def _bounded(self, coroutine: Coroutine[Any, Any, T]) -> T:
        task = asyncio.ensure_future(coroutine)
        while True:
            left = self.remaining()
            if left <= 0:
                break
            done, _ = await asyncio.wait({task}, timeout=left)
            if done:
                return task.result()
        task.cancel()
        # Let the clients close if they can; the backstop ends the process if they cannot.
        await asyncio.wait({task}, timeout=self.backstop_s / 2)
        raise CommandTimeout(self.message)

    def _backstop(self) -> None:
        while not self._finished.wait(min(1.0, max(0.05, self.remaining() + self.backstop_s))):
            if self.remaining() + self.backstop_s <= 0:
                sys.stderr.write(f"segstream: {self.message}\n")
                sys.stderr.flush()
                os._exit(EXIT_TIMEOUT)
