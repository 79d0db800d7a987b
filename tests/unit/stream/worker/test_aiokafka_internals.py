"""aiokafka's fetch wait, set only through one adapter, and the start-up check that refuses an
aiokafka which no longer keeps or reads it, naming its version."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from aiokafka import AIOKafkaConsumer

from segstream.errors import ConfigError
from segstream.stream.worker.aiokafka_internals import (
    check_aiokafka_internals,
    set_fetch_max_wait,
)


@pytest.fixture(autouse=True)
def fresh_check() -> Iterator[None]:
    check_aiokafka_internals.cache_clear()
    yield
    check_aiokafka_internals.cache_clear()


def test_the_installed_aiokafka_keeps_and_reads_the_fetch_wait() -> None:
    check_aiokafka_internals()

    async def built() -> int:
        consumer = AIOKafkaConsumer(bootstrap_servers="127.0.0.1:1")  # never started
        set_fetch_max_wait(consumer, 250)
        return int(consumer._fetch_max_wait_ms)  # what start() hands its Fetcher

    assert asyncio.run(built()) == 250


def test_an_aiokafka_whose_start_no_longer_reads_it_is_refused_naming_the_version(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def start(self: AIOKafkaConsumer) -> None: ...

    monkeypatch.setattr(AIOKafkaConsumer, "start", start)
    with pytest.raises(
        ConfigError,
        match=r"aiokafka \d\S* .*AIOKafkaConsumer\.start no longer reads _fetch_max_wait_ms",
    ):
        check_aiokafka_internals()
