"""End to end on the real pipeline: a generated PostgreSQL database, Debezium's snapshot and
the shop's live mix, a worker with ``SEGSTREAM_SOURCE=cdc``: every user's features equal
``features.sql`` over the database's current rows, and their segment the batch's assignment."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import redis.asyncio as aioredis

from segstream.cdc.shop import MIX, Shop
from segstream.settings import Settings
from segstream.stream.kafka.lag import read_lag
from segstream.stream.state.keys import state_prefix
from segstream.stream.state.store import RedisState
from segstream.training.artifact import load_model, publish_current, save_model
from segstream.training.assign import assign
from segstream.training.data import DataSource, read_features
from segstream.training.features import FEATURE_COLUMNS
from segstream.training.postgres_sink import connect
from tests.integration.cdc.pipeline import captured_shop
from tests.integration.stacks import CdcServices
from tests.integration.stream.conftest import WorkerProcess, app_settings
from tests.small_model import make_model


@pytest.fixture
def worker_of(tmp_path: Path) -> Iterator[Any]:
    """Factory: a worker subprocess of the given settings, SIGKILLed at teardown."""
    started: list[WorkerProcess] = []

    def start(settings: Settings) -> WorkerProcess:
        started.append(WorkerProcess(settings, tmp_path / f"worker-{len(started)}.log"))
        return started[-1]

    yield start
    for worker in started:
        worker.stop(signal.SIGKILL)


async def _states(settings: Settings, users: list[int]) -> dict[int, Any]:
    client = aioredis.Redis.from_url(settings.redis_url)
    try:
        state = RedisState(client, state_prefix(settings))
        return {s.user_id: s for s in await state.apply({user: [] for user in users})}
    finally:
        await client.aclose()


def _user_ids(owner_url: str) -> list[int]:
    with connect(owner_url) as conn:
        return [row[0] for row in conn.execute("SELECT id FROM users").fetchall()]


def test_a_cdc_worker_equals_the_batch_over_the_database(
    cdc: CdcServices, redis_url: str, worker_of: Any, tmp_path: Path
) -> None:
    models = tmp_path / "models"
    save_model(make_model("v1"), models / "v1")
    publish_current(models, models / "v1")
    model = load_model(models / "current")
    with captured_shop(cdc, users=40, products=20, seed=7) as capture:
        worker_settings = app_settings(
            capture.settings.kafka_bootstrap_servers,
            redis_url,
            create_topics=False,
            model_dir=models,
            data_dir=tmp_path / "worker-data",
            source="cdc",
            cdc_topic_prefix=capture.settings.cdc_topic_prefix,
            cdc_schema=capture.settings.cdc_schema,
            topic_partitions=capture.settings.topic_partitions,
            log_level="info",
        )
        worker = worker_of(worker_settings)
        with connect(capture.owner_url, autocommit=True) as conn:
            shop = Shop(conn, seed=7, schema=capture.settings.cdc_schema)
            shop.run(rate=100, steps=60)
            for kind in MIX:  # every kind at least once
                shop.make(kind)
        source = DataSource.from_args(None, capture.owner_url)
        expected = read_features(source).set_index("user_id")
        everyone = _user_ids(capture.owner_url)
        deadline = time.monotonic() + 300
        while True:
            assert worker.process.poll() is None, worker.log_tail()
            states = asyncio.run(_states(worker_settings, everyone))
            found = {uid: s.features() for uid, s in states.items() if s.assignable}
            lag = asyncio.run(
                read_lag(worker_settings, worker_settings.app_id,
                         list(capture.topics.values()), attempts=30)
            ).total_lag  # fmt: skip
            if lag == 0 and set(found) == set(expected.index):
                frame = pd.DataFrame.from_dict(found, orient="index")[list(FEATURE_COLUMNS)]
                if frame.sort_index().equals(expected[list(FEATURE_COLUMNS)].sort_index()):
                    break
            assert time.monotonic() < deadline, (
                f"lag {lag}; stream {len(found)} users, batch {len(expected)}:\n"
                + worker.log_tail()
            )
            time.sleep(1.0)
        # Every segmented user's segment is the batch's assignment of the same features.
        batch_segments = assign(model, expected[list(FEATURE_COLUMNS)]).segments.tolist()
        deadline = time.monotonic() + 60
        while True:
            states = asyncio.run(_states(worker_settings, list(expected.index)))
            stream_segments = [states[uid].segment for uid in expected.index]
            if stream_segments == batch_segments or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert stream_segments == batch_segments
