"""``segstream worker``: run the streaming worker in this process until stopped.

The same app as ``faust -A segstream.stream.main:app worker``, with three things done first
so that a mistake is reported at once, not from inside a running consumer: the model at
``MODELS/current`` must load, Redis must answer, and the stream's topics are created (with the
configured partition count) if missing. SIGINT/SIGTERM stop the worker cleanly: the batch in
progress finishes, acknowledged offsets are committed, the group is left.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import faust
import mode.loop

from segstream.errors import ServiceError
from segstream.net import port_is_open
from segstream.settings import Settings
from segstream.stream.clients.redis import connection_problem as redis_problem
from segstream.stream.clients.redis import redis_client
from segstream.stream.clients.retry import REDIS_TRANSIENT, retry
from segstream.stream.kafka.topics import ensure_topics
from segstream.stream.worker.app import create_app, quiet_framework_loggers
from segstream.stream.worker.assigner import Assigner

__all__ = ["check_dependencies", "run_worker", "use_worker_event_loop"]

log = logging.getLogger(__name__)


async def _ping_redis(settings: Settings) -> None:
    client = redis_client(settings)
    try:
        await client.ping()
    finally:
        await client.aclose()


async def check_dependencies(settings: Settings) -> None:
    """Redis answers, the HTTP port is free and the topics exist (created if missing).

    Raises:
        ServiceError: Redis or the broker cannot be reached after a few tries, or the HTTP
            port is taken.
    """
    try:
        await retry(
            lambda: _ping_redis(settings),
            what=f"connecting to Redis at {settings.redis_display}",
            transient=REDIS_TRANSIENT,
            attempts=5,
            first_delay_s=0.2,
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
    created = await ensure_topics(settings)
    if created:
        log.info("created topics %s", ", ".join(created))


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
        ServiceError: Redis or the broker is unreachable at start.
    """
    model = Assigner(settings.model_dir)
    log.info("model %s (k=%d) from %s", model.version, model.model.k, settings.model_dir)
    asyncio.run(check_dependencies(settings))
    use_worker_event_loop()
    app = create(settings)
    worker = faust.Worker(app, loglevel=settings.log_level.upper(), quiet=True)
    quiet_framework_loggers()
    try:
        worker.execute_from_commandline()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
        if code:
            raise ServiceError(f"the worker stopped with exit code {code}") from None
    return 0
