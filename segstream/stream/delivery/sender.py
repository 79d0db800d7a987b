"""POSTing one batch to one destination: signature, idempotency key, rate limit, retries.

:class:`Sender` owns the destination's HTTP session and token bucket. :meth:`Sender.deliver`
returns once the destination acknowledged the batch (any 2xx) or the batch is given up: its
``max_attempts`` are spent, or the destination answered a 4xx that a retry cannot cure (not 408,
425 or 429). It never raises for an HTTP failure: the caller dead-letters a given-up batch.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

import aiohttp

from segstream.stream.delivery.backoff import is_retriable, next_delay, retry_after_s
from segstream.stream.delivery.config import Destination
from segstream.stream.delivery.metrics import DeliveryMetrics
from segstream.stream.delivery.payload import DeliveryEvent, batch_body, batch_key
from segstream.stream.delivery.ratelimit import RateLimiter
from segstream.stream.delivery.signing import SIGNATURE_HEADER, sign

__all__ = ["Outcome", "Sender"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Outcome:
    """How a batch ended: acknowledged, or given up after ``attempts`` with the last status
    (None: no HTTP answer) and a short description of the last failure."""

    delivered: bool
    attempts: int
    last_status: int | None
    error: str


def _reason(status: int | None, error: str) -> str:
    if status is None:
        return "timeout" if error.startswith("timeout") else "connection"
    if status == 429:
        return "status_429"
    return "status_5xx" if status >= 500 else "status_4xx"


class Sender:
    """The HTTP side of one destination. Use as ``async with Sender(...) as sender``."""

    def __init__(self, destination: Destination, metrics: DeliveryMetrics) -> None:
        self.destination = destination
        self._metrics = metrics
        self._limiter = RateLimiter(destination.rate_per_s)
        self._secret = destination.secret.get_secret_value().encode()
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Sender:
        timeout = aiohttp.ClientTimeout(total=self.destination.timeout_s)
        self._session = aiohttp.ClientSession(timeout=timeout, raise_for_status=False)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()

    async def _post(self, body: bytes, key: str) -> tuple[int | None, str, float | None]:
        """One attempt: (status or None, failure text, Retry-After seconds if given)."""
        assert self._session is not None, "use Sender as an async context manager"
        headers = {
            **self.destination.headers,
            "Content-Type": "application/json",
            "Idempotency-Key": key,
            SIGNATURE_HEADER: sign(self._secret, int(time.time()), body),
        }
        started = time.monotonic()
        try:
            async with self._session.post(self.destination.url, data=body, headers=headers) as r:
                await r.read()
                after = retry_after_s(r.headers.get("Retry-After"), time.time())
                return r.status, f"HTTP {r.status}", after
        except TimeoutError:
            return None, f"timeout after {self.destination.timeout_s:g} s", None
        except aiohttp.ClientError as exc:
            return None, f"{type(exc).__name__}: {exc}", None
        finally:
            self._metrics.request.labels(self.destination.name).observe(time.monotonic() - started)

    async def deliver(self, events: Sequence[DeliveryEvent]) -> Outcome:
        """POST ``events`` (one body) until acknowledged or given up (see the module)."""
        name, body, key = self.destination.name, batch_body(events), batch_key(events)
        attempt = 0
        while True:
            attempt += 1
            await self._limiter.acquire()
            status, error, after = await self._post(body, key)
            if status is not None and 200 <= status < 300:
                self._metrics.delivered.labels(name).inc(len(events))
                return Outcome(True, attempt, status, "")
            if not is_retriable(status) or attempt >= self.destination.max_attempts:
                self._metrics.failed.labels(name).inc(len(events))
                log.error(
                    "destination %s: giving up a batch of %d events after %d attempts: %s",
                    name,
                    len(events),
                    attempt,
                    error,
                )
                return Outcome(False, attempt, status, error)
            self._metrics.retries.labels(name, _reason(status, error)).inc()
            wait = next_delay(
                attempt, self.destination.backoff_first_s, self.destination.backoff_max_s, after
            )
            log.warning("destination %s: %s; retry %d in %.2f s", name, error, attempt, wait)
            await asyncio.sleep(wait)
