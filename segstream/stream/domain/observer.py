"""What the worker reports as it runs: a small protocol, so the worker needs no metrics library.

The batch processor, the model holder and drift mode call these methods with plain values; the
HTTP side's :class:`~segstream.stream.http.metrics.Metrics` implements them as Prometheus series.
Anything with these methods will do (a test's recorder, another metrics backend).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

__all__ = ["WorkerObserver"]


class WorkerObserver(Protocol):
    """Receives the worker's counts; every method is cheap and never raises."""

    def consumed(self, topic: str, n: int = 1) -> None:
        """``n`` input records of ``topic`` were taken."""

    def observe_batch(self, seconds: float, n: int) -> None:
        """A batch of ``n`` records took ``seconds`` end to end."""

    def changes(self, n: int = 1) -> None:
        """``n`` segment changes were published."""

    def dead_letter(self, reason: str, n: int = 1) -> None:
        """``n`` inputs were dead-lettered for ``reason``."""

    def misplaced(self, topic: str, n: int = 1) -> None:
        """``n`` records of ``topic`` arrived on a partition their key does not hash to."""

    def unknown_fields(self, topic: str, n: int = 1) -> None:
        """``n`` valid records of ``topic`` carried fields no event has (ignored)."""

    def redis_error(self) -> None:
        """A Redis call failed with a transient error."""

    def redis_retry(self) -> None:
        """A failed Redis call is being retried."""

    def redis_wait_timeout(self) -> None:
        """Fewer replicas than ``SEGSTREAM_REDIS_MIN_REPLICAS`` acknowledged a write step in time
        (the step is retried, its batch not acknowledged; also counted as an error and a retry)."""

    def redis_degraded(self, primary: str, degraded: bool) -> None:
        """Redis ``primary`` has fewer replicas than ``SEGSTREAM_REDIS_MIN_REPLICAS``
        (``degraded``: its writes are acknowledged without them) or enough again."""

    def stall(self, kind: str) -> None:
        """The worker stopped progressing: a ``batch`` or ``commit`` overran its deadline.

        Called once per stall, from the watchdog's thread (implementations must be
        thread-safe; Prometheus counters are)."""

    def set_model(self, version: str) -> None:
        """The model version now in use."""

    def model_reload_failed(self) -> None:
        """A new model version was refused; the old one stays in use."""

    def set_drift(
        self,
        model_version: str,
        state_version: int,
        distances: Iterable[float],
        drift_epoch: int = 0,
    ) -> None:
        """Drift mode's shared centres moved: their version, distance from the trained ones,
        and the drift epoch the process assigns with."""
