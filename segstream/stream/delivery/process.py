"""``segstream deliver``: every destination's loop in one process, with ``/metrics``,
``/status`` (JSON) and ``/`` (the same as a page) on ``SEGSTREAM_DELIVERY_HTTP_PORT``.

A loop that fails for good (a permanent Kafka or Redis error) stops the process with its
message; a destination that is merely down never does (its batches are retried, then
dead-lettered).
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import json
import logging
import signal
from collections.abc import Sequence

from aiohttp import web

from segstream.errors import ServiceError, describe
from segstream.settings import Settings
from segstream.stream.clients.kafka import producer as kafka_producer
from segstream.stream.clients.redis import redis_client
from segstream.stream.clients.retry import KAFKA_TRANSIENT, retry
from segstream.stream.delivery.config import DeliveryConfig
from segstream.stream.delivery.loop import DestinationLoop, group_of
from segstream.stream.delivery.metrics import DeliveryMetrics
from segstream.stream.kafka.lag import LagReader
from segstream.stream.kafka.topics import ensure_topics

__all__ = ["BACKLOG_INTERVAL_S", "delivery_topics", "run_delivery", "status_page", "watch_backlogs"]

log = logging.getLogger(__name__)


# Named: a starred tuple in `except` is opaque to the type checker.
_READ_ERRORS: tuple[type[BaseException], ...] = (ServiceError, *KAFKA_TRANSIENT)

BACKLOG_INTERVAL_S = 5.0
"""How often ``segstream_delivery_backlog_messages`` is read from Kafka, in seconds."""


async def watch_backlogs(
    settings: Settings, names: Sequence[str], metrics: DeliveryMetrics, stopping: asyncio.Event
) -> None:
    """Set each destination's backlog gauge from Kafka every :data:`BACKLOG_INTERVAL_S` until
    ``stopping``: its whole group's changes not acknowledged (end minus committed offset, as
    the worker's status page reads them), so every deliver process exports the same figure.

    Apart from the loops on purpose: a batch retried against a destination that is down can
    take minutes, and the backlog that grows meanwhile is what the operator must see. A Kafka
    that does not answer leaves the gauges as they were and is tried again.
    """
    topic = [settings.topic_segment_changes]
    reader = LagReader(settings, group_of(settings, names[0]), topic, fetch_timeout_s=0.5)
    started = False
    try:
        while not stopping.is_set():
            try:
                if not started:
                    await reader.start()
                    started = True
                for name in names:
                    group = group_of(settings, name)
                    async with asyncio.timeout(15.0):
                        snapshot = await reader.read(group, topic)
                    metrics.backlog.labels(name).set(snapshot.total_lag)
            except _READ_ERRORS as exc:
                log.warning("the delivery backlogs were not read from Kafka: %s", describe(exc))
                await reader.stop()
                started = False
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(BACKLOG_INTERVAL_S):
                    await stopping.wait()
    finally:
        await reader.stop()


async def delivery_topics(settings: Settings) -> None:
    """Create the delivery dead-letter topic if missing (as the worker creates its topics)."""
    await ensure_topics(settings, specs={settings.topic_delivery_dead_letters: {}})


def _status(loops: list[DestinationLoop], metrics: DeliveryMetrics) -> dict[str, object]:
    backlog = {
        sample.labels["destination"]: sample.value
        for family in metrics.backlog.collect()
        for sample in family.samples
    }
    return {
        "destinations": [
            {
                "name": loop.destination.name,
                "url_host": loop.destination.url.split("/")[2],
                "delivered": loop.delivered,
                "dead_lettered": loop.dead_lettered,
                "backlog": backlog.get(loop.destination.name, 0),
            }
            for loop in loops
        ]
    }


def status_page(status: dict[str, object], refresh_s: int = 5) -> str:
    """``GET /``: the ``/status`` document as a small HTML table for a person (no script: the
    browser reloads it every ``refresh_s`` seconds). Every value is escaped."""
    rows = []
    destinations = status.get("destinations")
    for entry in destinations if isinstance(destinations, list) else []:
        cells = "".join(
            f"<td>{html.escape(str(entry.get(k, '')))}</td>"
            for k in ("name", "url_host", "delivered", "dead_lettered", "backlog")
        )
        rows.append(f"<tr>{cells}</tr>")
    body = "".join(rows) or '<tr><td colspan="5">no destination</td></tr>'
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="refresh" content="{refresh_s}">'
        "<title>segstream deliver</title><style>body{font-family:sans-serif;margin:1.5rem}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.3rem .6rem}"
        "</style></head><body><h1>segstream deliver</h1>"
        "<p>Events delivered and dead-lettered by this process since it started; the backlog "
        "is the destination group's, read from Kafka.</p>"
        "<table><thead><tr><th>destination</th><th>host</th><th>delivered</th>"
        f"<th>dead-lettered</th><th>backlog</th></tr></thead><tbody>{body}</tbody></table>"
        '<p><a href="/status">/status</a> · <a href="/metrics">/metrics</a></p></body></html>'
    )


async def _serve(
    settings: Settings, loops: list[DestinationLoop], metrics: DeliveryMetrics
) -> web.AppRunner | None:
    if settings.delivery_http_port == 0:
        return None

    async def metrics_page(request: web.Request) -> web.Response:
        return web.Response(body=metrics.exposition(), content_type="text/plain", charset="utf-8")

    async def status_document(request: web.Request) -> web.Response:
        return web.json_response(_status(loops, metrics), dumps=json.dumps)

    async def index(request: web.Request) -> web.Response:
        return web.Response(text=status_page(_status(loops, metrics)), content_type="text/html")

    app = web.Application()
    app.router.add_get("/", index)
    app.router.add_get("/metrics", metrics_page)
    app.router.add_get("/status", status_document)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, settings.http_host, settings.delivery_http_port).start()
    return runner


async def run_delivery(settings: Settings, config: DeliveryConfig) -> None:
    """Deliver to every destination of ``config`` until SIGTERM or SIGINT.

    Raises:
        ServiceError: Kafka or Redis failed for good (permanent error), with what to change.
    """
    await delivery_topics(settings)
    metrics = DeliveryMetrics(d.name for d in config.destinations)
    producer = kafka_producer(settings, acks="all", enable_idempotence=True)
    await retry(producer.start, what="connecting to Kafka", transient=KAFKA_TRANSIENT)
    redis = redis_client(settings)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    loops = [DestinationLoop(settings, d, metrics, producer, redis) for d in config.destinations]
    runner = await _serve(settings, loops, metrics)
    log.info("delivering to %s", ", ".join(d.name for d in config.destinations))
    names = [d.name for d in config.destinations]
    watcher = asyncio.create_task(watch_backlogs(settings, names, metrics, stopping))
    try:
        tasks = [asyncio.create_task(each.run(stopping)) for each in loops]
        await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        stopping.set()  # one loop failed for good: stop the others after their batch
        results = await asyncio.gather(*tasks, return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result
    finally:
        stopping.set()
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(ValueError, RuntimeError):
                loop.remove_signal_handler(sig)
        if runner is not None:
            await runner.cleanup()
        await producer.stop()
        await redis.aclose()
