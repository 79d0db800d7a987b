"""``segstream bench cdc``: the change-data-capture path's figures beside the JSON path's.

One run, on the local stack with PostgreSQL and Kafka Connect (``services up --cdc``, started
and stopped again when not running), in a database, topics, connector, slot, consumer group and
Redis keys of its own (all removed afterwards):

1. **snapshot**: a generated ``--users`` database (``generate --db``'s tables); from
   registering the Debezium connector to every row of the four tables being on its topics;
2. **change rows/s**: a worker with ``SEGSTREAM_SOURCE=cdc`` (model trained over the same
   database) reading the snapshot from a new group; rows/s from its first commit to caught up
   (the JSON bench's own measure, :func:`benchmarks.stream._committed_lag`);
3. **commit -> segment change**: ``segstream shop``'s mix at ``--rate`` transactions/s for
   ``--seconds``; for every segment change caused by one of those change rows, the change's
   broker timestamp minus the row's commit time in PostgreSQL (Debezium's ``source.ts_ms``);
   both clocks are this machine's;
4. **the JSON path**, same run, same stack: :func:`benchmarks.stream.measure` on
   ``--json-users`` users with its latency wave at the same ``--rate``.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
from rich.console import Console
from rich.table import Table

from benchmarks import stream as json_bench
from segstream.errors import ServiceError
from segstream.settings import Settings, StackSettings, load_stack_settings

__all__ = ["CdcFigures", "commit_latencies", "commit_millis", "run_cdc_bench"]

Position = tuple[str, int, int]
"""A Kafka record's (topic, partition, offset)."""


@dataclass
class CdcFigures:
    """Everything the CDC bench measured (times in seconds unless the name says ms)."""

    users: int = 0
    snapshot_rows: int = 0
    snapshot_s: float = 0.0
    start_s: float = 0.0
    change_rows: int = 0
    change_rate: float = 0.0
    shop_steps: int = 0
    shop_rate: float = 0.0
    live_rows: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    worker_latencies_ms: list[float] = field(default_factory=list)
    capture_latencies_ms: list[float] = field(default_factory=list)
    json: json_bench.StreamFigures | None = None


def commit_millis(value: bytes | None) -> int | None:
    """When PostgreSQL committed the row change of a Debezium value (``source.ts_ms``, epoch
    ms), with or without the schema envelope; None for a tombstone or a value without it."""
    if value is None:
        return None
    try:
        document = msgspec.json.decode(value)
    except msgspec.DecodeError:
        return None
    if isinstance(document, dict) and "payload" in document and "schema" in document:
        document = document["payload"]
    source = document.get("source") if isinstance(document, dict) else None
    millis = source.get("ts_ms") if isinstance(source, dict) else None
    return millis if isinstance(millis, int) and not isinstance(millis, bool) else None


def commit_latencies(
    commits: Mapping[Position, int], changes: Iterable[tuple[bytes, int]]
) -> list[float]:
    """ms from commit to segment change, one per change caused by a row in ``commits``.

    ``commits`` maps a change row's position to its commit time (epoch ms); ``changes`` are
    segment-change records as (value, broker timestamp in epoch ms). A change whose
    ``source`` is no row of ``commits`` (a snapshot row, another run's) is not counted; one
    row may cause several changes (a product correction re-derives every buyer), each counted.
    """
    latencies = []
    for value, stamp in changes:
        origin = msgspec.json.decode(value).get("source") or {}
        position = (origin.get("topic"), origin.get("partition"), origin.get("offset"))
        committed = commits.get(position)  # type: ignore[arg-type]
        if committed is not None:
            latencies.append(float(stamp - committed))
    return latencies


async def _ends(settings: Settings, topics: Iterable[str]) -> dict[str, int]:
    """End offset of every partition (``"topic:partition"``) of those ``topics`` that exist
    (Connect creates a change topic with its first row)."""
    from aiokafka import TopicPartition

    from segstream.stream.clients.kafka import consumer as kafka_consumer
    from segstream.stream.kafka.topics import partitions_of

    consumer = kafka_consumer(settings, enable_auto_commit=False)
    await consumer.start()
    try:
        existing = await consumer.topics()
        partitions = [
            TopicPartition(topic, p)
            for topic in topics
            if topic in existing
            for p in await partitions_of(settings, topic)
        ]
        ends = await consumer.end_offsets(partitions) if partitions else {}
    finally:
        await consumer.stop()
    return {f"{tp.topic}:{tp.partition}": end for tp, end in ends.items()}


async def _total_end(settings: Settings, topics: Iterable[str]) -> int:
    """Records on ``topics`` (sum of end offsets); a topic not created yet counts 0."""
    return sum((await _ends(settings, topics)).values())


def _wait_rows(settings: Settings, topics: Iterable[str], rows: int, timeout_s: float) -> float:
    """Poll until ``rows`` records are on ``topics``; the epoch time (s) it was seen."""
    topics = list(topics)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if asyncio.run(_total_end(settings, topics)) >= rows:
            return time.time()
        time.sleep(0.5)
    raise ServiceError(f"the snapshot did not reach {rows:,} rows in {timeout_s:.0f} s")


def _fill_database(settings: Settings, owner: str, users: int) -> None:
    """``generate --db``'s tables of ``users`` users in ``owner``'s database, published."""
    from segstream.cdc.database import prepare_capture
    from segstream.services.postgres import CDC_ROLE
    from segstream.training.generate import generate_tables, load_catalogue
    from segstream.training.postgres_sink import connect, write_database

    products = json_bench.PRODUCTS
    catalogue = load_catalogue(products) if products.exists() else None
    write_database(generate_tables(users, seed=11, products=catalogue), owner, settings.cdc_schema)
    with connect(owner, autocommit=True) as conn:
        prepare_capture(conn, settings, CDC_ROLE)


def _live_rows(
    settings: Settings, topics: Iterable[str], after: Mapping[str, int]
) -> tuple[dict[Position, int], dict[Position, int]]:
    """Of every change row on ``topics`` past ``after`` (end offsets by ``"topic:partition"``):
    its commit time, and its broker timestamp (both epoch ms)."""
    from segstream.stream.kafka.topics import read_all

    commits: dict[Position, int] = {}
    arrivals: dict[Position, int] = {}
    for topic in topics:
        for record in asyncio.run(read_all(settings, topic)):
            # Snapshot rows carry the snapshot's time, not a commit: only the live rows count.
            if record.offset < after.get(f"{record.topic}:{record.partition}", 0):
                continue
            millis = commit_millis(record.value)
            if millis is not None:
                position = (record.topic, record.partition, record.offset)
                commits[position], arrivals[position] = millis, record.timestamp
    return commits, arrivals


def measure(
    settings: Settings, stack: StackSettings, args: argparse.Namespace, workdir: Path, say: Any
) -> CdcFigures:
    """Run measures 1-3 of the module docstring on the local stack (CDC services running) whose
    ports are ``stack``."""
    from segstream.cdc.connect_api import connector_state, register
    from segstream.cdc.connector import connector_config, database_password, table_topics
    from segstream.cdc.shop import Shop
    from segstream.services.scratch import create_scratch, drop_scratch, scratch_settings
    from segstream.stream.kafka.topics import ensure_topics
    from segstream.stream.lifecycle.namespace import drop_namespace
    from segstream.stream.sources.select import input_topics
    from segstream.training.data import DataSource
    from segstream.training.pipeline import train_to_directory
    from segstream.training.postgres_sink import connect
    from segstream.training.train import TrainConfig

    figures = CdcFigures(users=args.users)
    tag = uuid.uuid4().hex[:8]
    name = f"bench_{tag}"
    capture = scratch_settings(settings, stack, name)
    topics = list(table_topics(capture).values())
    worker = capture.model_copy(
        update={
            "source": "cdc",
            "worker_processes": 1,  # one process, as the JSON bench's figures it is set beside
            "app_id": f"bench-{tag}",
            "topic_users": f"bench-{tag}-users",
            "topic_orders": f"bench-{tag}-orders",
            "topic_segment_changes": f"bench-{tag}-changes",
            "topic_user_segments": f"bench-{tag}-segments",
            "topic_dead_letters": f"bench-{tag}-dead",
            "topic_rederive": f"bench-{tag}-rederive",
            "model_dir": workdir / "models",
            "data_dir": workdir / "state",
            "log_level": "info",
            "http_port": json_bench._free_port(),
        }
    )
    try:
        say(f"generating {args.users:,} users into database {name}")
        owner = create_scratch(capture, stack, name)
        _fill_database(capture, owner, args.users)
        with connect(owner) as conn:
            rows = sum(
                int(conn.execute(f"SELECT count(*) FROM {capture.cdc_schema}.{t}").fetchone()[0])
                for t in ("users", "orders", "order_items", "products")
            )
        figures.snapshot_rows = rows
        say(f"training (k=5) over the database ({rows:,} rows)")
        source = DataSource.from_args(None, owner)
        train_to_directory(source, workdir / "models", TrainConfig(k=5, k_values=(5,), n_init=2))

        say(f"1. snapshot: registering connector {name}")
        started = time.time()
        register(capture, connector_config(capture, database_password(capture)))
        state = connector_state(capture, wait_s=300)
        if state is None or not state.running:
            raise ServiceError(f"connector {name} is not running: {state}")
        figures.snapshot_s = _wait_rows(capture, topics, rows, 3_600) - started
        snapshot_ends = asyncio.run(_ends(capture, topics))
        figures.change_rows = sum(snapshot_ends.values())

        inputs = input_topics(worker)  # the change topics and the re-derivation topic
        say(f"2. worker (SEGSTREAM_SOURCE=cdc) on {figures.change_rows:,} snapshot rows")
        asyncio.run(ensure_topics(worker))  # the outputs, as the JSON bench makes them
        child, figures.start_s = json_bench._start_worker(worker, workdir / "worker.log")
        try:
            figures.change_rate = asyncio.run(
                json_bench._committed_lag(worker, worker.app_id, 3_600, child, inputs)
            )
            count = max(1, int(args.rate * args.seconds))
            say(f"3. {count:,} shop transactions at {args.rate:,.0f}/s for latency")
            with connect(owner, autocommit=True) as conn:
                shop = Shop(conn, seed=5, schema=capture.cdc_schema)
                t0 = time.perf_counter()
                shop.run(args.rate, steps=count)
                figures.shop_rate = count / (time.perf_counter() - t0)
                figures.shop_steps = count
            # The last rows reach Kafka shortly after their commit: wait for them, then for
            # the worker to have read them.
            _settle(capture, topics, sum(snapshot_ends.values()))
            asyncio.run(json_bench._committed_lag(worker, worker.app_id, 600, child, inputs))
        finally:
            child.stop()
        commits, arrivals = _live_rows(capture, topics, snapshot_ends)
        figures.live_rows = len(commits)
        from segstream.stream.kafka.topics import read_all

        changes = asyncio.run(read_all(worker, worker.topic_segment_changes))
        stamped = [(r.value, r.timestamp) for r in changes if r.value is not None]
        figures.latencies_ms = commit_latencies(commits, stamped)
        # The same changes from their row's arrival on Kafka: the worker's share of the above.
        figures.worker_latencies_ms = commit_latencies(arrivals, stamped)
        figures.capture_latencies_ms = [float(arrivals[p] - commits[p]) for p in commits]
    finally:
        drop_scratch(capture, stack, name)
        drop_namespace(worker, [worker.app_id], topics)
    return figures


def _settle(settings: Settings, topics: list[str], before: int, timeout_s: float = 120) -> None:
    """Poll until the change topics stop growing past ``before`` (two equal readings)."""
    deadline = time.monotonic() + timeout_s
    last = -1
    while time.monotonic() < deadline:
        now = asyncio.run(_total_end(settings, topics))
        if now > before and now == last:
            return
        last = now
        time.sleep(2.0)
    raise ServiceError("the shop's changes did not reach Kafka in time")


def print_figures(figures: CdcFigures, console: Console) -> None:
    """The CDC figures, then the JSON path's from the same run."""
    pct = json_bench.percentile
    table = Table(title="segstream bench cdc")
    table.add_column("measure")
    table.add_column("figure", justify="right")
    table.add_column("note")
    snapshot_rate = figures.snapshot_rows / max(figures.snapshot_s, 1e-9)
    table.add_row(
        f"snapshot of {figures.users:,} users, s",
        f"{figures.snapshot_s:,.1f}",
        f"{figures.snapshot_rows:,} rows ({snapshot_rate:,.0f} rows/s), connector registered "
        "-> every row on Kafka",
    )
    table.add_row(
        "worker (cdc), change rows/s",
        f"{figures.change_rate:,.0f}",
        f"{figures.change_rows:,} snapshot rows, new group; start -> first change "
        f"{figures.start_s:.1f} s",
    )
    lat = figures.latencies_ms
    table.add_row(
        f"commit -> segment change, ms (shop at {figures.shop_rate:,.1f} tx/s)",
        f"p50 {pct(lat, 50):.0f}, p99 {pct(lat, 99):.0f}, max {max(lat, default=float('nan')):.0f}",
        f"{len(lat):,} segment changes from {figures.live_rows:,} live change rows of "
        f"{figures.shop_steps:,} transactions",
    )
    cap, work = figures.capture_latencies_ms, figures.worker_latencies_ms
    table.add_row(
        "  of which commit -> change row on Kafka, ms",
        f"p50 {pct(cap, 50):.0f}, p99 {pct(cap, 99):.0f}",
        f"{len(cap):,} live change rows (Debezium and Connect)",
    )
    table.add_row(
        "  of which change row on Kafka -> segment change, ms",
        f"p50 {pct(work, 50):.0f}, p99 {pct(work, 99):.0f}",
        f"{len(work):,} segment changes (the worker)",
    )
    if figures.json is not None:
        j = figures.json
        jl = j.latencies_ms
        table.add_row(
            "JSON path, order events/s | mixed events/s",
            f"{j.orders_rate:,.0f} | {j.mixed_rate:,.0f}",
            f"{j.orders:,} orders, {j.mixed_events:,} events of {j.users:,} users",
        )
        table.add_row(
            f"JSON path, order -> segment change, ms (at {j.latency_rate:,.1f} events/s)",
            f"p50 {pct(jl, 50):.0f}, p99 {pct(jl, 99):.0f}, "
            f"max {max(jl, default=float('nan')):.0f}",
            f"{len(jl):,} segment-changing orders; start -> first change "
            + ", ".join(f"{s:.1f}" for s in j.start_s)
            + " s",
        )
    console.print(table)
    if lat:
        console.print(f"commit -> change mean {statistics.fmean(lat):.0f} ms")


def run_cdc_bench(settings: Settings, args: argparse.Namespace) -> int:
    """``segstream bench cdc``: measure, print; start and stop the local CDC stack if needed."""
    from segstream.services.stack import Stack

    console = Console()
    say: Callable[[str], None] = lambda text: console.print(f"[bold]{text}")  # noqa: E731
    stack = Stack(settings, load_stack_settings())
    with ExitStack() as cleanup:
        say("starting whatever of Kafka, Redis, PostgreSQL and Kafka Connect is not running")
        started = stack.up(cdc=True)
        # Stop only what this command started, Connect before the Kafka it keeps state in.
        for service in (stack.kafka, stack.redis, stack.postgres, stack.connect):
            if started.get(service.name) is not None:
                cleanup.callback(service.stop)
        client = stack.client.model_copy(update={"connect_url": stack.connect.url})
        if args.workdir:
            workdir = Path(args.workdir)
            workdir.mkdir(parents=True, exist_ok=True)
        else:
            workdir = Path(cleanup.enter_context(tempfile.TemporaryDirectory(prefix="ss-cdc-")))
        figures = measure(client, stack.stack, args, workdir / "cdc", say)
        if args.json_users > 0:
            say(f"4. the JSON path on {args.json_users:,} users, latency at {args.rate:,.0f}/s")
            json_args = argparse.Namespace(
                users=args.json_users, rate=args.rate, latency_seconds=args.seconds, profile=None
            )
            figures.json = json_bench.measure(client, json_args, workdir / "json", say)
    # Redirected to a file, rich would wrap the table at 80 columns.
    print_figures(figures, console if console.is_terminal else Console(width=150))
    return 0
