"""``segstream bench correction``: what one product correction costs (change capture), printed.

On the configured Redis (``SEGSTREAM_REDIS_URL``), under a scratch key prefix removed
afterwards, through the worker's own code (:class:`~segstream.stream.sources.change_capture.
ChangeCapture` and :class:`~segstream.stream.state.store.RedisState`):

1. ``--users`` users get an order with ``--lines`` lines each, of products drawn from a
   ``--products``-product catalogue, and every user one more line of a product everyone
   bought (the worst case), applied as row changes the way the worker applies them;
2. a typical product (its buyers: about ``users * lines / products``) and the one everyone
   bought are corrected, each as the worker does it: the new values stored, the buyers read,
   one routed re-derivation built per buyer (the records the internal topic carries), then
   every buyer re-derived by ``prepare`` + ``apply`` in batches of ``--batch`` users (the
   owners' side, here in one process).

Figures: buyers, the fan-out (store + SMEMBERS + records) in ms, the re-derivation in s and
per buyer in µs, the routed bytes, and the buyers sets' memory per (product, user) entry.
Kafka's own cost (producing and consuming one ~120-byte record per buyer) comes on top.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from typing import Any

from segstream.settings import Settings
from segstream.stream.clients.redis import redis_client, sync_redis_client
from segstream.stream.domain.events import Source, UserEvent
from segstream.stream.domain.rows import ItemRow, OrderRow, ProductRow
from segstream.stream.lifecycle.namespace import drop_keys
from segstream.stream.sources.change_capture import ChangeBatch, ChangeCapture, decode_routed
from segstream.stream.sources.debezium import ChangeTopics
from segstream.stream.state.products import ProductCatalogue, buyers_key
from segstream.stream.state.store import RedisState

__all__ = ["run_correction_bench"]

AT = "2026-01-01T00:00:00.000Z"
TOPICS = ChangeTopics("b.users", "b.orders", "b.items", "b.products", "b.routed")
BRANDS = ("Alpha", "Zara", "Levi's", "Tirado", "Calvin Klein")
CATEGORIES = ("Jeans", "Tops & Tees", "Socks", "Swim")


async def _deliver(
    source: ChangeCapture, state: RedisState, by_user: dict[int, list[tuple[Source, Any]]]
) -> None:
    batch = ChangeBatch(by_user, [], [], [], [])
    await source.prepare(batch)
    await state.apply(batch.by_user)


async def _fill(
    source: ChangeCapture, state: RedisState, users: int, lines: int, products: int, batch: int
) -> None:
    rng = random.Random(0)
    catalogue = source.catalogue
    assert catalogue is not None
    await catalogue.store(
        ProductRow(p, True, rng.choice(BRANDS), rng.choice(CATEGORIES), AT)
        for p in range(1, products + 2)
    )
    offset = 0
    for start in range(1, users + 1, batch):
        by_user: dict[int, list[tuple[Source, Any]]] = {}
        for uid in range(start, min(users, start + batch - 1) + 1):
            offset += 1
            at = Source("fill", 0, offset)
            order_id = uid
            changes: list[Any] = [
                UserEvent(uid, 20 + uid % 50, "F", "Japan", "Search", AT),
                OrderRow(order_id, uid, True, AT),
            ]
            changes += [
                ItemRow(uid * 100 + i, order_id, uid, rng.randint(1, products), True, AT)
                for i in range(lines)
            ]
            changes.append(ItemRow(uid * 100 + lines, order_id, uid, products + 1, True, AT))
            by_user[uid] = [(at, change) for change in changes]
        await _deliver(source, state, by_user)


async def _correct(
    source: ChangeCapture, state: RedisState, product_id: int, batch: int, offset: int
) -> dict[str, float]:
    """One correction of ``product_id``, timed in its two halves."""
    catalogue = source.catalogue
    assert catalogue is not None
    started = time.perf_counter()
    parsed = ChangeBatch({}, [], [], [], [])
    parsed.products.append(
        (Source("p", 0, offset), ProductRow(product_id, True, "Fixed", "Fixed", AT))
    )
    routed = await source.prepare(parsed)
    fanned = time.perf_counter()
    refreshes = [decode_routed(record.value, record.key) for record in routed]
    for start in range(0, len(refreshes), batch):
        by_user = {
            change.user_id: [(Source(TOPICS.routed, 0, offset + start + i), change)]
            for i, change in enumerate(refreshes[start : start + batch])
        }
        await _deliver(source, state, by_user)
    done = time.perf_counter()
    return {
        "buyers": len(routed),
        "fan_out_ms": (fanned - started) * 1000,
        "rederive_s": done - fanned,
        "per_buyer_us": (done - fanned) / max(1, len(routed)) * 1e6,
        "routed_bytes": sum(len(r.value or b"") + len(r.key or b"") for r in routed),
    }


async def _run(
    settings: Settings, prefix: str, users: int, lines: int, products: int, batch: int
) -> None:
    client = redis_client(settings)
    try:
        source = ChangeCapture(TOPICS, "dead", ProductCatalogue(client, prefix))
        state = RedisState(client, prefix, cluster=settings.redis_cluster)
        await state.load_scripts()
        started = time.perf_counter()
        await _fill(source, state, users, lines, products, batch)
        print(
            f"{users:,} users, {users * (lines + 1):,} lines over {products:,} products applied "
            f"as row changes in {time.perf_counter() - started:.1f} s"
        )
        memory = await client.memory_usage(buyers_key(prefix, products + 1), samples=0)
        print(f"buyers set of the product all {users:,} bought: {memory / users:.1f} B per entry")
        for label, product_id in (
            ("a typical product", 1),
            ("the product everyone bought", products + 1),
        ):
            figures = await _correct(source, state, product_id, batch, 10**9)
            print(
                f"correcting {label}: {figures['buyers']:,} buyers; fan-out "
                f"{figures['fan_out_ms']:.1f} ms ({figures['routed_bytes'] / 1024:.0f} KiB of "
                f"routed records); re-derivation {figures['rederive_s']:.2f} s, "
                f"{figures['per_buyer_us']:.0f} µs per buyer"
            )
    finally:
        await client.aclose()


def run_correction_bench(
    settings: Settings, users: int, lines: int, products: int, batch: int
) -> int:
    """Run the figures above against the configured Redis; returns the exit code."""
    prefix = f"bench-corr-{uuid.uuid4().hex[:8]}:"
    try:
        asyncio.run(_run(settings, prefix, users, lines, products, batch))
    finally:
        client = sync_redis_client(settings)
        try:
            drop_keys(client, prefix + "*")
        finally:
            client.close()
    return 0
