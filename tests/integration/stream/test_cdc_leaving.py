"""A users row deleted in the database, through a real ``SEGSTREAM_SOURCE=cdc`` worker on the
real Kafka and Redis, fed the recorded Debezium output (``tests/unit/stream/sources/samples/``,
the ``delete_user`` case in the order it was recorded): the user loses every key, gets a leave
event and a ``user-segments`` tombstone, the population counters equal a count of the hashes,
and every other user still equals ``features.sql`` over the rows left.

The recording's deleted user appears in no other recorded case, so the test first stores them
as the worker would have (a profile applied, a segment settled and its change published,
through :class:`RedisState`): a user the worker knew. No Debezium message is made up.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import redis

from segstream.settings import Settings
from segstream.stream.clients.redis import redis_client as state_client
from segstream.stream.domain.changes import encode_change
from segstream.stream.domain.events import Source, UserEvent
from segstream.stream.domain.user import Settle, UserState
from segstream.stream.kafka.topics import read_all
from segstream.stream.state.keys import state_prefix
from segstream.stream.state.populations import count_populations, read_populations
from segstream.stream.state.store import RedisState
from segstream.training.artifact import publish_current, save_model
from tests.integration.stream.conftest import app_settings
from tests.integration.stream.schema_check import schema_check
from tests.integration.stream.test_cdc_worker import (
    PRIMARY_KEYS,
    SAMPLES,
    _produce,
    current_rows,
    sql_features,
    wait_caught_up,
    wait_features,
)
from tests.small_model import make_model
from tests.waiting import wait_until

CASES = ("snapshot", "insert", "update_profile", "insert_line", "update_product",
         "delete_line", "move_order", "delete_user", "truncate")  # fmt: skip
"""Every recorded case, in the order they were made."""


def _recorded(exclude: str = "") -> list[dict[str, Any]]:
    return [
        json.loads(line)
        for case in CASES
        if case != exclude
        for line in (SAMPLES / f"{case}.jsonl").read_text().splitlines()
    ]


def _deleted_users(records: list[dict[str, Any]]) -> set[int]:
    """The ids of the users rows the recording deletes."""
    gone = set()
    for record in records:
        if record["value"] is not None:
            event = json.loads(record["value"])
            if event["op"] == "d" and event["source"]["table"] == "users":
                gone.add(event["before"]["id"])
    return gone


async def _know(settings: Settings, user_id: int) -> UserState:
    """Store ``user_id`` as a worker would have: profile applied, segment 0 settled with its
    change, the change published (outbox cleared). Returns the stored state."""
    client = state_client(settings)
    try:
        state = RedisState(client, state_prefix(settings))
        source = Source("seed", 0, 0)
        profile = UserEvent(user_id, 27, "F", "United States", "Search", "2021-07-17T20:00:00Z")
        (seen,) = await state.apply({user_id: [(source, profile)]})
        change = encode_change(
            user_id=user_id, sequence=1, previous_segment=None, segment=0,
            model_version="v1", occurred_at=profile.created_at, features=seen.features(),
            source=source,
        )  # fmt: skip
        pending = await state.settle(
            [Settle(user_id, None, None, 0, "v1", change, profile.created_at,
                    seen_changes=0, seen_feature_version=seen.feature_version)]
        )  # fmt: skip
        await state.clear(pending)
        (known,) = await state.apply({user_id: []})
        return known
    finally:
        await client.aclose()


def test_a_deleted_users_row_erases_the_user_with_a_leave_and_a_tombstone(
    kafka_bootstrap: str,
    redis_url: str,
    redis_client: redis.Redis,
    make_topic: Any,
    start_worker: Any,
    tmp_path: Path,
) -> None:
    models = tmp_path / "models"
    save_model(make_model("v1"), models / "v1")
    publish_current(models, models / "v1")
    settings = app_settings(
        kafka_bootstrap, redis_url, model_dir=models, data_dir=tmp_path / "worker-data",
        source="cdc", log_level="info",
    )  # fmt: skip
    tag = settings.app_id
    settings = settings.model_copy(
        update={"cdc_topic_prefix": f"shop{tag}", "topic_rederive": f"rederive-{tag}"}
    )
    for table in PRIMARY_KEYS:
        make_topic(f"shop{tag}.public.{table}", partitions=4)
    make_topic(f"rederive-{tag}", partitions=4)
    records = _recorded()
    (leaver,) = _deleted_users(records)
    known = asyncio.run(_know(settings, leaver))
    asyncio.run(_produce(settings, records))
    worker = start_worker(settings)
    topics = [f"shop{tag}.public.{table}" for table in PRIMARY_KEYS]
    wait_caught_up(settings, worker, topics)

    # Every key under the leaver's hash tag is gone (SCAN of the whole keyspace).
    pattern = f"{state_prefix(settings)}*{{u:{leaver}}}*"
    wait_until(
        lambda: not list(redis_client.scan_iter(match=pattern, count=1000)),
        60,
        lambda: f"keys of user {leaver} left:\n{worker.log_tail()}",
        interval_s=0.5,
    )
    changes = [
        json.loads(r.value)
        for r in asyncio.run(read_all(settings, settings.topic_segment_changes))
        if int(r.key) == leaver
    ]
    (leave,) = changes
    schema_check("segment_left")(leave)
    assert (leave["sequence"], leave["previous_segment"], leave["model_version"]) == (
        known.changes + 1, known.segment, known.model_version,
    )  # fmt: skip
    assert leave["source"]["topic"] == f"shop{tag}.public.users"
    current = [
        r.value
        for r in asyncio.run(read_all(settings, settings.topic_user_segments))
        if int(r.key) == leaver
    ]
    assert current[-1] is None

    async def populations() -> tuple[Any, Any]:
        client = state_client(settings)
        try:
            prefix = state_prefix(settings)
            return (
                await read_populations(client, prefix, cluster=False),
                await count_populations(client, prefix, cluster=False),
            )
        finally:
            await client.aclose()

    kept, counted = asyncio.run(populations())
    assert (kept.by_version, kept.unassigned) == (counted.by_version, counted.unassigned)

    # Everyone else still equals the SQL over the rows left: the leaver's rows appear in no
    # other case, so those are the other cases' rows.
    expected = sql_features(current_rows(_recorded(exclude="delete_user")))
    assert leaver not in expected
    wait_features(settings, worker, expected)
