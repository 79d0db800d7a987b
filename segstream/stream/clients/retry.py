"""Retrying a failing dependency (Redis, the broker) with capped exponential backoff.

The worker retries without limit: giving up would mean dropping events or crashing into a
redelivery loop, while Redis or the broker coming back is the normal end of an outage. Each
failure is logged (warning, then error once it has lasted a while) so an outage is visible.
Commands for people (``segstream segment``) pass ``attempts`` and get a SegstreamError.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

import redis.exceptions
from aiokafka.errors import KafkaError

from segstream.errors import SegstreamError, ServiceError

__all__ = ["KAFKA_TRANSIENT", "REDIS_TRANSIENT", "backoff_delays", "retry"]

T = TypeVar("T")
log = logging.getLogger(__name__)

REDIS_TRANSIENT: tuple[type[BaseException], ...] = (
    redis.exceptions.ConnectionError,  # includes BusyLoadingError
    redis.exceptions.TimeoutError,
    redis.exceptions.TryAgainError,
    OSError,
)
"""Redis failures worth retrying: the server is down, loading, slow or briefly unavailable."""

KAFKA_TRANSIENT: tuple[type[BaseException], ...] = (KafkaError, OSError, TimeoutError)
"""Broker failures worth retrying (aiokafka already retried the retriable ones internally)."""


def backoff_delays(first_s: float, cap_s: float) -> Callable[[int], float]:
    """Delay before retry ``n`` (1-based): ``first_s * 2**(n-1)``, at most ``cap_s`` seconds."""

    def delay(n: int) -> float:
        return min(cap_s, first_s * 2 ** min(n - 1, 30))

    return delay


async def retry(
    operation: Callable[[], Awaitable[T]],
    *,
    what: str,
    transient: tuple[type[BaseException], ...],
    attempts: int | None = None,
    first_delay_s: float = 0.05,
    max_delay_s: float = 5.0,
    error: type[SegstreamError] = ServiceError,
    on_failure: Callable[[bool], None] | None = None,
) -> T:
    """Await ``operation()`` until it succeeds, sleeping between failures.

    Args:
        operation: makes a fresh awaitable per attempt; it must be safe to repeat.
        what: names the operation in logs and errors ("apply batch to Redis").
        transient: exception types that mean "try again"; any other propagates at once.
        attempts: give up after this many failures; ``None`` never gives up.
        error: the SegstreamError subclass raised when giving up.
        on_failure: called after each transient failure with ``True`` when a retry follows
            (``False`` when giving up), e.g. to count errors and retries in metrics.

    Raises:
        ``error``: after ``attempts`` failures, chained to the last one.
    """
    delay = backoff_delays(first_delay_s, max_delay_s)
    failures = 0
    while True:
        try:
            return await operation()
        except transient as exc:
            failures += 1
            giving_up = attempts is not None and failures >= attempts
            if on_failure is not None:
                on_failure(not giving_up)
            if giving_up:
                raise error(f"{what} failed {failures} times, last: {exc!r}") from exc
            wait = delay(failures)
            level = logging.WARNING if failures < 10 else logging.ERROR
            log.log(level, "%s failed (%r), retry %d in %.2f s", what, exc, failures, wait)
            await asyncio.sleep(wait)
