"""The product catalogue of change data capture: each product's brand and category, and its buyers.

Products are not a user's: their change events are keyed by product id, on a topic that any
worker may own. So a product's current values live once, globally, in
``<app>:{p:<product_id>}`` (a hash, fields ``b`` and ``c``, ``""`` for missing, and ``l``,
the log position of the change that wrote them), and the users
who have an item of it in ``<app>:{p:<product_id>}:buyers`` (a set of user ids). Both keys
carry the product's hash tag: one slot per product on a Redis Cluster.

How a correction reaches the users without breaking one owner per user (docs/cdc.md):

1. the worker that reads a ``products`` change stores the new values (:meth:`store`), *then*
   reads the buyers (:meth:`buyers`) and routes one re-derivation per buyer through the
   internal topic, keyed by the buyer, so it lands on the partition of its owner;
2. the worker that applies an item adds the user to the buyers (:meth:`add_buyers`), *then*
   reads the values (:meth:`values`) it stores with the item.

Either step 1's read sees the buyer of step 2, or step 2's read sees step 1's values (each
writes before it reads, and Redis orders the operations on a key): a correction racing with
a new item is never lost. A buyer stays in the set after their item is gone (a re-derivation
of a user without items of the product changes nothing): the set only grows, by one entry
per (product, user).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Final

import redis.asyncio as aioredis

from segstream.stream.domain.rows import MISSING, ProductRow

__all__ = ["ProductCatalogue", "buyers_key", "product_key"]

_FIELDS: Final = (b"b", b"c")


def _glob(text: str) -> str:
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


def product_key(prefix: str, product_id: int) -> str:
    """The hash of a product's current brand and category."""
    return f"{prefix}{{p:{product_id}}}"


def buyers_key(prefix: str, product_id: int) -> str:
    """The set of the user ids with an item of the product."""
    return f"{prefix}{{p:{product_id}}}:buyers"


class ProductCatalogue:
    """Reads and writes the catalogue; every call is one round trip and safe to repeat."""

    def __init__(self, client: aioredis.Redis, prefix: str) -> None:
        self.client = client
        self.prefix = prefix

    async def store(self, rows: Iterable[ProductRow]) -> None:
        """Store each product's values, in order (a deleted product loses them)."""
        pipe = self.client.pipeline(transaction=False)
        for row in rows:
            key = product_key(self.prefix, row.product_id)
            if row.present:
                pipe.hset(key, mapping={"b": row.brand, "c": row.category, "l": row.lsn})
            else:
                pipe.delete(key)
        await pipe.execute()

    async def truncate(self, lsn: int) -> list[int]:
        """A ``TRUNCATE`` of products at ``lsn``: forget every product written before it;
        returns their ids (their buyers are to be re-derived). O(catalogue): a SCAN."""
        gone: list[int] = []
        pattern = _glob(self.prefix) + "{p:*}"
        async for raw in self.client.scan_iter(match=pattern, count=1000):
            key = raw.decode()
            if not key.endswith("}"):
                continue  # a buyers set
            written = await self.client.hget(key, "l")
            if written is None or int(written) < lsn:
                await self.client.delete(key)
                gone.append(int(key[key.rindex("{p:") + 3 : -1]))
        return gone

    async def buyers(self, product_ids: Iterable[int]) -> dict[int, list[int]]:
        """product -> the user ids with an item of it, ascending."""
        ids = list(dict.fromkeys(product_ids))
        pipe = self.client.pipeline(transaction=False)
        for product_id in ids:
            pipe.smembers(buyers_key(self.prefix, product_id))
        replies = await pipe.execute()
        return {
            product_id: sorted(int(user) for user in members)
            for product_id, members in zip(ids, replies, strict=True)
        }

    async def add_buyers(self, bought: Mapping[int, Iterable[int]]) -> None:
        """Record that each user of ``bought[product]`` has an item of ``product``."""
        pipe = self.client.pipeline(transaction=False)
        for product_id, users in bought.items():
            members = [str(user) for user in users]
            if members:
                pipe.sadd(buyers_key(self.prefix, product_id), *members)
        await pipe.execute()

    async def values(self, product_ids: Iterable[int]) -> dict[int, tuple[str, str]]:
        """product -> (brand, category) now; :data:`MISSING` for a product not stored."""
        ids = list(dict.fromkeys(product_ids))
        pipe = self.client.pipeline(transaction=False)
        for product_id in ids:
            pipe.hmget(product_key(self.prefix, product_id), *_FIELDS)
        replies = await pipe.execute()
        return {
            product_id: (
                brand.decode() if brand else MISSING,
                category.decode() if category else MISSING,
            )
            for product_id, (brand, category) in zip(ids, replies, strict=True)
        }
