"""Waiting for a condition in tests: poll it until a deadline, never sleep a guessed time.

A fixed sleep is either too short on a loaded machine (a flake) or too long on a quiet one
(wasted time). These helpers return as soon as the condition holds and fail, with the caller's
message, only once the deadline has passed: the deadline is the patience of the test, not a
speed target, so give it slack.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

__all__ = ["async_wait_until", "wait_until"]

T = TypeVar("T")

Message = str | Callable[[], str]
"""What a timeout reports; a callable is called only then (e.g. to include a log tail)."""


def _text(message: Message) -> str:
    return message() if callable(message) else message


def wait_until(
    predicate: Callable[[], T], timeout_s: float, message: Message, *, interval_s: float = 0.1
) -> T:
    """Call ``predicate`` every ``interval_s`` seconds until it returns a truthy value; return it.

    The predicate is called at least once, and once more after the deadline passes (so a slow
    call does not lose the last chance). Exceptions from it propagate at once.

    Raises:
        AssertionError: still falsy ``timeout_s`` seconds (monotonic clock) after the start,
            with ``message``.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        expired = time.monotonic() >= deadline
        value = predicate()
        if value:
            return value
        if expired:
            raise AssertionError(f"timed out after {timeout_s:g} s: {_text(message)}")
        time.sleep(interval_s)


async def async_wait_until(
    predicate: Callable[[], Awaitable[T]],
    timeout_s: float,
    message: Message,
    *,
    interval_s: float = 0.1,
) -> T:
    """:func:`wait_until` for a coroutine predicate, sleeping on the event loop between calls."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        expired = loop.time() >= deadline
        value = await predicate()
        if value:
            return value
        if expired:
            raise AssertionError(f"timed out after {timeout_s:g} s: {_text(message)}")
        await asyncio.sleep(interval_s)
