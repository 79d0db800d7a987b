"""A token bucket: at most ``rate`` requests per second to one destination, bursts of one."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

__all__ = ["RateLimiter"]


class RateLimiter:
    """Spaces acquisitions at least ``1 / rate_per_s`` seconds apart (monotonic clock).

    Each destination has its own: a slow or limited destination never delays another.
    """

    def __init__(self, rate_per_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._interval = 1.0 / rate_per_s
        self._clock = clock
        self._next = clock()

    def wait_s(self) -> float:
        """Take the next slot; the seconds until it (0 when one is free now)."""
        now = self._clock()
        start = max(now, self._next)
        self._next = start + self._interval
        return start - now

    async def acquire(self) -> None:
        """Wait for the next slot."""
        delay = self.wait_s()
        if delay > 0:
            await asyncio.sleep(delay)
