"""``segstream reassign`` on the real stack: an event for each user whose segment changed and
nothing for the others, safe to interrupt and rerun, safe while a worker runs."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from segstream.settings import Settings
from segstream.stream.clients.kafka import output_producer
from segstream.stream.domain.topics import Output, Topics
from segstream.stream.kafka.publisher import AiokafkaSender
from segstream.stream.kafka.topics import read_all
from segstream.stream.lifecycle.reassign import REASSIGN_SOURCE, Reassigner
from segstream.stream.state.keys import state_prefix
from segstream.stream.state.store import RedisState
from segstream.stream.worker.assigner import Assigner
from tests.integration.stream.conftest import (
    Dataset,
    cli_json,
    replay,
    wait_until_consumed,
)
from tests.integration.stream.lifecycle.checks import check_versioned_parity, segments_of
from tests.integration.stream.lifecycle.conftest import UnderLoad, Versions, switch_to
from tests.waiting import wait_until

pytestmark = pytest.mark.slow


def reassign_cli(settings: Settings) -> dict[str, Any]:
    """``segstream reassign --json`` in a child process, as an operator runs it."""
    return cli_json(settings, "reassign", timeout_s=120)


class Interrupted(Exception):
    """Stands for the operator's Ctrl-C between queueing a batch's changes and publishing."""


class InterruptingSender:
    """Publishes the first ``batches`` batches through ``sender``, then stops the run."""

    def __init__(self, sender: AiokafkaSender, batches: int) -> None:
        self.sender = sender
        self.left = batches

    async def publish(self, outputs: Sequence[Output]) -> None:
        if self.left == 0:
            raise Interrupted
        self.left -= 1
        await self.sender.publish(outputs)


def reassign_interrupted(settings: Settings, batches: int, batch_size: int) -> None:
    """A run stopped after ``batches`` published batches, the next one's changes queued."""

    async def run() -> None:
        client = aioredis.Redis.from_url(settings.redis_url)
        producer = output_producer(settings)
        await producer.start()
        try:
            reassigner = Reassigner(
                RedisState(client, state_prefix(settings)),
                Assigner(settings.model_dir),
                InterruptingSender(AiokafkaSender(producer), batches),
                Topics.from_settings(settings),
                batch_size=batch_size,
            )
            with pytest.raises(Interrupted):
                await reassigner.run()
        finally:
            await producer.stop()
            await client.aclose()

    asyncio.run(run())


def change_records(settings: Settings) -> list[dict[str, Any]]:
    records = asyncio.run(read_all(settings, settings.topic_segment_changes))
    return [json.loads(record.value) for record in records]


def test_reassign_announces_only_moved_users_survives_an_interruption_and_reruns_emit_nothing(
    stream_settings: Settings,
    dataset: Dataset,
    versions: Versions,
    models_dir: Path,
    start_worker,
) -> None:
    settings = stream_settings.model_copy(update={"model_dir": models_dir})
    worker = start_worker(settings)
    replay(settings, dataset.plan)
    wait_until_consumed(settings, [worker])
    assert worker.stop(signal.SIGTERM) == 0, worker.log_tail()
    before = len(change_records(settings))
    switch_to(models_dir, versions.v2.version)

    reassign_interrupted(settings, batches=2, batch_size=1_000)
    report = reassign_cli(settings)
    again = reassign_cli(settings)

    old, new = segments_of(versions.v1, dataset), segments_of(versions.v2, dataset)
    moved = {uid for uid in new if new[uid] != old[uid]}
    assert 0 < len(moved) < len(new), "v2 should move some users, not all"
    check_versioned_parity(
        settings,
        dataset,
        {versions.v2.version: versions.v2},
        last_change_versions={versions.v1.version, versions.v2.version},
    )
    everything = change_records(settings)
    assert len(everything) == before + len(moved), "a change was published twice, or is missing"
    changes = [c for c in everything if c["source"]["topic"] == REASSIGN_SOURCE.topic]
    assert {c["user_id"] for c in changes} == moved
    assert len({c["event_id"] for c in changes}) == len(moved)
    for change in changes:
        uid = change["user_id"]
        assert (change["previous_segment"], change["segment"]) == (old[uid], new[uid])
        assert change["model_version"] == versions.v2.version

    # The interrupted run did its first three batches (the third one's changes left queued).
    assert 0 < report["changed"] < len(moved)
    assert report["published"] > report["changed"], "the queued changes were not published"
    assert report["assignable"] == len(new)
    assert report["changed"] + report["version_only"] + report["unchanged"] == len(new)
    assert report["unchanged"] >= 2_000, "the interrupted run's batches were done again"
    assert report["conflicts"] == 0
    assert (again["changed"], again["version_only"], again["published"]) == (0, 0, 0)
    assert again["unchanged"] == again["assignable"] == len(new)
    assert len(change_records(settings)) == before + len(moved)


def test_reassign_while_a_worker_runs_leaves_every_user_on_the_new_model(
    dataset: Dataset,
    versions: Versions,
    switch_under_load: Callable[..., UnderLoad],
) -> None:
    run = switch_under_load(len(dataset.plan.events) // 50, rate=3_000, share=0.3)
    settings, worker, flow = run.settings, run.worker, run.flow
    wait_until(  # the worker checks `current` every 2 s
        lambda: f"replaced by {versions.v2.version}" in worker.log_path.read_text(errors="replace"),
        60,
        lambda: f"the worker never loaded {versions.v2.version}:\n{worker.log_tail()}",
        interval_s=0.2,
    )
    started = time.monotonic()
    report = reassign_cli(settings)
    ended = time.monotonic()
    # The worker consumes within milliseconds of a publish, so events sent while the reassign
    # ran mean the worker was writing the same users' state at the same time.
    overlapping = sum(started <= at <= ended for at in flow.sent_at)
    assert overlapping > 0, (
        f"the replay ({len(flow.sent_at)} events) ended before the reassign started: not tested"
    )
    flow.join()
    wait_until_consumed(settings, [worker])
    assert worker.stop(signal.SIGTERM) == 0, worker.log_tail()

    assert report["users"] > 0 and report["changed"] > 0
    check_versioned_parity(
        settings,
        dataset,
        {versions.v2.version: versions.v2},
        last_change_versions={versions.v1.version, versions.v2.version},
    )
