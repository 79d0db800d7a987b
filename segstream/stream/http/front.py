"""The supervisor's HTTP side: one endpoint for ``segstream worker --processes N``.

Served on ``SEGSTREAM_HTTP_HOST:SEGSTREAM_HTTP_PORT``, the port a single worker uses, so
probes, scrapes and the status page need no change when N grows. Each child serves its own
HTTP side on a private loopback port (:mod:`segstream.stream.worker.supervisor`); this side
asks them:

- ``GET /metrics``: every running child's ``/metrics`` merged
  (:class:`~segstream.stream.http.merge.MetricsMerger`: counters and histograms summed,
  group-wide gauges once, the others labelled ``process``), plus the supervisor's own
  ``segstream_worker_processes``, ``segstream_worker_process_up{process}`` and
  ``segstream_worker_process_restarts_total{process}``;
- ``GET /readyz``: 200 when every child is running and its own ``/readyz`` is ready, else 503
  with one reason per child that is not (``worker process 1 (pid 4242): ...``);
- ``GET /healthz``, ``GET /livez``: the supervisor answers (it restarts a dead child itself),
  with each child's state;
- ``GET /status.json``: the group-wide figures from one child (lag, throughput, populations,
  changes), ``health`` as ``/readyz``, ``throughput.this_process`` summed over the children,
  and ``processes``: one entry per child (pid, state, restarts, readiness, its own rates); the
  status page draws it;
- every other path (the API, the status page itself) is passed to a running child in turn.

A child that does not answer within :data:`CHILD_TIMEOUT_S` is reported as such, never waited
for longer. With ``SEGSTREAM_HTTP_TOKEN`` the same bearer token guards this side (the public
paths of :mod:`segstream.stream.http.auth` excepted) and is sent to the children.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.typedefs import Middleware
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    Metric,
)

from segstream.settings import Settings
from segstream.stream.http.auth import bearer_auth, check_exposure
from segstream.stream.http.merge import PROCESS_LABEL, MetricsMerger
from segstream.stream.http.metrics import CONTENT_TYPE
from segstream.stream.http.server import error_response, start_web
from segstream.stream.worker.supervisor import ChildView, Front, Supervisor

__all__ = ["CHILD_TIMEOUT_S", "create_front_app", "supervisor_http", "supervisor_metrics"]

log = logging.getLogger(__name__)

CHILD_TIMEOUT_S = 5.0
"""Longest wait for one child's answer, in seconds."""

_PASSED_HEADERS = ("Authorization", "Content-Type", "Accept")
"""Request headers passed on to a child."""
_THROUGHPUT_FIELDS = (
    "events_per_s",
    "changes_per_s",
    "dead_letters_per_s",
    "events_total",
    "changes_total",
    "dead_letters_total",
)

Children = Callable[[], Sequence[ChildView]]


class _ChildClient:
    """GETs and pass-through requests to the children's private ports."""

    def __init__(self, settings: Settings) -> None:
        self.headers = (
            {"Authorization": f"Bearer {settings.http_token.get_secret_value()}"}
            if settings.http_token is not None
            else {}
        )
        self.session: aiohttp.ClientSession | None = None

    def _session(self) -> aiohttp.ClientSession:
        if self.session is None:
            self.session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=CHILD_TIMEOUT_S)
            )
        return self.session

    async def get(self, child: ChildView, path: str) -> tuple[int, bytes] | str:
        """``(status, body)`` of ``GET path`` on ``child``, or why there is none."""
        if child.state != "running" or child.pid is None:
            return f"{child.state}" + (
                f" (last exit code {child.last_exit})" if child.last_exit is not None else ""
            )
        url = f"http://127.0.0.1:{child.port}{path}"
        try:
            async with self._session().get(url, headers=self.headers) as response:
                return response.status, await response.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            return f"did not answer {path} within {CHILD_TIMEOUT_S:.0f} s: {exc!r}"

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()


def _json(body: bytes) -> dict[str, Any] | None:
    try:
        document = json.loads(body)
    except ValueError:
        return None
    return document if isinstance(document, dict) else None


def _name(child: ChildView) -> str:
    return f"worker process {child.index}" + (f" (pid {child.pid})" if child.pid else "")


async def _readiness(client: _ChildClient, children: Sequence[ChildView]) -> dict[str, Any]:
    answers = await asyncio.gather(*(client.get(c, "/readyz") for c in children))
    reasons: list[str] = []
    processes = []
    checks: dict[str, dict[str, Any]] = {}
    for child, answer in zip(children, answers, strict=True):
        if isinstance(answer, str):
            mine = [answer]
        else:
            status, body = answer
            document = _json(body) or {}
            mine = [] if status == 200 else list(document.get("reasons") or [f"HTTP {status}"])
        reasons += [f"{_name(child)}: {reason}" for reason in mine]
        processes.append(
            {"process": child.index, "pid": child.pid, "ready": not mine, "reasons": mine}
        )
        # The shape of a worker's /readyz: one check per process, so the status page draws it.
        checks[f"worker process {child.index}"] = {"ok": not mine, "detail": "; ".join(mine)}
    return {"ready": not reasons, "reasons": reasons, "checks": checks, "processes": processes}


def supervisor_metrics(children: Sequence[ChildView]) -> list[Metric]:
    """The supervisor's own series over ``children``: how many processes, which are up, and
    how often each was restarted."""
    configured = GaugeMetricFamily(
        "segstream_worker_processes", "Worker processes this supervisor runs."
    )
    configured.add_metric([], len(children))
    up = GaugeMetricFamily(
        "segstream_worker_process_up",
        "1 while the worker process is running and answers, else 0.",
        labels=[PROCESS_LABEL],
    )
    restarts = CounterMetricFamily(
        "segstream_worker_process_restarts",
        "Times the worker process was started again after it died.",
        labels=[PROCESS_LABEL],
    )
    for child in children:
        up.add_metric([str(child.index)], 1 if child.state == "running" else 0)
        restarts.add_metric([str(child.index)], child.restarts)
    return [configured, up, restarts]


@web.middleware
async def _errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """This side's own errors (a 401, a 405) as ``{"error": message}``, as a child's."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return error_response(request, exc)


def create_front_app(settings: Settings, children: Children) -> web.Application:
    """The supervisor's HTTP application (not started) over ``children`` (a snapshot
    function, :meth:`Supervisor.views`)."""
    client = _ChildClient(settings)
    merger = MetricsMerger()
    turn = itertools.count()

    async def metrics(request: web.Request) -> web.Response:
        views = children()
        answers = await asyncio.gather(*(client.get(c, "/metrics") for c in views))
        for child, answer in zip(views, answers, strict=True):
            if isinstance(answer, tuple) and answer[0] == 200 and child.pid is not None:
                try:
                    merger.update(child.index, child.pid, answer[1].decode())
                except ValueError as exc:  # a child's exposition that does not parse
                    log.warning("%s: unreadable /metrics: %s", _name(child), exc)
        body = merger.exposition(supervisor_metrics(views))
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})

    async def readyz(request: web.Request) -> web.Response:
        document = await _readiness(client, children())
        return web.json_response(document, status=200 if document["ready"] else 503)

    async def livez(request: web.Request) -> web.Response:
        views = children()
        return web.json_response(
            {
                "status": "alive",
                "processes": [
                    {
                        "process": c.index,
                        "pid": c.pid,
                        "port": c.port,
                        "state": c.state,
                        "restarts": c.restarts,
                    }
                    for c in views
                ],
            }
        )

    async def status(request: web.Request) -> web.Response:
        views = children()
        answers, health = await asyncio.gather(
            asyncio.gather(*(client.get(c, "/status.json") for c in views)),
            _readiness(client, views),
        )
        documents = [_json(a[1]) if isinstance(a, tuple) and a[0] == 200 else None for a in answers]
        processes = []
        totals = dict.fromkeys(_THROUGHPUT_FIELDS, 0.0)
        for child, document, ready in zip(views, documents, health["processes"], strict=True):
            own = ((document or {}).get("throughput") or {}).get("this_process")
            for name in _THROUGHPUT_FIELDS:
                totals[name] += float((own or {}).get(name) or 0)
            processes.append(
                {
                    "process": child.index,
                    "pid": child.pid,
                    "port": child.port,
                    "state": child.state,
                    "restarts": child.restarts,
                    "last_exit": child.last_exit,
                    "ready": ready["ready"],
                    "reasons": ready["reasons"],
                    "this_process": own,
                }
            )
        base = next((d for d in documents if d is not None), None)
        if base is None:
            return web.json_response(
                {
                    "error": "no worker process answers yet; see processes",
                    "health": health,
                    "processes": processes,
                },
                status=503,
            )
        base["health"] = {k: health[k] for k in ("ready", "reasons", "checks")}
        base.setdefault("throughput", {})["this_process"] = {
            "window_s": base["throughput"].get("window_s"),
            **totals,
        }
        base["processes"] = processes
        return web.json_response(base)

    async def pass_on(request: web.Request) -> web.StreamResponse:
        running = [c for c in children() if c.state == "running" and c.pid is not None]
        if not running:
            return web.json_response(
                {"error": "no worker process is running to answer; see /readyz"}, status=503
            )
        child = running[next(turn) % len(running)]
        headers = {h: request.headers[h] for h in _PASSED_HEADERS if h in request.headers}
        url = f"http://127.0.0.1:{child.port}{request.path_qs}"
        try:
            async with client._session().request(
                request.method, url, headers=headers, data=await request.read()
            ) as response:
                body = await response.read()
                passed = {
                    h: response.headers[h]
                    for h in ("Content-Type", "Allow", "WWW-Authenticate")
                    if h in response.headers
                }
                return web.Response(status=response.status, body=body, headers=passed)
        except (aiohttp.ClientError, TimeoutError) as exc:
            return web.json_response(
                {"error": f"{_name(child)} did not answer: {exc!r}; try again"}, status=503
            )

    async def cleanup(app: web.Application) -> AsyncIterator[None]:
        yield
        await client.close()

    middlewares: list[Middleware] = [_errors]  # outermost: it also shapes auth's 401
    if settings.http_token is not None:
        middlewares.append(bearer_auth(settings.http_token))
    app = web.Application(middlewares=middlewares, client_max_size=1024 * 1024)
    app.cleanup_ctx.append(cleanup)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/healthz", livez)
    app.router.add_get("/livez", livez)
    app.router.add_get("/status.json", status)
    app.router.add_route("*", "/{tail:.*}", pass_on)
    return app


def supervisor_http(settings: Settings) -> Front:
    """The supervisor's HTTP side as a :data:`Front`; off if ``http_port`` is 0.

    Raises:
        ConfigError: serving without a token beyond loopback (checked here, before any child
            starts; see :func:`check_exposure`).
    """
    if settings.http_port:
        check_exposure(settings)

    async def start(supervisor: Supervisor) -> Callable[[], Awaitable[None]] | None:
        if not settings.http_port:
            return None
        app = create_front_app(settings, supervisor.views)
        runner = await start_web(app, settings.http_host, settings.http_port)
        log.info(
            "HTTP side of %d worker processes on http://%s:%d/",
            supervisor.n,
            settings.http_host,
            settings.http_port,
        )
        return runner.cleanup

    return start
