"""The supervisor's HTTP side: its own series (documented) and readiness over children."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from pydantic import SecretStr

from segstream.settings import load_settings
from segstream.stream.http.auth import bearer_auth
from segstream.stream.http.front import (
    _ChildClient,
    _readiness,
    create_front_app,
    supervisor_metrics,
)
from segstream.stream.http.metrics import Metrics
from segstream.stream.worker.supervisor import ChildView

OPERATIONS = Path(__file__).parents[4] / "docs" / "operations.md"
TOKEN = "t0ken-with-enough-entropy"


def _view(index: int, state: str = "running", pid: int | None = 100, **kw: object) -> ChildView:
    values: dict[str, object] = {"port": 1, "restarts": 0, "last_exit": None, **kw}
    return ChildView(index, pid, state=state, **values)  # type: ignore[arg-type]


def test_the_operations_table_lists_exactly_the_supervisor_series() -> None:
    documented = set(re.findall(r"^\| `(segstream_worker_\w+)` \|", OPERATIONS.read_text(), re.M))
    exposed = {
        f"{m.name}_total" if m.type == "counter" else m.name for m in supervisor_metrics([_view(0)])
    }
    assert documented == exposed


def test_supervisor_series_say_which_process_is_up_and_how_often_it_restarted() -> None:
    families = {
        m.name: m for m in supervisor_metrics([_view(0), _view(1, "restarting", None, restarts=2)])
    }
    assert [s.value for s in families["segstream_worker_processes"].samples] == [2]
    up = {s.labels["process"]: s.value for s in families["segstream_worker_process_up"].samples}
    assert up == {"0": 1, "1": 0}
    restarts = {
        s.labels["process"]: s.value
        for s in families["segstream_worker_process_restarts"].samples
        if s.name.endswith("_total")
    }
    assert restarts == {"0": 0, "1": 2}


def test_a_child_that_is_not_running_makes_the_group_not_ready_and_is_named() -> None:
    client = _ChildClient(load_settings())
    children = [_view(0, "restarting", None, last_exit=-9), _view(1, "starting", 4242)]
    document = asyncio.run(_readiness(client, children))
    assert document["ready"] is False
    assert document["reasons"] == [
        "worker process 0: restarting (last exit code -9)",
        "worker process 1 (pid 4242): starting",
    ]
    assert document["checks"]["worker process 0"] == {
        "ok": False,
        "detail": "restarting (last exit code -9)",
    }


def test_the_front_guards_its_routes_and_passes_the_token_on_to_a_child() -> None:
    worker_metrics = Metrics()
    worker_metrics.consumed("orders", 7)

    async def metrics(request: web.Request) -> web.Response:
        return web.Response(body=worker_metrics.exposition(), content_type="text/plain")

    async def ready(request: web.Request) -> web.Response:
        return web.json_response({"ready": True, "reasons": []})

    async def segments(request: web.Request) -> web.Response:
        return web.json_response({"path": request.path_qs})

    async def scenario() -> list[tuple[str, int, str]]:
        child = web.Application(middlewares=[bearer_auth(SecretStr(TOKEN))])
        child.router.add_get("/metrics", metrics)
        child.router.add_get("/readyz", ready)
        child.router.add_get("/segments", segments)
        async with TestServer(child) as served:
            assert served.port is not None
            view = _view(0, port=served.port)
            settings = load_settings(http_token=TOKEN)
            front = create_front_app(settings, lambda: [view])
            auth = {"Authorization": f"Bearer {TOKEN}"}
            answers = []
            async with TestClient(TestServer(front)) as client:
                for path, headers in (
                    ("/metrics", {}),
                    ("/metrics", auth),
                    ("/livez", {}),
                    ("/readyz", {}),
                    ("/segments?x=1", auth),
                ):
                    response = await client.get(path, headers=headers)
                    answers.append((path, response.status, await response.text()))
            return answers

    (_, refused, why), (_, ok, merged), (_, live, _), (_, ready_, _), (_, passed, body) = (
        asyncio.run(scenario())
    )
    assert refused == 401 and "no bearer token" in why
    assert ok == 200
    assert 'segstream_events_consumed_total{topic="orders"} 7.0' in merged  # the child answered
    assert "segstream_worker_processes 1.0" in merged
    assert (live, ready_) == (200, 200)
    assert passed == 200 and '"/segments?x=1"' in body
