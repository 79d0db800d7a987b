"""``segstream worker``: run the streaming worker in this process until stopped.

The same app as ``faust -A segstream.stream.main:app worker``, with three things done first
so that a mistake is reported at once, not from inside a running consumer: the model at
``MODELS/current`` must load, Redis must answer, and the stream's topics are created (with the
configured partition count) if missing. Redis and the broker are waited for, up to
``SEGSTREAM_STARTUP_TIMEOUT_S`` (services started together come up in any order), logging
what is awaited and why; past it the worker exits with status 2 naming the service.

SIGINT/SIGTERM stop the worker cleanly: the batch in progress finishes and is acked (within
half of ``SEGSTREAM_SHUTDOWN_TIMEOUT_S``; batches queued behind it are not started, and go
unacked to the partitions' next owner: :meth:`~segstream.stream.worker.batching.BatchPipeline.
finish`), acknowledged offsets are committed, the group is left. The stop is bounded: if it
has not finished after
``SEGSTREAM_SHUTDOWN_TIMEOUT_S`` (a commit or a group leave hanging on a dead broker), the
watchdog ends the process (:mod:`segstream.stream.worker.watchdog`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

import faust
import mode.loop

from segstream.errors import ServiceError
from segstream.net import port_is_open
from segstream.settings import Settings
from segstream.stream.clients.redis import connection_problem as redis_problem
from segstream.stream.clients.redis import worker_redis_client
from segstream.stream.clients.retry import KAFKA_TRANSIENT, REDIS_TRANSIENT, retry
from segstream.stream.domain.partitioning import check_copartitioned
from segstream.stream.domain.replication import check_redis_replicas, replication_factor
from segstream.stream.kafka.topics import (
    WAIT_HINT,
    broker_count,
    ensure_topics,
    partitions_of,
)
from segstream.stream.state.replicas import connected_replicas
from segstream.stream.worker.app import WorkerApp, create_app, quiet_framework_loggers
from segstream.stream.worker.assigner import Assigner

__all__ = ["check_dependencies", "run_worker", "use_worker_event_loop"]

log = logging.getLogger(__name__)

T = TypeVar("T")

STARTUP_FIRST_DELAY_S = 0.5
"""First pause between two start-up checks of a dependency, in seconds (then doubled)."""
STARTUP_MAX_DELAY_S = 2.0
"""Longest pause between two start-up checks, in seconds."""
LAST_TURN_S = 0.05
"""How long the event loop keeps running after every service has stopped and every task has
been gathered, in seconds: a few turns for the callbacks that closing connections schedule
(mode's own worker waits 1 s here on every stop)."""


class _BoundedWorker(faust.Worker):
    """Faust's worker whose stop on SIGTERM/SIGINT is bounded by the app's watchdog and does
    not idle for a second at its end."""

    def _arm_watchdog(self) -> None:
        if isinstance(self.app, WorkerApp):  # an app built otherwise has no watchdog
            self.app.watchdog.stopping()
            self.app.watchdog.start()  # if the agent had not started it yet

    async def _sentinel_task(self) -> None:
        # The last task mode's stop runs on the loop before closing it.
        await asyncio.sleep(LAST_TURN_S)

    def _on_sigterm(self) -> None:
        self._arm_watchdog()
        super()._on_sigterm()

    def _on_sigint(self) -> None:
        self._arm_watchdog()
        super()._on_sigint()


async def _ping_redis(settings: Settings) -> None:
    """PING once; a configuration problem (an untrusted certificate, plain text against a TLS
    port) raises :class:`ServiceError` at once: waiting would not fix it. With
    ``SEGSTREAM_REDIS_MIN_REPLICAS`` in effect, some primary must have that many replicas
    (:class:`ConfigError` otherwise; the ones short are logged)."""
    client = worker_redis_client(settings)
    try:
        await client.ping()
        if settings.min_replicas:
            replicas = await connected_replicas(client, settings.redis_cluster)
            for where, n in check_redis_replicas(settings, replicas).items():
                log.warning(
                    "Redis primary %s has %d replica(s) connected, fewer than "
                    "SEGSTREAM_REDIS_MIN_REPLICAS=%d: the worker starts and writes it degraded "
                    "(acknowledged without them) until a replica is back",
                    where,
                    n,
                    settings.min_replicas,
                )
    except REDIS_TRANSIENT as exc:
        problem = redis_problem(settings, exc)
        if problem is not None:
            raise ServiceError(problem) from exc
        raise
    finally:
        await client.aclose()


async def _waited_for(
    settings: Settings,
    operation: Callable[[], Awaitable[T]],
    *,
    what: str,
    transient: tuple[type[BaseException], ...],
    hint: str,
) -> T:
    """``operation()`` retried as every start-up check is: up to
    ``SEGSTREAM_STARTUP_TIMEOUT_S``, pausing :data:`STARTUP_FIRST_DELAY_S` doubling to
    :data:`STARTUP_MAX_DELAY_S` (see :func:`~segstream.stream.clients.retry.retry`)."""
    return await retry(
        operation,
        what=what,
        transient=transient,
        give_up_after_s=settings.startup_timeout_s,
        first_delay_s=STARTUP_FIRST_DELAY_S,
        max_delay_s=STARTUP_MAX_DELAY_S,
        hint=hint,
    )


async def check_dependencies(settings: Settings) -> int:
    """Redis answers, the HTTP port is free and the topics exist (created if missing), with
    ``users`` and ``orders`` co-partitioned; returns the cluster's broker count.

    Redis and the broker are each waited for up to ``settings.startup_timeout_s`` seconds,
    retrying every 2 s at most and logging each failure with its cause.

    Raises:
        ServiceError: Redis or the broker did not answer in time (the message names the
            setting), refused for good (credentials, ACLs), or the HTTP port is taken.
        ConfigError: ``users`` and ``orders`` have different partition counts (each user's
            events must meet in one worker), more replicas are asked than brokers exist, or
            every Redis primary has fewer replicas than ``SEGSTREAM_REDIS_MIN_REPLICAS`` (some
            of them short: a warning, and the worker writes those degraded).
    """
    try:
        await _waited_for(
            settings,
            lambda: _ping_redis(settings),
            what=f"waiting for Redis at {settings.redis_display}",
            transient=REDIS_TRANSIENT,
            hint="start Redis, check SEGSTREAM_REDIS_URL, or raise SEGSTREAM_STARTUP_TIMEOUT_S",
        )
    except ServiceError as exc:
        # Refused credentials, untrusted certificate, plain text against TLS: name the setting.
        problem = redis_problem(settings, exc.__cause__) if exc.__cause__ else None
        if problem is None:
            raise
        raise ServiceError(problem) from exc
    if settings.http_port and port_is_open(settings.http_port, settings.http_host):
        raise ServiceError(
            f"port {settings.http_port} on {settings.http_host} is already in use, so the "
            "worker cannot serve its HTTP side (another worker on this host?): set "
            "SEGSTREAM_HTTP_PORT to a free port, or SEGSTREAM_HTTP_PORT=0 to run without it"
        )
    created = await ensure_topics(
        settings,
        attempts=None,
        give_up_after_s=settings.startup_timeout_s,
        first_delay_s=STARTUP_FIRST_DELAY_S,
        max_delay_s=STARTUP_MAX_DELAY_S,
    )
    if created:
        log.info("created topics %s", ", ".join(created))
    inputs = (settings.topic_users, settings.topic_orders)
    check_copartitioned({topic: len(await partitions_of(settings, topic)) for topic in inputs})
    return await _waited_for(
        settings,
        lambda: broker_count(settings),
        what=f"waiting for Kafka at {settings.kafka_bootstrap_servers} to list its brokers",
        transient=KAFKA_TRANSIENT,
        hint=WAIT_HINT,
    )


def use_worker_event_loop() -> None:
    """Make a new uvloop event loop this thread's (and the policy of threads Faust starts).

    uvloop took about a fifth of the worker's CPU per event off asyncio's own loop here
    (``segstream bench stream``). Started the Faust way, the worker gets the same with Faust's
    own option: ``faust -L uvloop -A segstream.stream.main:app worker``.
    """
    mode.loop.use("uvloop")
    asyncio.set_event_loop(asyncio.new_event_loop())


def run_worker(settings: Settings, create: Callable[[Settings], faust.App] = create_app) -> int:
    """Run one worker until SIGINT/SIGTERM or a fatal error; returns the exit code.

    ``create`` builds the app (the worker alone by default; ``segstream worker`` passes
    :func:`segstream.stream.service.create_service`, the worker with its HTTP side).

    Raises:
        ArtifactError: no loadable model at ``MODELS/current``.
        ServiceError: Redis or the broker is unreachable for ``startup_timeout_s`` at start,
            or the worker stopped with an error (a failed batch, a stall).
    """
    model = Assigner(settings.model_dir)
    log.info("model %s (k=%d) from %s", model.version, model.model.k, settings.model_dir)
    brokers = asyncio.run(check_dependencies(settings))
    # Faust creates its own internal topics with this factor: the default resolved here.
    copies = replication_factor(settings, brokers)
    settings = settings.model_copy(update={"topic_replication_factor": copies})
    use_worker_event_loop()
    app = create(settings)
    worker = _BoundedWorker(app, loglevel=settings.log_level.upper(), quiet=True)
    quiet_framework_loggers()
    try:
        worker.execute_from_commandline()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
        if code:
            raise ServiceError(f"the worker stopped with exit code {code}") from None
    return 0
