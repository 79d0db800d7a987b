"""Users leaving, end to end: a worker on the real Kafka and Redis, ``segstream forget`` and
``POST /users/{user_id}/forget`` behind the token.

Each leaver loses every key (SCAN of the keyspace), gets a leave event on ``segment-changes``
(``schemas/segment_left.json``) numbered on from their last change and a tombstone on
``user-segments``; the population counters stay equal to a count of the hashes; and their
events sent again afterwards start them afresh, from sequence 1.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import pytest
import redis
from pydantic import SecretStr

from segstream.settings import Settings
from segstream.stream.clients.kafka import admin_client
from segstream.stream.clients.redis import redis_client
from segstream.stream.kafka.topics import read_all
from segstream.stream.lifecycle.replay import ReplayEvent, publish_events
from segstream.stream.state.keys import state_prefix
from segstream.stream.state.populations import count_populations, read_populations
from tests.integration.stream.conftest import (
    REPO,
    Dataset,
    app_settings,
    cli_json,
    settings_env,
    wait_until_consumed,
)
from tests.integration.stream.ops.support import Http
from tests.integration.stream.schema_check import schema_check
from tests.waiting import wait_until

TOKEN = "forget-test-token"
USERS = 60
"""Users of the dataset replayed (those with orders come first): enough for several
segments, few enough for a short test."""


def _publish(settings: Settings, events: list[ReplayEvent]) -> None:
    topics = {"users": settings.topic_users, "orders": settings.topic_orders}
    asyncio.run(publish_events(events, settings=settings, topics=topics))


def _records_by_user(settings: Settings, topic: str) -> dict[int, list[bytes | None]]:
    """Every record of ``topic``, by the user of its key, in offset order."""
    by_user: dict[int, list[bytes | None]] = defaultdict(list)
    for record in asyncio.run(read_all(settings, topic)):
        by_user[int(record.key)].append(record.value)
    return by_user


def _user_keys(client: redis.Redis, settings: Settings, uid: int) -> list[bytes]:
    """Every key of the keyspace under the user's hash tag (SCAN, any type)."""
    return list(client.scan_iter(match=f"{state_prefix(settings)}*{{u:{uid}}}*", count=1000))


def _populations(settings: Settings) -> tuple[dict[str, dict[int, int]], int]:
    """The maintained counters, checked equal to a count of the user hashes."""

    async def both():  # type: ignore[no-untyped-def]
        client = redis_client(settings)
        try:
            prefix, cluster = state_prefix(settings), settings.redis_cluster
            kept = await read_populations(client, prefix, cluster=cluster)
            counted = await count_populations(client, prefix, cluster=cluster)
        finally:
            await client.aclose()
        assert (kept.by_version, kept.unassigned) == (counted.by_version, counted.unassigned)
        return {v: dict(s) for v, s in kept.by_version.items()}, kept.unassigned

    return asyncio.run(both())


def _wait_for(probe: Callable[[], object], what: str, timeout_s: float = 120.0) -> None:
    wait_until(probe, timeout_s, f"waiting for {what}", interval_s=0.2)


@pytest.fixture
def forget_settings(
    kafka_bootstrap: str, redis_url: str, dataset: Dataset, tmp_path: Path
) -> Settings:
    """A fresh app whose worker serves its API behind ``TOKEN``."""
    return app_settings(
        kafka_bootstrap,
        redis_url,
        model_dir=dataset.models_dir,
        data_dir=tmp_path / "worker-data",
        http_token=SecretStr(TOKEN),
    )


def test_leavers_lose_every_key_get_a_leave_and_a_tombstone_and_come_back_afresh(
    forget_settings: Settings, dataset: Dataset, start_worker, redis_client: redis.Redis
) -> None:
    settings = forget_settings
    buyers = sorted({e.user_id for e in dataset.plan.events if e.kind == "orders"})[:USERS]
    events = [e for e in dataset.plan.events if e.user_id in set(buyers)]
    _publish(settings, events)
    worker = start_worker(settings)
    wait_until_consumed(settings, [worker])
    changes = _records_by_user(settings, settings.topic_segment_changes)
    assigned = [uid for uid in buyers if changes.get(uid)]
    assert len(assigned) >= 3, "too few users assigned to test leaving"
    by_cli, by_api = assigned[0], assigned[1]
    last = {uid: json.loads(changes[uid][-1] or b"") for uid in (by_cli, by_api)}
    before, unassigned_before = _populations(settings)
    started = time.time()

    (queued,) = cli_json(settings, "forget", str(by_cli))
    assert (queued["user_id"], queued["topic"]) == (by_cli, settings.topic_users)
    api = Http(f"http://127.0.0.1:{worker.http_port}", TOKEN)
    _wait_for(lambda: _ready(api), "the worker's HTTP side")
    assert Http(api.base).json("POST", f"/users/{by_api}/forget")[0] == 401
    status, body = api.json("POST", f"/users/{by_api}/forget")
    assert status == 202, body
    assert (body["user_id"], body["topic"], body["status"]) == (
        by_api, settings.topic_users, "queued",
    )  # fmt: skip
    never_seen = 10**12
    assert api.json("POST", f"/users/{never_seen}/forget")[0] == 202
    assert api.json("POST", "/users/0/forget")[0] == 400
    wait_until_consumed(settings, [worker])
    _wait_for(
        lambda: not any(_user_keys(redis_client, settings, u) for u in (by_cli, by_api)),
        "the leavers' keys to go",
    )

    changes = _records_by_user(settings, settings.topic_segment_changes)
    segments = _records_by_user(settings, settings.topic_user_segments)
    check_leave = schema_check("segment_left")
    for uid in (by_cli, by_api):
        leave = json.loads(changes[uid][-1] or b"")
        check_leave(leave)
        assert leave["left"] is True
        assert leave["sequence"] == last[uid]["sequence"] + 1
        assert (leave["previous_segment"], leave["model_version"]) == (
            last[uid]["segment"], last[uid]["model_version"],
        )  # fmt: skip
        assert leave["source"]["topic"] == settings.topic_users
        # occurred_at: the tombstone's Kafka timestamp, sent during this test.
        left_at = datetime.fromisoformat(leave["occurred_at"]).timestamp()
        assert started - 5 <= left_at <= time.time(), leave["occurred_at"]
        assert segments[uid][-1] is None  # the compacted topic's tombstone
    assert never_seen not in changes and never_seen not in segments
    after, unassigned_after = _populations(settings)
    version = last[by_cli]["model_version"]
    expected = {v: dict(s) for v, s in before.items()}
    for uid in (by_cli, by_api):
        expected[version][last[uid]["segment"]] -= 1
    expected = {v: {s: n for s, n in c.items() if n} for v, c in expected.items()}
    assert (after, unassigned_after) == (expected, unassigned_before)
    done = subprocess.run(
        [sys.executable, "-m", "segstream.cli", "segment", str(by_cli)],
        env=settings_env(settings), cwd=REPO, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 1 and "or they left" in done.stdout, done.stdout + done.stderr

    # The leaver's events sent again: a new life, numbered from 1, in the same segment.
    _publish(settings, [e for e in events if e.user_id == by_cli])
    wait_until_consumed(settings, [worker])
    changes = _records_by_user(settings, settings.topic_segment_changes)
    segments = _records_by_user(settings, settings.topic_user_segments)
    back = json.loads(changes[by_cli][-1] or b"")
    schema_check("segment_change")(back)
    assert (back["sequence"], back["previous_segment"]) == (1, None)
    assert back["segment"] == last[by_cli]["segment"]
    current = json.loads(segments[by_cli][-1] or b"")
    assert (current["sequence"], current["segment"]) == (1, back["segment"])
    assert back["event_id"] != last[by_cli]["event_id"]
    expected[version][back["segment"]] = expected[version].get(back["segment"], 0) + 1
    assert _populations(settings) == (expected, unassigned_before)
    assert worker.process.poll() is None, worker.log_tail()


def _ready(api: Http) -> bool:
    try:
        return api.request("GET", "/healthz")[0] == 200
    except OSError:
        return False


def test_forget_is_refused_naming_the_database_when_the_source_is_cdc(
    kafka_bootstrap: str, redis_url: str
) -> None:
    settings = app_settings(kafka_bootstrap, redis_url, create_topics=False, source="cdc")
    done = subprocess.run(
        [sys.executable, "-m", "segstream.cli", "forget", "42"],
        env=settings_env(settings), cwd=REPO, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode != 0
    output = done.stdout + done.stderr
    assert "SEGSTREAM_SOURCE=cdc" in output and "DELETE FROM public.users" in output, output
    assert "Traceback" not in output


def test_forget_creates_no_topic_and_says_the_users_topic_is_missing(
    kafka_bootstrap: str, redis_url: str
) -> None:
    settings = app_settings(kafka_bootstrap, redis_url, create_topics=False)
    done = subprocess.run(
        [sys.executable, "-m", "segstream.cli", "forget", "42"],
        env=settings_env(settings), cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    output = done.stdout + done.stderr
    assert done.returncode != 0 and "Traceback" not in output, output
    assert f"the topic {settings.topic_users!r} does not exist" in output, output
    assert settings.topic_users not in asyncio.run(_topics(settings))


async def _topics(settings: Settings) -> list[str]:
    """Every topic's name (asking for all names creates none)."""
    admin = admin_client(settings)
    await admin.start()
    try:
        return await admin.list_topics()
    finally:
        await admin.close()
