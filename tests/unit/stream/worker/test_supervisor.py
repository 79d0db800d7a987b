"""The supervisor of ``segstream worker --processes N`` with stand-in children (real
processes): start failures, restarts, the crash-loop guard, a clean stop on SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import pytest

from segstream.errors import ServiceError
from segstream.settings import Settings, load_settings
from segstream.stream.worker.supervisor import Supervisor, child_settings
from tests.waiting import async_wait_until

STAND_IN = Path(__file__).with_name("stand_in_worker.py")


def _command(mode: str, *extra: str) -> list[str]:
    return [sys.executable, str(STAND_IN), mode, *extra]


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return load_settings(data_dir=tmp_path, http_port=0, shutdown_timeout_s=5.0)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_a_child_gets_the_supervisor_settings_with_one_process_on_a_private_port(
    settings: Settings,
) -> None:
    child = child_settings(settings.model_copy(update={"http_host": "0.0.0.0"}), 41234)
    assert (child.worker_processes, child.http_port, child.http_host) == (1, 41234, "127.0.0.1")
    assert child.app_id == settings.app_id


def test_a_child_that_cannot_start_ends_the_command_with_its_message(
    settings: Settings,
) -> None:
    supervisor = Supervisor(settings, 2, command=_command("fail"))
    with pytest.raises(ServiceError, match="could not start") as raised:
        asyncio.run(asyncio.wait_for(supervisor.run(), 60))
    assert "no model at /nowhere/current (SEGSTREAM_MODEL_DIR)" in str(raised.value)
    assert "exit code 2" in str(raised.value)
    assert all(view.pid is None for view in supervisor.views())


def test_a_crash_loop_gives_up_with_a_clear_message(settings: Settings) -> None:
    supervisor = Supervisor(
        settings, 2, command=_command("crash"), restart_limit=3, first_delay_s=0.05
    )
    with pytest.raises(ServiceError, match="died 3 times within 120 s") as raised:
        asyncio.run(asyncio.wait_for(supervisor.run(), 120))
    assert "crash loop" in str(raised.value)
    assert "exit code 3" in str(raised.value)
    assert all(view.pid is None for view in supervisor.views())


def test_a_child_that_dies_is_restarted_and_sigterm_stops_every_child(
    settings: Settings, tmp_path: Path
) -> None:
    supervisor = Supervisor(
        settings, 2, command=_command("crash-once", str(tmp_path / "crashed")), first_delay_s=0.05
    )

    async def scenario() -> tuple[int, list[int]]:
        run = asyncio.create_task(supervisor.run())

        async def restarted_and_running() -> bool:
            views = supervisor.views()
            return sum(v.restarts for v in views) == 1 and all(v.state == "running" for v in views)

        await async_wait_until(restarted_and_running, 60, lambda: str(supervisor.views()))
        pids = [v.pid for v in supervisor.views() if v.pid is not None]
        os.kill(os.getpid(), signal.SIGTERM)  # the supervisor's handler takes it
        return await asyncio.wait_for(run, 60), pids

    code, pids = asyncio.run(scenario())
    assert code == 0
    assert len(pids) == 2
    assert not any(_alive(pid) for pid in pids)
    crashed = [v for v in supervisor.views() if v.restarts]
    assert len(crashed) == 1 and crashed[0].last_exit == 3


def test_a_line_longer_than_a_pipe_read_is_relayed_and_the_child_runs_on(
    settings: Settings,
) -> None:
    supervisor = Supervisor(settings, 2, command=_command("long-line"))

    async def scenario() -> int:
        run = asyncio.create_task(supervisor.run())

        async def listening() -> bool:
            return all(
                any(line.startswith("listening") for line in child.tail)
                for child in supervisor.children
            )

        await async_wait_until(listening, 60, lambda: str(supervisor.views()))
        os.kill(os.getpid(), signal.SIGTERM)
        return await asyncio.wait_for(run, 60)

    assert asyncio.run(scenario()) == 0
    for child in supervisor.children:
        pieces = [line for line in child.tail if line.startswith("x")]
        assert sum(map(len, pieces)) == 300_000


def test_fewer_than_two_children_is_no_supervisor(settings: Settings) -> None:
    with pytest.raises(ValueError, match="2 or more"):
        Supervisor(settings, 1)
