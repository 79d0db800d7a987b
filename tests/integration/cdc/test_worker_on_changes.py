"""End to end on the real pipeline: a generated PostgreSQL database, Debezium's snapshot and
the shop's live mix, a worker with ``SEGSTREAM_SOURCE=cdc``. While the mix runs, the Kafka
Connect process is stopped and started again, and the worker is SIGKILLed and started again;
every kind of change is made in each of those windows. After catch-up, every user's
features equal ``features.sql`` over the database's current rows, their segment and last
segment change the batch's assignment, the population counters are exact, and the users
deleted in the database have no key left, a tombstone last on ``user-segments`` and a leave
last on ``segment-changes``."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import psycopg
import pytest
import redis
import redis.asyncio as aioredis

from segstream.cdc.connect_api import connector_state
from segstream.cdc.shop import MIX, Shop, Step
from segstream.errors import DataError
from segstream.settings import Settings
from segstream.stream.kafka.lag import read_lag
from segstream.stream.state.keys import state_prefix
from segstream.stream.state.store import RedisState
from segstream.training.artifact import load_model, publish_current, save_model
from segstream.training.assign import assign
from segstream.training.data import DataSource, read_features
from segstream.training.features import FEATURE_COLUMNS
from segstream.training.postgres_sink import connect
from tests.integration.cdc.pipeline import Capture, captured_shop, read_all
from tests.integration.stacks import CdcServices, start_again
from tests.integration.stream.conftest import WorkerProcess, app_settings
from tests.integration.stream.parity import (
    check_changes,
    check_populations,
    check_user_segments,
)
from tests.small_model import make_model
from tests.waiting import wait_until


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


class _LiveShop:
    """The shop's mix (:meth:`Shop.run`) in a thread of its own, on a connection of its own,
    until :meth:`stop`; ``steps`` are the changes made so far, in order."""

    def __init__(self, owner_url: str, schema: str, *, seed: int, rate: float) -> None:
        self.steps: list[Step] = []
        self._errors: list[BaseException] = []
        self._stopping = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(owner_url, schema, seed, rate), daemon=True
        )
        self._thread.start()

    def _run(self, owner_url: str, schema: str, seed: int, rate: float) -> None:
        try:
            with connect(owner_url, autocommit=True) as conn:
                shop = Shop(conn, seed=seed, schema=schema)
                shop.run(rate, report=self.steps.append, stop=self._stopping.is_set)
        except (DataError, psycopg.Error) as exc:  # re-raised by the test's thread
            self._errors.append(exc)

    def every_kind_since(self, mark: int, timeout_s: float = 180.0) -> None:
        """Block until each kind of :data:`MIX` was made after the first ``mark`` steps."""

        def made() -> bool:
            assert not self._errors and self._thread.is_alive(), self._errors
            return set(MIX) <= {step.kind for step in self.steps[mark:]}

        wait_until(made, timeout_s, f"not every kind of change made after step {mark}")

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(60)
        assert not self._thread.is_alive() and not self._errors, self._errors


def _ever_users(capture: Capture) -> set[int]:
    """Every user the users topic ever carried a change of (keys ``{"user_id": N}``)."""
    records = read_all(capture.settings, [capture.topics["users"]])
    return {json.loads(r.key)["user_id"] for r in records if r.key is not None}


def _keys_by_user(settings: Settings) -> dict[int, list[str]]:
    """Every Redis key of the app under a user's hash tag, by user (SCAN of the keyspace)."""
    client = redis.Redis.from_url(settings.redis_url)
    try:
        found: dict[int, list[str]] = {}
        for key in client.scan_iter(match=f"{state_prefix(settings)}*", count=1000):
            tag = re.search(r"\{u:(\d+)\}", key.decode())
            if tag is not None:
                found.setdefault(int(tag.group(1)), []).append(key.decode())
        return found
    finally:
        client.close()


def _differences(
    owner_url: str, found: dict[int, Any], expected: pd.DataFrame, states: dict[int, Any]
) -> str:
    """For a failure message: the users whose features differ, the stream's and the batch's,
    with their rows in the database."""
    lines = []
    batch = expected[list(FEATURE_COLUMNS)].to_dict(orient="index")
    for uid in sorted(set(found) | set(batch)):
        if found.get(uid) != batch.get(uid):
            with connect(owner_url) as conn:
                orders = conn.execute(
                    "SELECT o.order_id, o.user_id, array_agg(i.id || ':' || i.user_id "
                    "|| ':' || i.product_id) FROM orders o LEFT JOIN order_items i "
                    "ON i.order_id = o.order_id WHERE o.user_id = %s GROUP BY 1, 2",
                    (uid,),
                ).fetchall()
                lines_of = conn.execute(
                    "SELECT id, order_id, user_id FROM order_items WHERE user_id = %s", (uid,)
                ).fetchall()
            lines.append(
                f"user {uid}: stream {found.get(uid)} {states.get(uid)}, batch {batch.get(uid)}, "
                f"orders {orders}, lines keyed to them {lines_of}"
            )
    return "\n".join(lines[:5]) + "\n"


def _hash_of(settings: Settings, keys: list[str]) -> dict[str, Any]:
    client = redis.Redis.from_url(settings.redis_url)
    try:
        return {k: client.hgetall(k) if client.type(k) == b"hash" else client.type(k) for k in keys}
    finally:
        client.close()


def test_a_cdc_worker_equals_the_batch_through_a_connect_restart_and_a_worker_kill(
    cdc: CdcServices, redis_url: str, worker_of: Any, tmp_path: Path
) -> None:
    models = tmp_path / "models"
    save_model(make_model("v1"), models / "v1")
    publish_current(models, models / "v1")
    model = load_model(models / "current")
    with captured_shop(cdc, users=30, products=20, seed=7) as capture:
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
        shop = _LiveShop(capture.owner_url, capture.settings.cdc_schema, seed=7, rate=10)
        try:
            # Connect's process stopped (gracefully) and started again: every kind of change
            # is made while it is down and while it starts; Debezium resumes from its
            # committed offsets (the slot kept the WAL), repeating some changes.
            shop.every_kind_since(0)
            mark = len(shop.steps)
            cdc.connect.stop()
            shop.every_kind_since(mark)
            start_again(cdc.connect)
            state = connector_state(capture.settings, wait_s=120)
            assert state is not None and state.running, state
            # The worker SIGKILLed mid-batch: every kind of change is made while it is dead;
            # a new one takes over its group, its Redis state and its outboxes.
            mark = len(shop.steps)
            # It lived through Connect's restart.
            assert worker.process.poll() is None, worker.log_tail()
            assert worker.stop(signal.SIGKILL) == -signal.SIGKILL, worker.log_tail()
            shop.every_kind_since(mark)
            worker = worker_of(worker_settings)
            shop.every_kind_since(len(shop.steps))
        finally:
            shop.stop()
            if not cdc.connect.process.is_running():  # the session's other tests need it
                start_again(cdc.connect)
        made = Counter(step.kind for step in shop.steps)
        source = DataSource.from_args(None, capture.owner_url)
        expected = read_features(source).set_index("user_id")
        everyone = _user_ids(capture.owner_url)
        deleted = frozenset(_ever_users(capture) - set(everyone))
        assert len(deleted) >= 3, made  # at least one delete_user per window
        seen: list[tuple[int, dict[int, Any], dict[int, Any]]] = []  # lag, features, states

        def caught_up() -> bool:
            assert worker.process.poll() is None, worker.log_tail()
            states = asyncio.run(_states(worker_settings, everyone))
            found = {uid: s.features() for uid, s in states.items() if s.assignable}
            lag = asyncio.run(
                read_lag(worker_settings, worker_settings.app_id,
                         list(capture.topics.values()), attempts=30)
            ).total_lag  # fmt: skip
            seen.append((lag, found, states))
            if lag != 0 or set(found) != set(expected.index):
                return False
            frame = pd.DataFrame.from_dict(found, orient="index")[list(FEATURE_COLUMNS)]
            return bool(frame.sort_index().equals(expected[list(FEATURE_COLUMNS)].sort_index()))

        def behind() -> str:
            lag, found, states = seen[-1]
            return (
                f"lag {lag}; stream {len(found)} users, batch {len(expected)} ({made}):\n"
                + _differences(capture.owner_url, found, expected, states)
                + worker.log_tail()
            )

        wait_until(caught_up, 300, behind, interval_s=1.0)
        # Every segmented user's segment is the batch's assignment of the same features.
        batch_segments = assign(model, expected[list(FEATURE_COLUMNS)]).segments.tolist()
        stream_segments: list[list[int | None]] = []

        def assigned() -> bool:
            states = asyncio.run(_states(worker_settings, list(expected.index)))
            stream_segments.append([states[uid].segment for uid in expected.index])
            return stream_segments[-1] == batch_segments

        wait_until(
            assigned,
            60,
            lambda: f"the stream's segments {stream_segments[-1]} != the batch's {batch_segments}",
            interval_s=0.5,
        )

        # Every change published (no outbox left) and the deleted users erased (no key).
        def settled() -> bool:
            keys = _keys_by_user(worker_settings)
            outboxes = [k for ks in keys.values() for k in ks if k.endswith(":ob")]
            return not outboxes and not deleted & set(keys)

        def left_over() -> str:
            keys = _keys_by_user(worker_settings)
            kept = {
                uid: _hash_of(worker_settings, keys[uid]) for uid in sorted(deleted & set(keys))
            }
            outboxes = [k for ks in keys.values() for k in ks if k.endswith(":ob")]
            return f"outboxes {outboxes[:5]}, deleted users' keys {kept}\n" + worker.log_tail()

        wait_until(settled, 60, left_over, interval_s=0.5)
        final = {
            int(uid): int(seg) for uid, seg in zip(expected.index, batch_segments, strict=True)
        }
        check_changes(worker_settings, final, model.version, left=deleted, unassigns=True)
        check_user_segments(worker_settings, final, left=deleted, unassigns=True)
        check_populations(worker_settings, final, model.version)
