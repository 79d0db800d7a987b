"""Truncates of change data capture: the log position each table was last truncated at, and
the users a truncate must reach.

A ``TRUNCATE`` empties a table for every user at once, but each user is applied by the worker
that owns them. So the worker that reads the truncate records it here, globally, then routes
one :class:`~segstream.stream.domain.rows.TableTruncated` to every user with state (found by a
SCAN): each owner removes that user's rows of the table older than the truncate. A row change
older than a recorded truncate, read afterwards (another partition, a redelivery), is dropped
before it is applied. The one window left, a user's first rows applied while a truncate is
being fanned out (the SCAN missed a user that did not exist yet), is closed by the owner: it
reads the marks again after applying and routes the truncate to its batch's users itself when
one moved (:meth:`~segstream.stream.sources.change_capture.ChangeCapture.after_apply`).

Key: ``<app>:cdc:truncated``, a hash with one field ``<table>:<lsn>`` per truncate, so that two
workers recording truncates of one table at once can only add (the mark is the largest).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import redis.asyncio as aioredis

from segstream.stream.state.keys import user_pattern

__all__ = ["Truncations", "marks_key"]


def marks_key(prefix: str) -> str:
    """The hash of every truncate recorded (``<table>:<lsn>`` fields)."""
    return f"{prefix}cdc:truncated"


class Truncations:
    """Reads and records truncates; finds the users with state. Every call is safe to repeat."""

    def __init__(self, client: aioredis.Redis, prefix: str) -> None:
        self.client = client
        self.prefix = prefix

    async def record(self, table: str, lsn: int) -> None:
        """Record a truncate of ``table`` at ``lsn``."""
        await self.client.hset(marks_key(self.prefix), f"{table}:{lsn}", "1")

    async def marks(self) -> dict[str, int]:
        """table -> the log position of its latest truncate (tables never truncated: absent)."""
        found: dict[str, int] = {}
        for field in await self.client.hkeys(marks_key(self.prefix)):
            text = field.decode() if isinstance(field, bytes) else field
            table, _, lsn = text.rpartition(":")
            found[table] = max(found.get(table, 0), int(lsn))
        return found

    async def users(self) -> AsyncIterator[int]:
        """Every user with a state hash (SCAN: O(keys), pages of 1,000; on a cluster, every
        primary's)."""
        async for raw in self.client.scan_iter(match=user_pattern(self.prefix), count=1000):
            key = raw.decode()
            if key.endswith("}"):  # not an outbox (``...}:ob``)
                yield int(key[key.rindex("{u:") + 3 : -1])
