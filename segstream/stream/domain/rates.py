"""Rolling event rates over the last seconds (for the status page and the change feed)."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

__all__ = ["RollingCounter"]


class RollingCounter:
    """Counts in one-second buckets over the last ``horizon_s`` seconds, for rates.

    Cost per :meth:`add` is O(1); memory is at most ``horizon_s`` buckets. ``clock`` gives
    monotonic seconds (injected by tests).
    """

    def __init__(self, horizon_s: int = 60, clock: Callable[[], float] = time.monotonic) -> None:
        if horizon_s < 1:
            raise ValueError(f"horizon_s must be at least 1, got {horizon_s}")
        self.horizon_s = horizon_s
        self.clock = clock
        self.total = 0
        self._buckets: deque[list[int]] = deque()  # [second, count], oldest first
        self._born = clock()

    def _trim(self, now_s: int) -> None:
        while self._buckets and self._buckets[0][0] <= now_s - self.horizon_s:
            self._buckets.popleft()

    def add(self, n: int = 1) -> None:
        """Count ``n`` more now."""
        now_s = int(self.clock())
        self.total += n
        if self._buckets and self._buckets[-1][0] == now_s:
            self._buckets[-1][1] += n
        else:
            self._buckets.append([now_s, n])
            self._trim(now_s)

    def rate(self, window_s: int = 10) -> float:
        """Mean count per second over the last ``window_s`` whole seconds (current one excluded).

        The current second is still filling, so it is left out; a counter younger than the
        window is averaged over its age, so a fresh worker does not show a rate too low.
        """
        window_s = max(1, min(window_s, self.horizon_s - 1))
        now = self.clock()
        now_s = int(now)
        self._trim(now_s)
        count = sum(c for second, c in self._buckets if now_s - window_s <= second < now_s)
        span = min(float(window_s), max(now_s - int(self._born), 1))
        return count / span
