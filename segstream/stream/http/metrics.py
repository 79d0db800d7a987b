"""The worker's Prometheus metrics, in a registry of its own, and rolling rates for the status page.

:class:`Metrics` is the one object the worker (phase 2: the agent and the batch processor)
reports to, through small methods taking plain values; the web side renders it at
``GET /metrics`` (text format 0.0.4) and reads :meth:`Metrics.throughput` for the status page.
Each instance owns a :class:`~prometheus_client.CollectorRegistry`, so two apps in one process
(tests, a worker serving its own API) never share or double-register series.

Series (``segstream_`` prefix; counters get ``_total`` in the exposition):

==========================================  =========  ==========================================
name                                        type       labels / meaning
==========================================  =========  ==========================================
segstream_events_consumed_total             counter    ``topic``: input records taken from Kafka
segstream_misplaced_records_total           counter    ``topic``: records on a partition their key
                                                       does not hash to (murmur2); a producer
                                                       with another partitioner (kcat's CRC32)
segstream_unknown_fields_total              counter    ``topic``: valid records that carried a
                                                       field no event has, ignored
                                                       (``SEGSTREAM_UNKNOWN_FIELDS=ignore``);
                                                       ``predict`` for POST /predict bodies
segstream_batch_processing_seconds          histogram  wall time of one batch, end to end
segstream_batch_events                      histogram  records per batch
segstream_segment_changes_total             counter    segment changes published
segstream_dead_letters_total                counter    ``reason``: rejected inputs (every known
                                                       reason is present from the start, at 0)
segstream_segment_population                gauge      ``model_version``, ``segment``: users
segstream_model_info                        info       ``version`` of the model in use
segstream_redis_errors_total                counter    failed Redis calls (transient errors)
segstream_redis_retries_total               counter    Redis calls retried after a failure
segstream_redis_wait_timeouts_total         counter    write steps whose WAIT saw fewer replicas
                                                       than SEGSTREAM_REDIS_MIN_REPLICAS in time
                                                       (the step is retried, the batch not acked)
segstream_redis_degraded                    gauge      ``primary``: 1 while that Redis primary has
                                                       fewer replicas than
                                                       SEGSTREAM_REDIS_MIN_REPLICAS (its writes
                                                       acked without them), else 0
segstream_stalls_total                      counter    ``kind``: ``batch`` or ``commit`` overran
                                                       its deadline (the progress watchdog)
segstream_consumer_lag_messages             gauge      ``topic``, ``partition``: records pending
segstream_consumer_lag_seconds              gauge      ``topic``, ``partition``: age of the oldest
                                                       pending record, 0 when caught up; absent
                                                       while unknown
segstream_consumer_committed_offset         gauge      ``topic``, ``partition``: the group's
                                                       committed offset; absent before the
                                                       first commit (a stalled partition is one
                                                       whose offset stops moving while it has lag)
segstream_ready                             gauge      ``check`` (``kafka``, ``redis``, ``model``,
                                                       ``progress``): 1 while that check of
                                                       ``/readyz`` passes, 0 while it fails; read
                                                       at every scrape
segstream_model_reload_failures_total       counter    new model versions refused (failed to load
                                                       or validate); the old model stays in use
segstream_drift_distance                    gauge      ``model_version``, ``segment``: distance of
                                                       the drifted centre from its trained one
                                                       (PCA units; drift mode only)
segstream_drift_state_version               gauge      ``model_version``: version of the shared
                                                       drifted centroids in use (drift mode only)
segstream_drift_epoch                       gauge      ``model_version``: the drift epoch this
                                                       process assigns with (drift mode only)
==========================================  =========  ==========================================
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, generate_latest

from segstream.stream.domain.events import REASONS
from segstream.stream.domain.rates import RollingCounter
from segstream.stream.kafka.lag import PartitionLag
from segstream.stream.worker.watchdog import STALL_KINDS

__all__ = ["CONTENT_TYPE", "Metrics", "Throughput"]

CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4
"""Content type of :meth:`Metrics.exposition`: Prometheus text format 0.0.4."""

LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
"""Bucket bounds of the batch processing histogram, in seconds."""
BATCH_SIZE_BUCKETS = (1, 10, 50, 100, 250, 500, 1000, 2500, 5000, 10_000)
"""Bucket bounds of the batch size histogram, in records."""


@dataclass(frozen=True, slots=True)
class Throughput:
    """Rolling rates over ``window_s`` seconds and totals since the process started."""

    window_s: int
    events_per_s: float
    changes_per_s: float
    dead_letters_per_s: float
    events_total: int
    changes_total: int
    dead_letters_total: int


class Metrics:
    """The worker's metrics: call the recording methods, expose with :meth:`exposition`."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        """A fresh registry with every series declared (counters at 0)."""
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self._consumed = Counter(
            "segstream_events_consumed", "Input records consumed.", ["topic"], registry=r
        )
        self._misplaced = Counter(
            "segstream_misplaced_records",
            "Input records on a partition their key does not hash to (murmur2).",
            ["topic"],
            registry=r,
        )
        self._latency = Histogram(
            "segstream_batch_processing_seconds",
            "Wall time to process one batch (validate, Redis, assign, publish), in seconds.",
            buckets=LATENCY_BUCKETS_S,
            registry=r,
        )
        self._batch = Histogram(
            "segstream_batch_events", "Records per batch.", buckets=BATCH_SIZE_BUCKETS, registry=r
        )
        self._changes = Counter(
            "segstream_segment_changes", "Segment changes published.", registry=r
        )
        self._dead = Counter(
            "segstream_dead_letters",
            "Input records dead-lettered, by reason.",
            ["reason"],
            registry=r,
        )
        for reason in REASONS:
            self._dead.labels(reason=reason)
        self._unknown = Counter(
            "segstream_unknown_fields",
            "Valid input records that carried a field no event has (ignored), by topic.",
            ["topic"],
            registry=r,
        )
        self._population = Gauge(
            "segstream_segment_population",
            "Users whose current segment is this one, under this model version.",
            ["model_version", "segment"],
            registry=r,
        )
        self._model = Info("segstream_model", "The model used for assignment.", registry=r)
        self._redis_errors = Counter(
            "segstream_redis_errors", "Redis calls that failed with a transient error.", registry=r
        )
        self._redis_retries = Counter(
            "segstream_redis_retries", "Redis calls retried after a failure.", registry=r
        )
        self._redis_wait_timeouts = Counter(
            "segstream_redis_wait_timeouts",
            "Write steps whose WAIT saw fewer replicas than SEGSTREAM_REDIS_MIN_REPLICAS within "
            "SEGSTREAM_REDIS_WAIT_TIMEOUT_MS (retried; the batch is not acknowledged meanwhile).",
            registry=r,
        )
        self._redis_degraded = Gauge(
            "segstream_redis_degraded",
            "1 while the Redis primary has fewer replicas than SEGSTREAM_REDIS_MIN_REPLICAS "
            "(its writes are acknowledged without waiting for them), else 0.",
            ["primary"],
            registry=r,
        )
        self._stalls = Counter(
            "segstream_stalls",
            "Times the worker stopped progressing: a batch or an offset commit overran its "
            "deadline (SEGSTREAM_BATCH_DEADLINE_S, SEGSTREAM_COMMIT_DEADLINE_S).",
            ["kind"],
            registry=r,
        )
        for kind in STALL_KINDS:
            self._stalls.labels(kind=kind)
        self._lag_messages = Gauge(
            "segstream_consumer_lag_messages",
            "Records of the partition not yet processed by the worker group.",
            ["topic", "partition"],
            registry=r,
        )
        self._lag_seconds = Gauge(
            "segstream_consumer_lag_seconds",
            "Age in seconds of the oldest record not yet processed; 0 when caught up.",
            ["topic", "partition"],
            registry=r,
        )
        self._committed = Gauge(
            "segstream_consumer_committed_offset",
            "The worker group's committed offset of the partition (next record to process).",
            ["topic", "partition"],
            registry=r,
        )
        self._ready = Gauge(
            "segstream_ready",
            "1 while this readiness check of /readyz passes, 0 while it fails.",
            ["check"],
            registry=r,
        )
        self._reload_failures = Counter(
            "segstream_model_reload_failures",
            "New model versions refused (they failed to load or validate); the old one is kept.",
            registry=r,
        )
        self._drift_distance = Gauge(
            "segstream_drift_distance",
            "Distance of each drifted centre from its trained position, in PCA units.",
            ["model_version", "segment"],
            registry=r,
        )
        self._drift_version = Gauge(
            "segstream_drift_state_version",
            "Version of the shared drifted centroids this process assigns with.",
            ["model_version"],
            registry=r,
        )
        self._drift_epoch = Gauge(
            "segstream_drift_epoch",
            "Drift epoch (numbered snapshot of the shared centres) this process assigns with.",
            ["model_version"],
            registry=r,
        )
        self.events = RollingCounter(clock=clock)
        self.changes_rate = RollingCounter(clock=clock)
        self.dead_letters_rate = RollingCounter(clock=clock)
        self.model_version: str | None = None

    # --- recording (called by the worker) ---------------------------------------------------

    def consumed(self, topic: str, n: int = 1) -> None:
        """``n`` records of ``topic`` were taken from Kafka."""
        if n:
            self._consumed.labels(topic=topic).inc(n)
            self.events.add(n)

    def observe_batch(self, seconds: float, n: int) -> None:
        """A batch of ``n`` records took ``seconds`` to process, end to end."""
        self._latency.observe(seconds)
        self._batch.observe(n)

    def changes(self, n: int = 1) -> None:
        """``n`` segment changes were published."""
        if n:
            self._changes.inc(n)
            self.changes_rate.add(n)

    def misplaced(self, topic: str, n: int = 1) -> None:
        """``n`` records of ``topic`` arrived off their key's partition (a non-Java producer)."""
        if n:
            self._misplaced.labels(topic=topic).inc(n)

    def unknown_fields(self, topic: str, n: int = 1) -> None:
        """``n`` valid records of ``topic`` carried fields no event has (ignored)."""
        if n:
            self._unknown.labels(topic=topic).inc(n)

    def dead_letter(self, reason: str, n: int = 1) -> None:
        """``n`` records were dead-lettered for ``reason`` (an ``events.REASONS`` code)."""
        if n:
            self._dead.labels(reason=reason).inc(n)
            self.dead_letters_rate.add(n)

    def redis_error(self) -> None:
        """A Redis call failed with a transient error."""
        self._redis_errors.inc()

    def redis_retry(self) -> None:
        """A failed Redis call is being retried."""
        self._redis_retries.inc()

    def redis_wait_timeout(self) -> None:
        """Too few replicas acknowledged a write step within the WAIT timeout."""
        self._redis_wait_timeouts.inc()

    def redis_degraded(self, primary: str, degraded: bool) -> None:
        """Redis ``primary`` is written degraded (too few replicas), or no longer."""
        self._redis_degraded.labels(primary=primary).set(1 if degraded else 0)

    def stall(self, kind: str) -> None:
        """The worker stalled: ``kind`` (``batch``, ``commit``) overran its deadline."""
        self._stalls.labels(kind=kind).inc()

    def set_population(self, populations: Mapping[str, Mapping[int, int]]) -> None:
        """Replace the population gauges: model version -> segment -> users."""
        self._population.clear()
        for version, counts in populations.items():
            for segment, users in counts.items():
                self._population.labels(model_version=version, segment=str(segment)).set(users)

    def set_readiness(self, checks: Mapping[str, bool]) -> None:
        """Replace the readiness gauges: check name -> whether it passes (``/readyz``'s checks)."""
        self._ready.clear()
        for check, ok in checks.items():
            self._ready.labels(check=check).set(1 if ok else 0)

    def set_model(self, version: str) -> None:
        """The model in use is now ``version``."""
        self.model_version = version
        self._model.info({"version": version})

    def model_reload_failed(self) -> None:
        """A new model version was refused; the one in use stays."""
        self._reload_failures.inc()

    def set_drift(
        self,
        model_version: str,
        state_version: int,
        distances: Iterable[float],
        drift_epoch: int = 0,
    ) -> None:
        """Replace the drift gauges: the shared centroids' version, each centre's distance and
        the drift epoch assigned with.

        The i-th of ``distances`` is segment i's distance from its trained centre (PCA units).
        """
        self._drift_distance.clear()
        self._drift_version.clear()
        self._drift_epoch.clear()
        self._drift_version.labels(model_version=model_version).set(state_version)
        self._drift_epoch.labels(model_version=model_version).set(drift_epoch)
        for segment, distance in enumerate(distances):
            labels = {"model_version": model_version, "segment": str(segment)}
            self._drift_distance.labels(**labels).set(distance)

    def set_lag(self, partitions: Iterable[PartitionLag]) -> None:
        """Replace the lag gauges with these partitions' figures (others are dropped)."""
        self._lag_messages.clear()
        self._lag_seconds.clear()
        self._committed.clear()
        for p in partitions:
            labels = {"topic": p.topic, "partition": str(p.partition)}
            self._lag_messages.labels(**labels).set(p.lag)
            if p.committed is not None:
                self._committed.labels(**labels).set(p.committed)
            if p.seconds_behind is not None:
                self._lag_seconds.labels(**labels).set(p.seconds_behind)

    # --- reading (the web side) -------------------------------------------------------------

    def throughput(self, window_s: int = 10) -> Throughput:
        """Rates over the last ``window_s`` seconds, and totals."""
        return Throughput(
            window_s=window_s,
            events_per_s=self.events.rate(window_s),
            changes_per_s=self.changes_rate.rate(window_s),
            dead_letters_per_s=self.dead_letters_rate.rate(window_s),
            events_total=self.events.total,
            changes_total=self.changes_rate.total,
            dead_letters_total=self.dead_letters_rate.total,
        )

    def exposition(self) -> bytes:
        """Every series in the Prometheus text format (see :data:`CONTENT_TYPE`)."""
        return generate_latest(self.registry)
