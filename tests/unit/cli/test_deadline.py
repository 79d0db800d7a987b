"""The commands' time limit (``SEGSTREAM_COMMAND_TIMEOUT_S``): the deadline's own rules."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
import time

import pytest

from segstream.cli.deadline import EXIT_TIMEOUT, KAFKA, REDIS, CommandDeadline
from segstream.errors import CommandTimeout, ServiceError
from segstream.settings import load_settings


class _Clock:
    def __init__(self) -> None:
        self.now = 50.0

    def __call__(self) -> float:
        return self.now


def _deadline(seconds: float, *dependencies: str) -> CommandDeadline:
    settings = load_settings(
        command_timeout_s=seconds,
        redis_url="redis://127.0.0.1:6390/0",
        kafka_bootstrap_servers="127.0.0.1:9099",
    )
    return CommandDeadline(settings, "reading user 7", *dependencies, backstop_s=2.0)


def test_a_command_within_its_limit_returns_its_result() -> None:
    async def answer() -> int:
        return 42

    assert _deadline(30, REDIS).run(answer()) == 42


def test_a_command_past_its_limit_is_cancelled_and_names_the_dependency_and_the_setting() -> None:
    cancelled: list[bool] = []

    async def hang() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.append(True)
            raise

    with pytest.raises(CommandTimeout) as caught:
        _deadline(0.2, REDIS, KAFKA).run(hang())
    assert cancelled == [True], "the command's coroutine was cancelled (its clients close)"
    assert isinstance(caught.value, ServiceError)
    text = str(caught.value)
    assert text.startswith("reading user 7 did not finish within")
    assert "SEGSTREAM_COMMAND_TIMEOUT_S=0.2 s" in text
    assert "Redis at redis://127.0.0.1:6390/0 (SEGSTREAM_REDIS_URL)" in text
    assert "Kafka at 127.0.0.1:9099 (SEGSTREAM_KAFKA_BOOTSTRAP_SERVERS)" in text


def test_progress_starts_the_limit_again() -> None:
    clock = _Clock()
    settings = load_settings(command_timeout_s=10)
    deadline = CommandDeadline(settings, "replaying events", KAFKA, clock=clock)
    clock.now += 8
    assert deadline.remaining() == pytest.approx(2)
    deadline.progress()
    assert deadline.remaining() == pytest.approx(10)
    clock.now += 11
    assert deadline.remaining() < 0


def test_a_tracked_callback_is_called_and_reports_progress() -> None:
    clock = _Clock()
    deadline = CommandDeadline(load_settings(command_timeout_s=10), "reassign", REDIS, clock=clock)
    seen: list[int] = []
    advance = deadline.tracking(seen.append)
    clock.now += 9
    advance(500)
    assert seen == [500]
    assert deadline.remaining() == pytest.approx(10)


def test_a_loop_that_never_comes_back_is_ended_by_the_backstop_with_the_message() -> None:
    """A blocking call inside the coroutine: no cancellation can reach it, the thread can."""
    script = textwrap.dedent(
        """
        import asyncio, time
        from segstream.cli.deadline import REDIS, CommandDeadline
        from segstream.settings import load_settings

        async def blocks() -> None:
            time.sleep(120)

        settings = load_settings(command_timeout_s=0.5)
        CommandDeadline(settings, "reading user 7", REDIS, backstop_s=1.0).run(blocks())
        """
    )
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=100, check=False
    )
    assert done.returncode == EXIT_TIMEOUT, done.stderr
    assert "reading user 7 did not finish" in done.stderr
    assert "SEGSTREAM_COMMAND_TIMEOUT_S" in done.stderr
    # Well before the 120 s the call would block: the bound is behaviour, slack is generous.
    assert time.monotonic() - started < 60
