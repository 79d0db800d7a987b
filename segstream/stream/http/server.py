"""The HTTP side: lookup and predict API, health, Prometheus metrics, the live status page.

:func:`create_web_app` builds an aiohttp application; ``segstream api`` serves it alone
(:func:`run_web`), and the worker can serve it from its own event loop (:func:`start_web`)
with its own :class:`~segstream.stream.http.metrics.Metrics`,
:class:`~segstream.stream.worker.assigner.Assigner` and Redis client, so ``/metrics`` shows
the worker's counters and the API answers with the worker's model version. It binds
``settings.http_host:settings.http_port`` (127.0.0.1:6066 by default).

Routes (the contract is :mod:`segstream.stream.http.openapi`, served at ``/openapi.json``):
``GET /users/{user_id}``, ``POST /users/{user_id}/forget``, ``POST /predict``,
``GET /segments``, ``GET /healthz``, ``GET /readyz``, ``GET /metrics``, ``GET /status.json``,
``GET /`` (the status page; its script and style are under ``/static/``). Every error is a
JSON object ``{"error": "..."}`` saying what is wrong: 400 for a bad parameter or body, 404
for an unknown user or path, 405 for a wrong method, 409 for a forget while the source is
change data capture, 413 for a body over 1 MiB, 503 when Redis, Kafka or the model is
unavailable.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

import redis.asyncio as aioredis
from aiohttp import web
from aiohttp.typedefs import Middleware
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from segstream.errors import (
    ArtifactError,
    ConfigError,
    InputError,
    ServiceError,
    StateError,
    StateUnavailable,
)
from segstream.settings import Settings
from segstream.stream.clients.redis import redis_client
from segstream.stream.clients.retry import redis_call
from segstream.stream.domain.events import UnknownFields
from segstream.stream.domain.json_keys import RepeatedKeyError, unique_keys
from segstream.stream.http.auth import bearer_auth, check_exposure
from segstream.stream.http.delivery import DeliveryGroups, DeliveryWatch
from segstream.stream.http.live import LiveView
from segstream.stream.http.metrics import CONTENT_TYPE, Metrics
from segstream.stream.http.openapi import (
    MAX_USER_ID,
    PREDICT_FIELDS,
    PREDICT_REQUEST,
    openapi_document,
)
from segstream.stream.http.serving import ServingModel
from segstream.stream.kafka.forget import (
    LeaveRequest,
    check_source,
    leave_producer,
    request_leaves,
)
from segstream.stream.state.keys import state_prefix
from segstream.stream.state.lookup import read_stored_user
from segstream.stream.state.store import RedisState
from segstream.stream.worker.app import Extension, WorkerParts
from segstream.stream.worker.assigner import Assigner
from segstream.training.inputs import check_fields

__all__ = [
    "LIVE",
    "create_web_app",
    "error_response",
    "parse_user_id",
    "run_web",
    "start_web",
    "worker_http",
]

log = logging.getLogger(__name__)
T = TypeVar("T")

LIVE = web.AppKey("segstream_live", LiveView)
"""Key of the app's :class:`LiveView` (``app[LIVE]``)."""
_STATE = web.AppKey("segstream_state", RedisState)
MAX_BODY_BYTES = 1024 * 1024
"""Largest accepted request body."""


def _static_dir() -> Path:
    return Path(str(resources.files(__package__).joinpath("static")))


def _bad_request(message: str) -> web.HTTPBadRequest:
    return web.HTTPBadRequest(text=message)


def parse_user_id(raw: str) -> int:
    """The path's user_id as an int.

    Raises:
        web.HTTPBadRequest: not the decimal digits of an integer from 1 to 2**53-1.
    """
    if not raw.isascii() or not raw.isdigit() or not 1 <= int(raw) <= MAX_USER_ID:
        raise _bad_request(f"user_id must be an integer from 1 to {MAX_USER_ID}, got {raw!r}")
    return int(raw)


def _reject_constant(token: str) -> float:
    raise ValueError(f"{token} is not a JSON number")


def parse_predict_body(
    body: bytes, unknown_fields: UnknownFields = "ignore"
) -> tuple[dict[str, Any], int, tuple[str, ...]]:
    """The features and ``top`` of a ``POST /predict`` body, and its ignored fields' names.

    Each field is checked by the input table (:data:`segstream.training.inputs.RULES`), so a
    value is refused with the same message as the stream's dead letter, ``segstream
    predict`` and training give it; ``30.0`` is the whole number 30. Fields no request has
    are ignored and named (``unknown_fields="ignore"``), or refused.

    Raises:
        web.HTTPBadRequest: not UTF-8 JSON, an object that repeats a key, nesting deeper than
            Python's recursion limit (~1,000 levels; a valid body has one), not an object, a
            missing field, a value its rule refuses (the table's message, as it is), or an
            unknown field under ``dead_letter``.
    """
    try:
        document = json.loads(
            body.decode("utf-8"), parse_constant=_reject_constant, object_pairs_hook=unique_keys
        )
    except RepeatedKeyError as exc:
        raise _bad_request(f"invalid body: {exc}") from None
    except (UnicodeDecodeError, ValueError) as exc:
        raise _bad_request(f"body is not JSON: {exc}") from None
    except RecursionError:  # json's parser recurses per level of nesting
        raise _bad_request("body is nested too deeply to be a predict request") from None
    if not isinstance(document, dict):
        raise _bad_request("invalid body: it must be a JSON object of the features")
    missing = [name for name in PREDICT_REQUEST["required"] if name not in document]
    if missing:
        raise _bad_request(f"invalid body: missing field(s) {', '.join(missing)}")
    try:
        features = check_fields(document, PREDICT_FIELDS)
    except InputError as exc:
        raise _bad_request(exc.message) from None
    unknown = tuple(name for name in document if name not in PREDICT_REQUEST["properties"])
    if unknown and unknown_fields == "dead_letter":
        raise _bad_request(
            f"field {unknown[0][:40]!r} is not part of a predict request "
            "(SEGSTREAM_UNKNOWN_FIELDS=dead_letter; ignore takes it)"
        )
    top = int(features.pop("top", 5))
    return features, top, unknown


def error_response(request: web.Request, exc: web.HTTPException) -> web.Response:
    """An HTTP error (status 400 or more) as ``{"error": message}``: the exception's own text,
    else its reason with the request's method and path; ``Allow`` and ``WWW-Authenticate``
    kept. Shared by this side and the supervisor's (:mod:`segstream.stream.http.front`)."""
    message = exc.text if exc.text and not exc.text.startswith(f"{exc.status}:") else None
    if message is None:
        message = f"{exc.reason}: {request.method} {request.path}"
    headers = {h: exc.headers[h] for h in ("Allow", "WWW-Authenticate") if h in exc.headers}
    return web.json_response({"error": message}, status=exc.status, headers=headers)


@web.middleware
async def _errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Every error as ``{"error": message}`` with its status."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return error_response(request, exc)
    except StateUnavailable as exc:
        return web.json_response({"error": f"Redis is unavailable: {exc}"}, status=503)
    except StateError as exc:  # Redis answered: the stored state cannot serve the request
        return web.json_response({"error": f"the stored state is unusable: {exc}"}, status=503)
    except ArtifactError as exc:
        return web.json_response({"error": f"no model is loaded: {exc}"}, status=503)


async def _redis(what: str, operation: Callable[[], Awaitable[T]]) -> T:
    """One Redis read for a request: retried once, then StateUnavailable (503)."""
    return await redis_call(operation, what=what, attempts=2)


async def get_user(request: web.Request) -> web.Response:
    """``GET /users/{user_id}``."""
    user_id = parse_user_id(request.match_info["user_id"])
    state = request.app[_STATE]
    stored = await _redis("read a user", lambda: read_stored_user(state, user_id))
    if stored is None:
        raise web.HTTPNotFound(
            text=f"user {user_id} is unknown: the stream has never seen them, or they left "
            "and have had no event since"
        )
    user = stored.state
    distances: list[float] | None = None
    distances_version: str | None = None
    unseen: list[str] = []
    if user.assignable:
        try:
            model, prediction = request.app[LIVE].serving.describe(user)
        except ArtifactError as exc:
            log.debug("no distances for user %d: %s", user_id, exc)
        else:
            distances = list(prediction.distances)
            distances_version = model.version
            unseen = list(prediction.unseen_columns)
    return web.json_response(
        {
            "user_id": user_id,
            "segment": user.segment,
            "model_version": user.model_version,
            "drift_epoch": stored.drift_epoch,
            "updated_at": stored.updated_at,
            "assignable": user.assignable,
            "features": user.features(),
            "distances": distances,
            "distances_model_version": distances_version,
            "unseen_columns": unseen,
            "pending_changes": user.pending,
        }
    )


class LeaveSender:
    """The API's tombstone producer: started on the first forget, kept, stopped with the app.

    A send that fails drops the producer, so the next request starts a fresh one (a broker
    that came back is then reached again).
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.producer: AIOKafkaProducer | None = None
        self.lock = asyncio.Lock()

    async def send(self, user_id: int) -> LeaveRequest:
        """Queue the user's leave (:func:`request_leaves`).

        Raises:
            ConfigError: ``SEGSTREAM_SOURCE=cdc``.
            ServiceError: the broker is unreachable or refused the tombstone.
        """
        check_source(self.settings)
        async with self.lock:
            if self.producer is None:
                producer = leave_producer(self.settings)
                try:
                    await producer.start()
                except (KafkaError, OSError, TimeoutError) as exc:
                    await producer.stop()
                    raise ServiceError(
                        f"cannot reach the broker at {self.settings.kafka_bootstrap_servers}: "
                        f"{exc!r} (SEGSTREAM_KAFKA_BOOTSTRAP_SERVERS)"
                    ) from exc
                self.producer = producer
            try:
                (request,) = await request_leaves(self.settings, [user_id], self.producer)
            except ServiceError:
                await self.close()
                raise
            return request

    async def close(self) -> None:
        """Stop the producer, if one was started."""
        producer, self.producer = self.producer, None
        if producer is not None:
            await producer.stop()


_LEAVES = web.AppKey("segstream_leaves", LeaveSender)


async def post_forget(request: web.Request) -> web.Response:
    """``POST /users/{user_id}/forget``: 202 once the tombstone is acknowledged."""
    user_id = parse_user_id(request.match_info["user_id"])
    try:
        queued = await request.app[_LEAVES].send(user_id)
    except ConfigError as exc:
        raise web.HTTPConflict(text=str(exc)) from None
    except ServiceError as exc:
        return web.json_response({"error": str(exc)}, status=503)
    return web.json_response(
        {
            "user_id": queued.user_id,
            "topic": queued.topic,
            "partition": queued.partition,
            "offset": queued.offset,
            "status": "queued",
        },
        status=202,
    )


async def post_predict(request: web.Request) -> web.Response:
    """``POST /predict``: the new-customer flow of ``segstream predict``."""
    live = request.app[LIVE]
    features, top, unknown = parse_predict_body(await request.read(), live.settings.unknown_fields)
    if unknown:
        live.note_unknown_fields("predict", unknown)
    model, result = await live.serving.predict(features, top)
    similar = [
        {
            "user_id": int(row.user_id),
            "distance": float(row.distance),
            "segment": int(row.segment),
        }
        for row in result.similar.itertuples(index=False)
    ]
    return web.json_response(
        {
            "model_version": model.version,
            "segment": result.segment,
            "components": list(result.components),
            "distances": list(result.distances),
            "unseen_columns": list(result.unseen_columns),
            "fallbacks": {c: model.fallbacks[c] for c in result.unseen_columns},
            "similar_users": similar,
        }
    )


async def get_segments(request: web.Request) -> web.Response:
    """``GET /segments``: users per segment under the model in use."""
    live = request.app[LIVE]
    model = live.serving.current()
    populations = await _redis("count segment populations", live.populations.get)
    counts = populations.of(model.version, model.k)
    return web.json_response(
        {
            "model_version": model.version,
            "k": model.k,
            "segments": [{"segment": s, "users": n} for s, n in enumerate(counts)],
            "unassigned": populations.unassigned,
            "other_versions": populations.elsewhere(model.version),
            "counted_at": populations.counted_at,
        }
    )


async def get_healthz(request: web.Request) -> web.Response:
    """``GET /healthz``: the process answers."""
    return web.json_response({"status": "alive"})


async def get_readyz(request: web.Request) -> web.Response:
    """``GET /readyz``: 200 when Kafka and Redis answer, a model is loaded and the worker (if
    one runs here) is progressing, else 503 with the reasons."""
    document = await request.app[LIVE].readiness()
    return web.json_response(document, status=200 if document["ready"] else 503)


async def get_metrics(request: web.Request) -> web.Response:
    """``GET /metrics``: Prometheus text format."""
    live = request.app[LIVE]
    await live.refresh_gauges()
    response = web.Response(body=live.metrics.exposition())
    response.headers["Content-Type"] = CONTENT_TYPE
    return response


async def get_status(request: web.Request) -> web.Response:
    """``GET /status.json``: the figures the status page shows."""
    return web.json_response(await request.app[LIVE].status())


async def get_openapi(request: web.Request) -> web.Response:
    """``GET /openapi.json``."""
    return web.json_response(openapi_document())


async def get_index(request: web.Request) -> web.FileResponse:
    """``GET /``: the status page."""
    return web.FileResponse(_static_dir() / "index.html")


def _report_crash(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("the status page's background readers stopped", exc_info=task.exception())


def create_web_app(
    settings: Settings,
    *,
    metrics: Metrics | None = None,
    assigner: Assigner | None = None,
    redis: aioredis.Redis | None = None,
    lag_interval_s: float = 2.0,
    population_min_age_s: float = 1.0,
    stalls: Callable[[], Sequence[str]] | None = None,
    degraded: Callable[[], Sequence[str]] | None = None,
    delivery: DeliveryGroups | None = None,
) -> web.Application:
    """The HTTP application (not started); the other arguments share the worker's objects.

    Args:
        metrics: the worker's metrics; a fresh :class:`Metrics` if ``None``.
        assigner: the worker's model holder, so both serve the same version.
        redis: a client that does not decode responses; one is made (and closed) if ``None``.
        lag_interval_s: how often the lag is read from Kafka for the page and the gauges.
        population_min_age_s: how old segment populations may be before they are read again.
        stalls: the worker's watchdog reasons; ``/readyz`` is not ready while there are any.
        degraded: the Redis primaries the worker writes short of replicas (one line each);
            ``/readyz`` is not ready while there are any.
        delivery: the webhook delivery groups to show on the status page (``None``: no
            Delivery section, delivery is not configured).
    """
    own_redis = redis is None
    client = redis or redis_client(settings, socket_timeout=2.0, socket_connect_timeout=2.0)
    prefix = state_prefix(settings)
    live = LiveView(
        settings,
        metrics=metrics or Metrics(),
        serving=ServingModel(settings.model_dir, assigner=assigner),
        redis=client,
        prefix=prefix,
        lag_interval_s=lag_interval_s,
        population_min_age_s=population_min_age_s,
        stalls=stalls,
        degraded=degraded,
        delivery=(
            None
            if delivery is None
            else DeliveryWatch(settings, delivery, interval_s=max(lag_interval_s, 2.0))
        ),
    )
    middlewares: list[Middleware] = [_errors]  # outermost: it also shapes the auth middleware's 401
    if settings.http_token is not None:
        middlewares.append(bearer_auth(settings.http_token))
    app = web.Application(middlewares=middlewares, client_max_size=MAX_BODY_BYTES)
    app[LIVE] = live
    app[_STATE] = RedisState(client, prefix, cluster=settings.redis_cluster)
    leaves = LeaveSender(settings)
    app[_LEAVES] = leaves

    async def background(app: web.Application) -> AsyncIterator[None]:
        task = asyncio.create_task(live.run(), name="segstream-live-view")
        task.add_done_callback(_report_crash)
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await leaves.close()
        if own_redis:
            await client.aclose()

    app.cleanup_ctx.append(background)
    app.router.add_get("/users/{user_id}", get_user)
    app.router.add_post("/users/{user_id}/forget", post_forget)
    app.router.add_post("/predict", post_predict)
    app.router.add_get("/segments", get_segments)
    app.router.add_get("/healthz", get_healthz)
    app.router.add_get("/readyz", get_readyz)
    app.router.add_get("/metrics", get_metrics)
    app.router.add_get("/status.json", get_status)
    app.router.add_get("/openapi.json", get_openapi)
    app.router.add_get("/", get_index)
    app.router.add_static("/static/", _static_dir())
    return app


async def start_web(app: web.Application, host: str, port: int) -> web.AppRunner:
    """Serve ``app`` on ``host:port`` in the running loop; ``await runner.cleanup()`` stops it.

    Raises:
        ServiceError: the address cannot be bound (in use, not local).
    """
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
    except OSError as exc:
        await runner.cleanup()
        raise ServiceError(f"cannot serve HTTP on {host}:{port}: {exc}") from exc
    return runner


def run_web(settings: Settings, delivery: DeliveryGroups | None = None) -> None:
    """Serve the API standalone until interrupted (``segstream api``); ``delivery``: the
    webhook delivery groups its status page shows, if delivery is configured.

    Raises:
        ConfigError: serving without a token beyond loopback (see :func:`check_exposure`).
    """
    check_exposure(settings)
    app = create_web_app(settings, delivery=delivery)

    async def main() -> None:
        runner = await start_web(app, settings.http_host, settings.http_port)
        log.info("serving on http://%s:%d/", settings.http_host, settings.http_port)
        try:
            await asyncio.Event().wait()
        finally:
            await runner.cleanup()

    asyncio.run(main())


def worker_http(
    settings: Settings, metrics: Metrics, delivery: DeliveryGroups | None = None
) -> Extension:
    """The HTTP side (API, /metrics, status page) as a worker extension; off if ``http_port`` is 0.

    It shares the worker's metrics, model holder and Redis client, so /metrics shows this
    process's consumption and the API answers with the model the worker assigns with.
    ``delivery``: the webhook delivery groups the status page shows, if delivery is configured.

    Raises:
        ConfigError: serving without a token beyond loopback (see :func:`check_exposure`),
            checked here, before the worker starts.
    """
    if settings.http_port:
        check_exposure(settings)

    async def start(parts: WorkerParts) -> Callable[[], Awaitable[None]] | None:
        if not settings.http_port:
            return None
        app = create_web_app(
            settings,
            metrics=metrics,
            assigner=parts.assigner,
            redis=parts.redis,
            stalls=parts.watchdog.reasons,
            degraded=parts.processor.state.shortfall.reasons,
            delivery=delivery,
        )
        runner = await start_web(app, settings.http_host, settings.http_port)
        log.info("HTTP side on http://%s:%d/", settings.http_host, settings.http_port)
        return runner.cleanup

    return start
