"""tests/waiting.py: polling a condition until a deadline."""

from __future__ import annotations

import asyncio
import itertools

import pytest

from tests.waiting import async_wait_until, wait_until


def test_the_first_truthy_value_is_returned_without_waiting_longer() -> None:
    calls = itertools.count(1)
    assert wait_until(lambda: max(0, next(calls) - 2), 60, "never", interval_s=0) == 1
    assert next(calls) == 4  # called three times, no more


def test_a_condition_that_never_holds_fails_with_the_message() -> None:
    calls = itertools.count(1)
    with pytest.raises(AssertionError, match="timed out after 0 s: the thing never happened"):
        wait_until(lambda: next(calls) and None, 0, "the thing never happened")
    assert next(calls) == 2  # a zero deadline still gets one call


def test_a_callable_message_is_built_only_on_timeout() -> None:
    built: list[str] = []

    def message() -> str:
        built.append("x")
        return "lag 3"

    assert wait_until(lambda: True, 0, message) is True
    assert built == []
    with pytest.raises(AssertionError, match="lag 3"):
        wait_until(lambda: False, 0, message)
    assert built == ["x"]


def test_an_exception_from_the_condition_propagates_at_once() -> None:
    def broken() -> bool:
        raise ConnectionError("refused")

    with pytest.raises(ConnectionError, match="refused"):
        wait_until(broken, 60, "never")


def test_the_async_variant_polls_a_coroutine_the_same_way() -> None:
    calls = itertools.count(1)

    async def ready() -> int:
        return max(0, next(calls) - 1)

    assert asyncio.run(async_wait_until(ready, 60, "never", interval_s=0)) == 1
    with pytest.raises(AssertionError, match="timed out after 0 s: still not"):
        asyncio.run(async_wait_until(lambda: asyncio.sleep(0, result=0), 0, "still not"))
