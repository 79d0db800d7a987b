"""Events published from a thread while a test does something else (a model switch, a broker
pause): paced, with the time each one was sent."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence

from segstream.errors import SegstreamError
from segstream.settings import Settings
from segstream.stream.lifecycle.replay import ReplayEvent, publish_events
from tests.waiting import wait_until

__all__ = ["BackgroundReplay"]


class BackgroundReplay:
    """Publishes events from a thread, paced; records when each event was sent."""

    def __init__(self, settings: Settings, events: Sequence[ReplayEvent], rate: float) -> None:
        self.events = events
        self.sent_at: list[float] = []
        """time.monotonic() when each event was handed to the producer, in order (the
        broker has it within milliseconds: the producer lingers 5 ms)."""
        self.error: SegstreamError | None = None
        topics = {"users": settings.topic_users, "orders": settings.topic_orders}

        def publish() -> None:
            try:
                asyncio.run(
                    publish_events(
                        events,
                        settings=settings,
                        topics=topics,
                        rate=rate,
                        progress=lambda n: self.sent_at.extend([time.monotonic()] * n),
                    )
                )
            except SegstreamError as exc:  # reported by wait_for()/join(), in the test's thread
                self.error = exc

        self._thread = threading.Thread(target=publish, daemon=True)
        self._thread.start()

    def wait_for(self, share: float, timeout_s: float = 120.0) -> None:
        """Block until ``share`` of the events were sent."""

        def sent() -> bool:
            assert self.error is None, self.error
            return len(self.sent_at) >= share * len(self.events)

        wait_until(sent, timeout_s, lambda: f"replay stuck at {len(self.sent_at)}", interval_s=0.05)

    def join(self, timeout_s: float = 120.0) -> None:
        """Wait for the end of the replay; re-raise its error."""
        self._thread.join(timeout_s)
        assert not self._thread.is_alive(), "replay did not finish"
        if self.error is not None:
            raise self.error

    def close(self, timeout_s: float = 60.0) -> bool:
        """Wait up to ``timeout_s`` for the thread to end, without judging the replay; False
        if it still runs (its producer, still retrying, would outlive the test)."""
        self._thread.join(timeout_s)
        return not self._thread.is_alive()
