"""The web side's live view of the system: lag poller, change feed, readiness, status document.

:class:`LiveView` owns what the HTTP handlers read besides a single user: a
:class:`~segstream.stream.kafka.lag.LagReader` polled every ``lag_interval_s`` (its figures also go
to the lag gauges of :class:`~segstream.stream.http.metrics.Metrics`), the
:class:`~segstream.stream.kafka.changefeed.ChangeFeed`, the population cache and the serving model.
Its two background loops (:meth:`LiveView.run`) survive Kafka being down: they record the
error, back off and try again, so the API starts and answers (not ready) without a broker.

Group throughput comes from Kafka too: successive lag snapshots give the rate at which the
group's committed offsets advance (records processed per second, all workers together) and the
rate at which the input topics' end offsets advance (records produced per second). It is the
same whichever process serves the page; commits happen about every second, so it is averaged
over ``window_s`` (10 s).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import asdict
from typing import Any

import redis.asyncio as aioredis

from segstream.errors import ArtifactError, ServiceError, describe
from segstream.settings import Settings
from segstream.stream.clients.retry import KAFKA_TRANSIENT, REDIS_TRANSIENT, backoff_delays
from segstream.stream.domain.events import UnknownFieldLog
from segstream.stream.http.delivery import DeliveryWatch
from segstream.stream.http.metrics import Metrics
from segstream.stream.http.serving import ServingModel
from segstream.stream.kafka.changefeed import ChangeFeed
from segstream.stream.kafka.lag import LagReader, LagSnapshot
from segstream.stream.sources.select import input_topics
from segstream.stream.state.populations import PopulationCache, Populations

__all__ = ["LiveView", "end_tasks", "offset_rates"]

log = logging.getLogger(__name__)

# The failures each probe reports rather than raises (named: a starred tuple in `except` is
# opaque to the type checker).
_LAG_ERRORS: tuple[type[BaseException], ...] = (ServiceError, *KAFKA_TRANSIENT)
_PING_ERRORS: tuple[type[BaseException], ...] = (RuntimeError, *KAFKA_TRANSIENT)
_REDIS_ERRORS: tuple[type[BaseException], ...] = (*REDIS_TRANSIENT, TimeoutError)

RECANCEL_S = 1.0
"""How long :func:`end_tasks` waits before cancelling the tasks still running again, seconds."""

RATE_WINDOW_S = 10.0
"""Window of the group throughput figures, in seconds."""


def offset_rates(
    history: Sequence[tuple[float, int, int]], window_s: float = RATE_WINDOW_S
) -> tuple[float | None, float | None]:
    """``(processed/s, produced/s)`` from ``(taken_at, committed_total, end_total)`` samples.

    Uses the newest sample and the oldest one at most ``window_s`` older (at least two samples
    0.5 s apart, else ``(None, None)``). A total that went down (a topic recreated) gives 0.
    """
    if len(history) < 2:
        return None, None
    newest = history[-1]
    oldest = next((h for h in history if newest[0] - h[0] <= window_s), newest)
    span = newest[0] - oldest[0]
    if span < 0.5:
        return None, None
    processed = max(0, newest[1] - oldest[1]) / span
    produced = max(0, newest[2] - oldest[2]) / span
    return processed, produced


def _check(ok: bool, detail: str) -> dict[str, Any]:
    return {"ok": ok, "detail": detail}


async def end_tasks(tasks: Sequence[asyncio.Task[Any]]) -> None:
    """Cancel ``tasks`` and return once every one has ended, whatever it raised.

    A task can swallow its cancellation and go on: ``asyncio.wait_for`` before Python 3.12
    returns its operation's result when the cancellation arrives as that operation ends, and
    a library may do the same. So a task still running :data:`RECANCEL_S` after it was
    cancelled is cancelled again, rather than awaited for ever (a stop of the HTTP side once
    hung that way).
    """
    running = set(tasks)
    while running:
        for task in running:
            task.cancel()
        _, running = await asyncio.wait(running, timeout=RECANCEL_S)
    for task in tasks:
        if not task.cancelled():
            task.exception()  # retrieved: the loops' own errors were reported where raised


class LiveView:
    """Background readers and the documents built from them; see the module docstring."""

    def __init__(
        self,
        settings: Settings,
        *,
        metrics: Metrics,
        serving: ServingModel,
        redis: aioredis.Redis,
        prefix: str,
        lag_interval_s: float = 2.0,
        population_min_age_s: float = 1.0,
        stalls: Callable[[], Sequence[str]] | None = None,
        degraded: Callable[[], Sequence[str]] | None = None,
        delivery: DeliveryWatch | None = None,
    ) -> None:
        """``stalls``: why the worker in this process is not progressing (its watchdog's
        reasons); ``degraded``: the Redis primaries it writes without the replicas
        ``SEGSTREAM_REDIS_MIN_REPLICAS`` asks for, one line each; both ``None`` when no
        worker runs here (``segstream api``). ``delivery``: the webhook delivery groups'
        reader, when delivery is configured (the page's Delivery section)."""
        self.settings = settings
        self.unknown_log = UnknownFieldLog()
        """Fields ignored in ``POST /predict`` bodies already logged (each once)."""
        self.stalls = stalls
        self.degraded = degraded
        self.delivery = delivery
        self.metrics = metrics
        self.serving = serving
        self.redis = redis
        self.populations = PopulationCache(
            redis, prefix, cluster=settings.redis_cluster, min_age_s=population_min_age_s
        )
        self.feed = ChangeFeed(settings, settings.topic_segment_changes)
        # The inputs of the configured source (JSON topics or the change topics).
        self.lag_reader = LagReader(settings, settings.app_id, list(input_topics(settings)))
        self.lag_interval_s = lag_interval_s
        self.lag: LagSnapshot | None = None
        self.lag_error: str | None = "not read yet"
        self.members: int | None = None
        """Consumers in the worker group at the last lag read; None before the first."""
        self._lag_started = False
        self._history: deque[tuple[float, int, int]] = deque(maxlen=256)

    # --- background -------------------------------------------------------------------------

    async def run(self) -> None:
        """Poll the lag and follow the change feed until cancelled."""
        tasks = [
            asyncio.create_task(self._poll_lag(), name="segstream-lag-poll"),
            asyncio.create_task(self.feed.run(), name="segstream-change-feed"),
        ]
        if self.delivery is not None:
            tasks.append(asyncio.create_task(self.delivery.run(), name="segstream-delivery"))
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            for task in done:
                task.result()  # the loops only end on a bug: let it propagate, loudly
        finally:
            await end_tasks(tasks)
            await self.lag_reader.stop()
            self._lag_started = False

    async def _poll_lag(self) -> None:
        delay = backoff_delays(0.5, 10.0)
        failures = 0
        while True:
            try:
                await self.refresh_lag()
            except _LAG_ERRORS as exc:
                failures += 1
                # A read that fails on a broker gone away is worded as the failed connect
                # would be: the operator sees one message for one cause, whichever came first.
                self.lag_error = (
                    describe(exc)
                    if isinstance(exc, ServiceError)
                    else f"cannot reach Kafka at {self.settings.kafka_bootstrap_servers}: "
                    f"{describe(exc)}"
                )
                log.debug("lag poll failed (%s), retry %d", self.lag_error, failures)
                await self.lag_reader.stop()
                self._lag_started = False
                await asyncio.sleep(delay(failures))
                continue
            failures = 0
            await asyncio.sleep(self.lag_interval_s)

    async def refresh_lag(self) -> LagSnapshot:
        """Read the lag now, publish it to the metrics and the status page, and return it.

        Raises:
            ServiceError, aiokafka's errors, TimeoutError: Kafka did not answer.
        """
        if not self._lag_started:
            await self.lag_reader.start()
            self._lag_started = True
        async with asyncio.timeout(15.0):
            snapshot = await self.lag_reader.read()
        async with asyncio.timeout(15.0):
            self.members = await self.lag_reader.members()
        self.lag, self.lag_error = snapshot, None
        self.metrics.set_lag(snapshot.partitions)
        ends = sum(p.end for p in snapshot.partitions)
        self._history.append((snapshot.taken_at, snapshot.committed_total, ends))
        return snapshot

    # --- checks -----------------------------------------------------------------------------

    async def readiness(self, timeout_s: float = 2.0) -> dict[str, Any]:
        """Kafka and Redis reachable, model loaded, the worker progressing: ``/readyz``."""
        kafka, redis_check = await asyncio.gather(
            self._check_kafka(timeout_s), self._check_redis(timeout_s)
        )
        try:
            model = self.serving.current()
            model_check = _check(True, f"model {model.version} (k={model.k})")
        except ArtifactError as exc:
            model_check = _check(False, f"no model loaded: {exc}")
        checks = {"kafka": kafka, "redis": redis_check, "model": model_check}
        if self.stalls is not None:
            stalls = list(self.stalls())
            checks["progress"] = _check(not stalls, "; ".join(stalls) or "batches and commits")
        if self.degraded is not None:
            # Not a stall: batches go on. A restart cannot cure it, so it is said here only.
            short = list(self.degraded())
            checks["redis_replicas"] = _check(
                not short, "; ".join(short) or "every primary has its replicas"
            )
        reasons = [f"{name}: {c['detail']}" for name, c in checks.items() if not c["ok"]]
        return {"ready": not reasons, "reasons": reasons, "checks": checks}

    async def _check_kafka(self, timeout_s: float) -> dict[str, Any]:
        where = self.settings.kafka_bootstrap_servers
        if not self._lag_started:
            error = self.lag_error or "not connected yet"
            return _check(False, error if where in error else f"{where}: {error}")
        try:
            async with asyncio.timeout(timeout_s):
                brokers = await self.lag_reader.ping()
        except _PING_ERRORS as exc:
            return _check(False, f"{where} did not answer: {describe(exc)}")
        return _check(True, f"{brokers} broker(s) at {where}")

    async def _check_redis(self, timeout_s: float) -> dict[str, Any]:
        try:
            async with asyncio.timeout(timeout_s):
                await self.redis.ping()
        except _REDIS_ERRORS as exc:
            return _check(False, f"unreachable: {describe(exc)}")
        return _check(True, "PONG")

    # --- documents --------------------------------------------------------------------------

    async def refresh_gauges(self) -> None:
        """Readiness, model info and population gauges; the last two best effort (left as
        they were on failure).

        Readiness is checked afresh at every scrape (the same checks as ``/readyz``), so an
        alert on it sees what a load balancer's probe would see at that moment.
        The populations are at most the cache's age limit old: a due recount is waited for.
        Scrapes come seconds or minutes apart, so figures from the previous scrape's time
        (what a background recount would give) could be that stale for good.
        """
        readiness = await self.readiness()
        self.metrics.set_readiness({n: c["ok"] for n, c in readiness["checks"].items()})
        try:
            self.metrics.set_model(self.serving.current().version)
        except ArtifactError as exc:
            log.debug("no model for the metrics: %s", exc)
        try:
            populations = await self.populations.get()
        except REDIS_TRANSIENT as exc:
            log.debug("no populations for the metrics: %s", exc)
            return
        self.metrics.set_population(populations.by_version)

    async def status(self) -> dict[str, Any]:
        """The ``/status.json`` document; each part carries its own error instead of failing."""
        model_doc: dict[str, Any] = {"version": None, "k": None, "error": None}
        try:
            model = self.serving.current()
            model_doc.update(version=model.version, k=model.k)
        except ArtifactError as exc:
            model_doc["error"] = str(exc)
        document = {
            "generated_at": time.time(),
            "health": await self.readiness(),
            "model": model_doc,
            "throughput": self._throughput(),
            "lag": self._lag_doc(),
            "populations": await self._populations_doc(model_doc["version"], model_doc["k"]),
            "changes": {
                "connected": self.feed.connected,
                "error": self.feed.last_error,
                "latest": [c.as_json() for c in self.feed.recent(20)],
            },
        }
        if self.delivery is not None:  # absent, not empty, when delivery is not configured
            document["delivery"] = self.delivery.document()
        return document

    def note_unknown_fields(self, source: str, names: tuple[str, ...]) -> None:
        """An input of ``source`` (``predict``) carried fields no request has, ignored: count
        it (``segstream_unknown_fields_total``) and log each field the first time."""
        self.metrics.unknown_fields(source)
        for line in self.unknown_log.first_times(source, names):
            log.warning("%s", line)

    def _throughput(self) -> dict[str, Any]:
        # Rates from a broker that stopped answering would be the last ones measured, shown
        # as if current: unknown (None) is the truth until it answers again.
        processed, produced = (
            offset_rates(list(self._history)) if self.lag_error is None else (None, None)
        )
        return {
            "window_s": RATE_WINDOW_S,
            "processed_per_s": processed,
            "produced_per_s": produced,
            "changes_per_s": (
                self.feed.rate.rate(int(RATE_WINDOW_S))
                if self.feed.connected and self.lag_error is None
                else None
            ),
            "this_process": asdict(self.metrics.throughput(int(RATE_WINDOW_S))),
        }

    def _lag_doc(self) -> dict[str, Any]:
        snapshot = self.lag
        doc: dict[str, Any] = {
            "group": self.settings.app_id,
            "members": self.members,
            "error": self.lag_error,
            "taken_at": None,
            "total": None,
            "max_seconds_behind": None,
            "partitions": [],
            "missing_topics": [],
        }
        if snapshot is not None:
            doc.update(
                taken_at=snapshot.taken_at,
                total=snapshot.total_lag,
                max_seconds_behind=snapshot.max_seconds_behind,
                partitions=[asdict(p) for p in snapshot.partitions],
                missing_topics=list(snapshot.missing_topics),
            )
        return doc

    async def _populations_doc(self, version: str | None, k: int | None) -> dict[str, Any]:
        try:
            populations: Populations | None = await self.populations.quick()
            failed = self.populations.last_error
            error = None if failed is None else f"Redis: {describe(failed)}; counts are older"
        except REDIS_TRANSIENT as exc:
            populations, error = self.populations.last, f"Redis: {describe(exc)}"
        if populations is None:
            return {"error": error, "segments": [], "unassigned": None, "other_versions": None}
        counts = populations.of(version, k) if version is not None and k is not None else []
        return {
            "error": error,
            "model_version": version,
            "segments": [{"segment": s, "users": n} for s, n in enumerate(counts)],
            "unassigned": populations.unassigned,
            "other_versions": populations.elsewhere(version) if version else populations.users,
            "counted_at": populations.counted_at,
        }
