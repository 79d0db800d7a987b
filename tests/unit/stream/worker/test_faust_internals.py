"""The two pieces of Faust's consumer state the fetcher reaches, and the guard against changes."""

from __future__ import annotations

import asyncio
import importlib

import faust
import pytest
from faust.transport.consumer import Consumer as FaustConsumer
from faust.types import TP

from segstream.errors import ConfigError
from segstream.stream.worker.faust_internals import (
    check_faust_internals,
    read_offsets,
    record_gap,
)


def test_the_installed_faust_has_the_state_the_fetcher_reads() -> None:
    check_faust_internals()


def test_a_faust_without_add_gap_is_refused_naming_the_version(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delattr(FaustConsumer, "_add_gap")
    with pytest.raises(ConfigError, match=r"faust-streaming \S+ .*Consumer\._add_gap is gone"):
        check_faust_internals()


def test_a_faust_whose_add_gap_changed_its_signature_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def add_gap(self: FaustConsumer, tp: TP, offsets: range) -> None: ...

    monkeypatch.setattr(FaustConsumer, "_add_gap", add_gap)
    with pytest.raises(ConfigError, match=r"_add_gap\(self, tp, offsets\) changed"):
        check_faust_internals()


def _commit_offset(gap: tuple[int, int] | None) -> int | None:
    """Faust's next commit offset after acking 10 and 14, with ``gap`` recorded between."""

    async def scenario() -> int | None:
        app = faust.App("faust-internals-test", broker="kafka://127.0.0.1:1")
        consumer = app.consumer
        tp = TP("orders", 0)
        assert read_offsets(consumer)[tp] is None  # Faust's defaultdict: nothing read yet
        read_offsets(consumer)[tp] = 14
        assert consumer._read_offset[tp] == 14  # the mapping itself, not a copy
        consumer._acked[tp].append(10)
        if gap is not None:
            await record_gap(consumer, tp, *gap)
        consumer._acked[tp].append(14)
        return consumer._new_offset(tp)

    return asyncio.run(scenario())


def test_a_recorded_gap_lets_faust_commit_past_offsets_the_broker_skipped() -> None:
    # What the fetcher relies on: without the gap, the commit stops after 10 for ever.
    assert _commit_offset(None) == 11
    assert _commit_offset((11, 14)) == 15


@pytest.mark.parametrize(
    ("owner", "name"),
    [
        ("faust.transport.drivers.aiokafka.Consumer", "_new_consumer_thread"),
        ("faust.transport.drivers.aiokafka.AIOKafkaConsumerThread", "_create_worker_consumer"),
        ("mode.Worker", "_on_sigterm"),
        ("mode.Worker", "_on_sigint"),
    ],
)
def test_a_private_hook_the_worker_overrides_gone_is_refused_naming_the_versions(
    owner: str, name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    module, _, cls_name = owner.rpartition(".")
    cls = getattr(importlib.import_module(module), cls_name)
    for defining in cls.__mro__:  # gone from the class and from the bases it inherits
        if name in vars(defining):
            monkeypatch.delattr(defining, name)
    with pytest.raises(
        ConfigError,
        match=rf"faust-streaming \S+ \(mode-streaming \S+\) .*{cls_name}\.{name} is gone",
    ):
        check_faust_internals()
