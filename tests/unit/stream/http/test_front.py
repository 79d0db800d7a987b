"""The supervisor's HTTP side: its own series (documented) and readiness over children."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

from segstream.settings import load_settings
from segstream.stream.http.front import _ChildClient, _readiness, supervisor_metrics
from segstream.stream.worker.supervisor import ChildView

OPERATIONS = Path(__file__).parents[4] / "docs" / "operations.md"


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
