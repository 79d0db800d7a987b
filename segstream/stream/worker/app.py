"""The Faust application: one agent over the users and orders topics, in batches.

``create_app(settings)`` builds a faust.App whose single agent consumes one channel over both
input topics. They are co-partitioned by user_id, and Faust's partition assignor gives the
same partition number of both topics to the same worker, so each user's events are handled by
one coroutine, in order. Any number of workers with the same ``app_id`` form one consumer
group and share the partitions.

The agent only does I/O: it opens the worker's parts and makes its
:class:`~segstream.stream.worker.batching.BatchPipeline` the fetcher's sink, so the input
records (raw bytes, decoded by :mod:`segstream.stream.domain.events`, because the dead-letter
topic needs the original bytes) go from the fetch loop straight to the pipeline in chunks,
without Faust's per-record conductor, stream and acks (direct delivery,
:mod:`~segstream.stream.worker.fetcher`); the agent's own Faust stream stays empty. The
pipeline's task runs :class:`~segstream.stream.worker.processor.BatchProcessor` on the records in
order while the fetcher reads on. A record is acked only once its batch's outputs were
acknowledged by the broker (one ``ack_all`` per batch), and Faust's consumer commits only
acked offsets. If a batch fails, its events are never
acked (they are redelivered to whoever owns the partition next) and the worker stops with an
error instead of skipping them.

Faust settings that matter here, and why:
- raw key/value serializers: Faust's ``value_type=dict`` does not decode; we need the bytes;
- ``consumer_auto_offset_reset="earliest"``: a new group reads the topics from the start;
- a short session timeout and heartbeat: a dead worker's partitions move in seconds, and a
  starting worker joins the group without waiting out a long timeout;
- ``stream_buffer_maxsize`` of 16 batches (:func:`stream_buffer_size`): Faust's default
  buffer throttled fetching well below what the worker can process;
- Faust's own web server is off: the worker process serves segstream's HTTP side (API,
  /metrics, status page; :mod:`segstream.stream.http`), attached as an :data:`Extension` by
  :func:`segstream.stream.service.create_service`;
- Faust's own loggers are raised to WARNING (left at DEBUG they cost ~12% throughput) and
  its Monitor sensor is detached (per-event statistics for Faust's web views, not used).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import faust
import redis.asyncio as aioredis

from segstream.errors import ServiceError
from segstream.logs import Demote, faust_logging_config
from segstream.settings import Settings
from segstream.stream.clients.kafka import faust_credentials, output_producer
from segstream.stream.clients.redis import worker_redis_client
from segstream.stream.clients.retry import describe
from segstream.stream.domain.observer import WorkerObserver
from segstream.stream.domain.topics import Topics
from segstream.stream.drift.shared import shared_drift
from segstream.stream.kafka.publisher import AiokafkaSender
from segstream.stream.kafka.topics import max_message_bytes, partitions_of
from segstream.stream.sources.select import build_source, input_topics
from segstream.stream.state.keys import state_prefix
from segstream.stream.state.replicas import ReplicaShortfall
from segstream.stream.state.store import RedisState
from segstream.stream.worker.assigner import Assigner
from segstream.stream.worker.batching import BatchPipeline
from segstream.stream.worker.consumer import LeanConsumer, LeanTransport, use_lean_consumer
from segstream.stream.worker.processor import BatchProcessor
from segstream.stream.worker.watchdog import Deadlines, Progress, Watchdog

__all__ = [
    "AGENT_NAME",
    "Extension",
    "WorkerApp",
    "WorkerParts",
    "app_options",
    "base_app",
    "create_app",
    "input_channel",
    "quiet_framework_loggers",
    "stream_buffer_size",
    "trim_framework",
    "tune_gc",
    "worker_parts",
    "worker_watchdog",
]

log = logging.getLogger(__name__)

AGENT_NAME = "segstream.assign"
"""Name of the worker's one agent."""

_FRAMEWORK_LOGGERS = ("faust", "mode", "aiokafka", "kafka", "venusian")

SENSORLESS_REBALANCE_MESSAGES = ("Missing sensor state for rebalance",)
"""Faust's warnings at the end of every rebalance of an app without sensors: it takes their
empty state for a lost one (``faust/app/base.py``, ``on_rebalance_return`` and
``on_rebalance_end``). :func:`trim_framework` detaches the only sensor on purpose, so these
are demoted to DEBUG, not shown to an operator at every start."""

SESSION_TIMEOUT_S = 10.0
"""Group session timeout: how long a silent worker keeps its partitions."""
HEARTBEAT_INTERVAL_S = 1.0
"""Heartbeat period; a third of the session timeout or less, as Kafka requires."""
STATS_INTERVAL_S = 10.0
"""How often a worker logs its running totals (when they moved)."""


def stream_buffer_size(batch_size: int) -> int:
    """Events Faust may hold fetched for the agent: 16 batches (at least Faust's 4,096).

    Faust pauses fetching a partition when its stream buffer is 80% full and resumes at 40%.
    At Faust's default of 4,096 that stop-and-go capped a bare ``take_events`` agent at about
    12,000 events/s here with its CPU half idle; 16 batches let fetches run ahead of the work.
    Each buffered event is a Faust Event holding the record (~1-2 KB).
    """
    return max(4096, 16 * batch_size)


GC_THRESHOLDS = (50_000, 20, 100)
"""Python's collector thresholds in a worker (CPython's default: 700, 10, 10); see tune_gc."""


def tune_gc() -> None:
    """Keep full garbage collections off the worker's hot path; call once set up.

    At 10,000 events/s the default thresholds ran a full (generation 2) collection about
    every 0.7 s, each 115-135 ms over the start-up heap (Faust, pandas, scikit-learn, the
    model) and the buffered events, and nearly all of them found nothing: the worker's data
    is freed by reference counting. Those pauses were the latency tail (p99 over 100 ms at
    2,000 events/s). So the heap that exists once the worker is set up is frozen (never
    scanned again) and young collections run ~70x less often; cycles are still collected.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def trim_framework(app: faust.App) -> None:
    """Drop Faust's per-event bookkeeping that nothing here reads; call from a running agent.

    Faust's loggers go to WARNING (:func:`quiet_framework_loggers`), and its built-in Monitor
    sensor is detached: it records every message in and out (several dict updates each) for
    Faust's own web statistics, which the worker does not serve. Its metrics are
    segstream's own (``segstream.stream.http.metrics``, through ``WorkerObserver``). Faust's
    warnings about the missing sensor state are demoted (:data:`SENSORLESS_REBALANCE_MESSAGES`).
    """
    quiet_framework_loggers()
    if app.monitor in set(app.sensors):
        app.sensors.remove(app.monitor)
    app_logger = app.log.logger
    if not any(isinstance(f, Demote) for f in app_logger.filters):
        app_logger.addFilter(Demote(SENSORLESS_REBALANCE_MESSAGES))


def quiet_framework_loggers(level: int = logging.WARNING) -> None:
    """Raise Faust's, mode's and aiokafka's loggers to ``level`` (Faust leaves them at DEBUG)."""
    for name in _FRAMEWORK_LOGGERS:
        logging.getLogger(name).setLevel(level)


def app_options(settings: Settings, datadir: Path) -> dict[str, Any]:
    """The worker's faust.App options (see the module docstring); creates ``datadir``."""
    datadir.mkdir(parents=True, exist_ok=True)  # Faust creates only the last level
    return {
        "broker": [
            f"kafka://{server.strip()}" for server in settings.kafka_bootstrap_servers.split(",")
        ],
        "broker_credentials": faust_credentials(settings),  # TLS/SASL as every other client
        "autodiscover": False,
        "store": "memory://",
        "datadir": str(datadir),  # Faust's default is a folder in the cwd
        "key_serializer": "raw",
        "value_serializer": "raw",
        "topic_partitions": settings.topic_partitions,
        # `segstream worker` resolves the default (min(3, brokers)) before building the app;
        # started as `faust -A`, the setting is taken as given (1 when unset).
        "topic_replication_factor": settings.topic_replication_factor or 1,
        "consumer_auto_offset_reset": "earliest",
        "broker_session_timeout": SESSION_TIMEOUT_S,
        "broker_heartbeat_interval": HEARTBEAT_INTERVAL_S,
        "broker_rebalance_timeout": SESSION_TIMEOUT_S * 3,
        "broker_commit_interval": 1.0,
        "producer_acks": -1,
        "producer_linger": 0.0,
        "stream_buffer_maxsize": stream_buffer_size(settings.batch_size),
        "web_enabled": False,  # segstream serves its own HTTP side (see segstream.stream.http)
        # Faust's records in segstream's format, also when started as `faust -A ... worker`.
        "logging_config": faust_logging_config(settings.log_level),
    }


def base_app(settings: Settings, datadir: Path) -> faust.App:
    """A faust.App configured as the worker's (see the module docstring), with no agent."""
    return faust.App(settings.app_id, **app_options(settings, datadir))


def input_channel(app: faust.App, settings: Settings) -> faust.TopicT:
    """One channel over the source's input topics (``users`` and ``orders``, or the change
    topics), raw bytes (co-partitioned: one owner per user)."""
    return app.topic(
        *input_topics(settings),
        key_serializer="raw",
        value_serializer="raw",
        partitions=settings.topic_partitions,
        internal=True,  # Faust creates it (with our partition count) before subscribing
    )


@dataclass(frozen=True, slots=True)
class WorkerParts:
    """What a running worker shares with its extensions (the HTTP side, for one)."""

    settings: Settings
    assigner: Assigner
    """The model holder the worker assigns with."""
    redis: aioredis.Redis
    """The worker's Redis client."""
    processor: BatchProcessor
    watchdog: Watchdog
    """The progress watchdog; its ``reasons()`` say why the worker is not progressing."""


Extension = Callable[[WorkerParts], Awaitable[Callable[[], Awaitable[None]] | None]]
"""Started once the worker's parts exist; returns a coroutine function that stops it (or None)."""


def worker_watchdog(
    app: faust.App, settings: Settings, progress: Progress, observer: WorkerObserver | None
) -> Watchdog:
    """The progress watchdog of ``app`` (not started): stalls stop the app by crashing it."""

    crashing: list[asyncio.Future[None]] = []

    def stop(reason: str) -> None:  # called from the watchdog's thread
        def crash() -> None:
            error = ServiceError(f"the worker stalled: {reason}")
            crashing.append(asyncio.ensure_future(app.crash(error)))

        app.loop.call_soon_threadsafe(crash)

    deadlines = Deadlines(
        batch_s=settings.batch_deadline_s,
        commit_s=settings.commit_deadline_s,
        grace_s=settings.stall_grace_s,
        shutdown_s=settings.shutdown_timeout_s,
    )
    return Watchdog(
        progress, deadlines, observer=observer, stopping=lambda: app.should_stop, stop=stop
    )


class WorkerApp(faust.App):
    """The worker's faust.App, whole once constructed: the worker's options
    (:func:`app_options`), the lean consumer, and the progress watchdog (not started) that
    ``segstream worker``'s signal handlers arm (:mod:`segstream.stream.worker.run`).

    No agent yet: :func:`create_app` adds it.
    """

    def __init__(self, settings: Settings, *, observer: WorkerObserver | None = None) -> None:
        super().__init__(settings.app_id, **app_options(settings, settings.data_dir / "faust"))
        self.progress = Progress()
        """Batch and commit outcomes, read by :attr:`watchdog`."""
        use_lean_consumer(
            self,
            progress=self.progress,
            commit_deadline_s=settings.commit_deadline_s,
            hold_messages=True,
            fetch_max_wait_ms=settings.fetch_max_wait_ms,
            direct_topics=input_topics(settings),
        )
        self.watchdog = worker_watchdog(self, settings, self.progress, observer)
        """Stops the worker when batches or commits stall, or a stop takes too long."""


def create_app(
    settings: Settings,
    *,
    observer: WorkerObserver | None = None,
    extensions: Sequence[Extension] = (),
) -> WorkerApp:
    """The worker's faust.App for ``settings`` (not started).

    Args:
        observer: told every batch's counts, model changes and Redis failures, if given.
        extensions: started in order once the agent has its parts, stopped in reverse order
            when it stops (see :func:`segstream.stream.service.create_service`).
    """
    app = WorkerApp(settings, observer=observer)
    topics = Topics.from_settings(settings)
    inputs = input_channel(app, settings)
    input_names = set(input_topics(settings))
    outputs = [
        app.topic(topics.segment_changes, partitions=settings.topic_partitions),
        app.topic(topics.user_segments, partitions=settings.topic_partitions, compacting=True),
        app.topic(topics.dead_letters, partitions=settings.topic_partitions),
    ]

    # mode types a receiver as (sender, *args, signal=...) with no positional parameters of its
    # own; this signal sends the assigned partitions as its one argument.
    @app.on_partitions_assigned.connect  # type: ignore[arg-type]
    async def log_assignment(app: faust.App, assigned: set[Any], **_: Any) -> None:
        mine = sorted((tp.topic, tp.partition) for tp in assigned if tp.topic in input_names)
        users = [p for t, p in mine if t == topics.users]
        orders = [p for t, p in mine if t == topics.orders]
        log.info("input partitions assigned: users %s, orders %s", users, orders)

    @app.task
    async def start_watchdog() -> None:
        app.watchdog.start()

    @app.agent(inputs, name=AGENT_NAME)
    async def assign_users(stream: faust.StreamT[bytes]) -> None:
        # The agent's stream subscribes the input topics; their records bypass it (direct
        # delivery to the pipeline, see _consume).
        assert isinstance(stream, faust.Stream)
        trim_framework(app)
        for topic in outputs:
            await topic.maybe_declare()
        # Whatever the start opened is closed when it fails part-way, or when the agent ends.
        async with worker_parts(
            settings,
            topics=topics,
            watchdog=app.watchdog,
            observer=observer,
            extensions=extensions,
        ) as parts:
            await _consume(app, stream, parts, app.progress)

    return app


@contextlib.asynccontextmanager
async def worker_parts(
    settings: Settings,
    *,
    topics: Topics,
    watchdog: Watchdog,
    observer: WorkerObserver | None = None,
    extensions: Sequence[Extension] = (),
) -> AsyncIterator[WorkerParts]:
    """The worker's Redis client, output producer, batch processor and extensions, open.

    Each resource is registered for closing as soon as it exists (before it starts), so
    leaving the context, or a start that fails part-way, stops in reverse order everything
    that was opened (the extensions, the producer, the Redis client) and nothing leaks when
    Faust restarts the agent. Every part is built whole by its constructor.

    Raises:
        redis.RedisError, KafkaError, SegstreamError: a dependency or an extension failed.
    """
    async with contextlib.AsyncExitStack() as opened:
        client = worker_redis_client(settings)
        opened.push_async_callback(client.aclose)
        prefix = state_prefix(settings)
        state = RedisState(
            client,
            prefix,
            order_window=settings.order_dedupe_window,
            cluster=settings.redis_cluster,
            min_replicas=settings.min_replicas,
            wait_timeout_ms=settings.redis_wait_timeout_ms,
            shortfall=ReplicaShortfall(settings.min_replicas, observer=observer),
        )
        await state.load_scripts()
        # Read once: a later change of the topic's limit takes a worker restart.
        limit = await max_message_bytes(settings, topics.dead_letters)
        producer = output_producer(settings, max_request_size=limit)
        opened.push_async_callback(producer.stop)  # safe on a producer that never started
        await producer.start()
        assigner = Assigner(settings.model_dir, metrics=observer)
        source = build_source(settings, client)
        processor = BatchProcessor(
            state,
            assigner,
            AiokafkaSender(producer),
            topics,
            dead_letter_max_bytes=limit,
            drift=shared_drift(
                settings, client, prefix, observer, replicated=state.wait_for_replicas
            ),
            metrics=observer,
            partitions={
                topic: len(await partitions_of(settings, topic)) for topic in source.user_keyed
            },
            unknown_fields=settings.unknown_fields,
            source=source,
        )
        parts = WorkerParts(settings, assigner, client, processor, watchdog)
        for extension in extensions:
            stop = await extension(parts)
            if stop is not None:
                opened.push_async_callback(stop)
        yield parts


async def _log_stats(processor: BatchProcessor) -> None:
    """Every :data:`STATS_INTERVAL_S`, log ``processor``'s running totals if they moved."""
    last_logged = 0
    while True:
        await asyncio.sleep(STATS_INTERVAL_S)
        stats = processor.stats
        if stats.records == last_logged:
            continue
        rate = (stats.records - last_logged) / STATS_INTERVAL_S
        last_logged = stats.records
        log.info(
            "%d records (%.0f/s): %d valid, %d fresh, %d assigned, %d changes, dead letters %s",
            stats.records,
            rate,
            stats.valid,
            stats.fresh,
            stats.assigned,
            stats.changes,
            dict(stats.dead_letters) or 0,
        )


async def _consume(
    app: faust.App, stream: faust.Stream[bytes], parts: WorkerParts, progress: Progress
) -> None:
    """Process the input records the fetcher hands over (direct delivery: the agent's
    ``stream`` itself stays empty) in a pipeline until the agent stops; then finish the batch
    in hand (within ``SEGSTREAM_SHUTDOWN_TIMEOUT_S / 2``, leaving the rest of the bound to the
    commit and the group leave) before returning."""
    settings, processor = parts.settings, parts.processor
    transport = cast(LeanTransport, app.transport)
    consumer = cast(LeanConsumer, app.consumer)
    pipeline = BatchPipeline(
        processor,
        consumer.ack_all,
        settings.batch_size,
        # Room for the batches in hand (each up to batch_size) and one more being filled.
        (settings.pipeline_depth + 1) * settings.batch_size,
        progress=progress,
        fill_s=settings.batch_timeout_s,
        depth=settings.pipeline_depth,
        phases=processor.phases,
    )
    tune_gc()
    worker_task = asyncio.ensure_future(pipeline.run())
    crashing: list[asyncio.Future[None]] = []

    def on_done(task: asyncio.Future[None]) -> None:
        exc = None if task.cancelled() else task.exception()
        if exc is None:
            return
        log.critical("batch failed, stopping the worker: %s", describe(exc), exc_info=exc)
        crashing.append(asyncio.ensure_future(app.crash(exc)))

    worker_task.add_done_callback(on_done)
    transport.deliver_to(pipeline)
    stats_task = asyncio.ensure_future(_log_stats(processor))
    try:
        # Until the agent is stopped (cancelled) or the pipeline fails (the app crashes).
        await asyncio.shield(worker_task)
    finally:
        transport.deliver_to(None)
        stats_task.cancel()
        finished = await pipeline.finish(worker_task, settings.shutdown_timeout_s / 2)
        if not finished:
            log.warning(
                "the batch in hand did not finish within %.0f s of the stop; its events "
                "were not acked and go to the partitions' next owner "
                "(SEGSTREAM_SHUTDOWN_TIMEOUT_S)",
                settings.shutdown_timeout_s / 2,
            )
        log.info("totals %s", json.dumps(processor.stats.as_dict()))
        phases = processor.phases
        log.info("phases %s", json.dumps({"span_s": phases.span_s, **phases.as_dict()}))
