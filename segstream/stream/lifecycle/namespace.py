"""Dropping an app's namespace on the stack: its topics and its Redis keys.

An app's namespace is what a worker run leaves behind under one :class:`Settings`: the
stream's topics (:func:`segstream.stream.kafka.topics.topic_specs`), Faust's
``<app_id>-__assignor-__leader`` topic for each app id that ran, and the Redis keys under
:func:`segstream.stream.state.keys.state_prefix`. The demo resets its namespace before a run and
the bench drops its own after one; neither touches another app's topics or keys.

Consumer groups are not deleted: the broker drops a group's committed offsets of a deleted
topic, so a group re-created later starts from the beginning, and an empty group expires.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import redis
from redis.crc import key_slot

from segstream.settings import Settings
from segstream.stream.clients.kafka import admin_client
from segstream.stream.clients.redis import sync_redis_client
from segstream.stream.kafka.topics import topic_specs
from segstream.stream.state.keys import state_prefix
from segstream.stream.state.keyspace import sync_primaries, sync_scan_page

__all__ = ["drop_keys", "drop_namespace", "leader_topic"]

_UNLINK_CHUNK = 10_000
"""Keys per SCAN page and per UNLINK call: bounded commands on a large keyspace."""


def leader_topic(app_id: str) -> str:
    """The topic Faust's partition assignor creates for the app id ``app_id``."""
    return f"{app_id}-__assignor-__leader"


def drop_namespace(
    settings: Settings, app_ids: Sequence[str] = (), extra_topics: Sequence[str] = ()
) -> list[str]:
    """Delete ``settings``' topics, ``extra_topics``, the leader topics of ``app_ids`` and
    every Redis key under ``settings``' state prefix (population counters included), on
    every primary of a Redis Cluster; return the topics deleted.

    Topics that do not exist are skipped. Deletion completes asynchronously on the broker: a
    caller about to re-create a topic of the same name gives it a moment first.

    Raises:
        aiokafka.errors.KafkaError, OSError: the broker cannot be reached.
        redis.RedisError: Redis cannot be reached.
    """
    topics = [*topic_specs(settings), *extra_topics, *(leader_topic(a) for a in app_ids)]
    dropped = asyncio.run(_delete_topics(settings, topics))
    client = sync_redis_client(settings)
    try:
        drop_keys(client, state_prefix(settings) + "*")
    finally:
        client.close()
    return dropped


def drop_keys(client: redis.Redis, pattern: str) -> None:
    """UNLINK every key matching ``pattern`` (a SCAN MATCH glob), on every primary.

    UNLINK frees the values in the background, so a large namespace does not block Redis;
    keys are unlinked page by page (one SCAN cursor per primary on a cluster), one UNLINK per
    hash slot of the page, in one pipeline.
    """
    for node in sync_primaries(client):
        cursor = 0
        while True:
            cursor, keys = sync_scan_page(client, node, cursor, match=pattern, count=_UNLINK_CHUNK)
            _unlink(client, keys)
            if cursor == 0:
                break


def _unlink(client: redis.Redis, keys: Sequence[bytes]) -> None:
    """UNLINK ``keys``: one command per hash slot (a cluster takes no cross-slot UNLINK), all
    in one pipeline."""
    by_slot: dict[int, list[bytes]] = {}
    for key in keys:
        by_slot.setdefault(key_slot(key), []).append(key)
    if by_slot:
        pipe = client.pipeline(transaction=False)
        for same_slot in by_slot.values():
            # As a plain command: redis-py's cluster pipeline refuses a multi-key unlink().
            pipe.execute_command("UNLINK", *same_slot)
        pipe.execute()


async def _delete_topics(settings: Settings, topics: Sequence[str]) -> list[str]:
    admin = admin_client(settings)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        doomed = [t for t in dict.fromkeys(topics) if t in existing]
        if doomed:
            await admin.delete_topics(doomed)
        return doomed
    finally:
        await admin.close()
