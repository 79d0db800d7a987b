"""``segstream bench stream``: the worker's figures, measured on the real stack, printed.

What is measured, in one run, on topics, a consumer group and Redis keys of its own:

1. **start-to-first-event**: from spawning ``segstream worker`` (a new process: imports,
   model load, group join) to the broker timestamp of its first published change, with the
   input already waiting;
2. **throughput, mixed**: the worker reading a generated dataset's users and orders (``--users``
   users, thelook shapes) from a new group; events/s from the group's committed offsets
   (polled; first commit to caught up);
3. **Redis memory per user**: ``MEMORY USAGE`` of every user's keys after that run; and
   the wall-clock time of each phase of that run's batches, as the worker logged it on
   stopping (:mod:`segstream.stream.worker.phases`), printed as a second table;
4. **throughput, orders only**: the worker restarted on a second wave of orders (the dataset's
   orders again under new order ids, so each is counted and re-assigns its user);
5. **latency**: a third wave of orders at a steady ``--rate`` events/s for
   ``--latency-seconds``; for each order that changed a segment, the change's broker
   timestamp minus the order's broker timestamp (both CreateTime, one machine clock);
6. **baselines**, in the same run, on all the same input: a bare Faust ``take_events`` agent
   as Faust comes, the same agent on the worker's event loop and consumer, a raw aiokafka
   consume -> produce loop, and the same loop keeping per-user counters in a Python dict
   ("local state", no Redis) (:mod:`benchmarks.baselines`);
7. with ``--profile PATH``: the worker under cProfile on a fourth wave of orders; the
   statistics are written to ``PATH`` and the time folded into a batch's steps is printed
   (:mod:`benchmarks.profiling`). Profiling slows the worker: its rate is not a figure.

The stack of ``SEGSTREAM_*`` is used when it answers; otherwise the local one is started and
stopped again afterwards. Nothing is left behind: the bench's topics and keys are deleted.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import pstats
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import msgspec
import numpy as np
import redis
from aiokafka import TopicPartition
from aiokafka.errors import KafkaError
from aiokafka.structs import RecordMetadata
from rich.console import Console
from rich.table import Table

from segstream.errors import SegstreamError, ServiceError
from segstream.settings import Settings, as_environment, load_stack_settings
from segstream.stream.clients.kafka import admin_client
from segstream.stream.clients.kafka import consumer as kafka_consumer
from segstream.stream.clients.redis import sync_redis_client
from segstream.stream.kafka.topics import ensure_topics, partitions_of, read_all
from segstream.stream.lifecycle.namespace import drop_namespace
from segstream.stream.lifecycle.replay import ReplayEvent, publish_events, read_replay_plan
from segstream.stream.state.keys import outbox_key, state_key, state_prefix
from segstream.training.data import DataSource
from segstream.training.generate import Tables, generate_tables, load_catalogue, write_tables
from segstream.training.pipeline import train_to_directory
from segstream.training.train import TrainConfig

CHECKOUT = Path(__file__).resolve().parents[1]
"""The source checkout these benchmarks belong to."""

__all__ = [
    "StreamFigures",
    "percentile",
    "phase_rows",
    "print_figures",
    "read_phases",
    "run_stream_bench",
]

PRODUCTS = Path("..") / "shared" / "data" / "thelook" / "products.parquet"
"""The real catalogue, when the bench runs from the repository root; generated otherwise."""


@dataclass
class StreamFigures:
    """Everything the bench measured."""

    users: int = 0
    start_s: list[float] = field(default_factory=list)
    mixed_events: int = 0
    mixed_rate: float = 0.0
    orders: int = 0
    orders_rate: float = 0.0
    take_rate: float = 0.0
    lean_take_rate: float = 0.0
    aiokafka_rate: float = 0.0
    local_state_rate: float = 0.0
    baseline_events: int = 0
    memory: list[int] = field(default_factory=list)
    latencies_ms: list[float] = field(default_factory=list)
    latency_rate: float = 0.0
    profile_path: Path | None = None
    profile_events: int = 0
    profile: dict[str, float] = field(default_factory=dict)
    phases: dict[str, float] = field(default_factory=dict)
    """The mixed run's wall-clock seconds per batch phase (``span_s``: first batch to last)."""
    pipeline_depth: int = 0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class _Child:
    """A subprocess of ours with its output in a log file; always ended by ``stop``."""

    def __init__(self, args: Sequence[str], settings: Settings, log: Path) -> None:
        self.log = log
        self._out = log.open("ab")
        self.started = time.time()
        self.process = subprocess.Popen(
            [sys.executable, *args],
            env=as_environment(settings, os.environ),
            cwd=CHECKOUT,  # `-m benchmarks.…` needs the checkout on the path
            stdout=self._out,
            stderr=subprocess.STDOUT,
        )

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self._out.close()

    def check_alive(self) -> None:
        code = self.process.poll()
        if code is not None:
            tail = "\n".join(self.log.read_text(errors="replace").splitlines()[-20:])
            raise ServiceError(f"{self.log.name} exited with {code}:\n{tail}")


async def _committed_lag(
    settings: Settings,
    group: str,
    deadline_s: float,
    child: _Child,
    topics: Sequence[str] | None = None,
) -> float:
    """Poll ``group``'s lag on ``topics`` (default: the JSON inputs) until 0; events/s from its
    first commit to then."""
    topics = list(topics or [settings.topic_users, settings.topic_orders])
    partitions = [TopicPartition(t, p) for t in topics for p in await partitions_of(settings, t)]
    admin = admin_client(settings)
    consumer = kafka_consumer(settings, enable_auto_commit=False)
    await admin.start()
    await consumer.start()
    try:
        ends = await consumer.end_offsets(partitions)
        total = sum(ends.values())
        first: tuple[float, int] | None = None
        stop_at = time.monotonic() + deadline_s
        while time.monotonic() < stop_at:
            child.check_alive()
            committed = await admin.list_consumer_group_offsets(group, partitions=partitions)
            done = sum(max(0, m.offset) for m in committed.values() if m is not None)
            now = time.monotonic()
            if first is None and done > 0:
                first = (now, done)
            if done >= total and first is not None:
                return (total - first[1]) / max(now - first[0], 1e-9) if total > first[1] else 0.0
            await asyncio.sleep(0.25)
        raise ServiceError(f"group {group} still behind after {deadline_s:.0f} s")
    finally:
        await consumer.stop()
        await admin.close()


def _run_group(settings: Settings, args: Sequence[str], log: Path, timeout_s: float) -> float:
    """Start a consumer process, measure its rate until it caught up, stop it."""
    child = _Child(args, settings, log)
    try:
        return asyncio.run(_committed_lag(settings, settings.app_id, timeout_s, child))
    finally:
        child.stop()


async def _end_offsets(settings: Settings, topic: str) -> dict[TopicPartition, int]:
    partitions = [TopicPartition(topic, p) for p in await partitions_of(settings, topic)]
    consumer = kafka_consumer(settings, enable_auto_commit=False)
    await consumer.start()
    try:
        return await consumer.end_offsets(partitions)
    finally:
        await consumer.stop()


async def _first_record_time(
    settings: Settings, offsets: dict[TopicPartition, int], timeout_s: float
) -> float:
    """Broker timestamp (epoch s) of the first record written after ``offsets``."""
    consumer = kafka_consumer(settings, enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign(list(offsets))
        for tp, offset in offsets.items():
            consumer.seek(tp, offset)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            fetched = await consumer.getmany(timeout_ms=200, max_records=10)
            stamps = [r.timestamp / 1000 for records in fetched.values() for r in records]
            if stamps:
                return min(stamps)
        raise ServiceError("no segment change was published in time")
    finally:
        await consumer.stop()


def _start_worker(settings: Settings, log: Path) -> tuple[_Child, float]:
    """Spawn a worker; returns it and the seconds until its first change reached the broker."""
    offsets = asyncio.run(_end_offsets(settings, settings.topic_segment_changes))
    child = _Child(["-m", "segstream.cli", "worker"], settings, log)
    try:
        first = asyncio.run(_first_record_time(settings, offsets, 120))
    except BaseException:
        child.stop()
        raise
    return child, first - child.started


def _renumbered(events: Sequence[ReplayEvent], wave: int) -> list[ReplayEvent]:
    """The orders of ``events`` again, as new orders (order ids moved by ``wave`` x 10^12)."""
    shifted = []
    for event in events:
        if event.kind != "orders":
            continue
        document = msgspec.json.decode(event.value)
        document["order_id"] += wave * 10**12
        shifted.append(
            ReplayEvent("orders", event.user_id, event.key, msgspec.json.encode(document))
        )
    return shifted


def _memory_per_user(settings: Settings, user_ids: Sequence[int]) -> list[int]:
    client = sync_redis_client(settings)
    prefix = state_prefix(settings)
    try:
        pipe = client.pipeline(transaction=False)
        for uid in user_ids:
            pipe.memory_usage(state_key(prefix, uid), samples=0)
            pipe.memory_usage(outbox_key(prefix, uid), samples=0)
        sizes = pipe.execute()
    finally:
        client.close()
    return [int(a or 0) + int(b or 0) for a, b in zip(sizes[::2], sizes[1::2], strict=True) if a]


def _latencies(settings: Settings, sent: dict[tuple[int, int], int]) -> list[float]:
    """ms from each wave order (partition, offset) -> timestamp to the change it caused."""
    changes = asyncio.run(read_all(settings, settings.topic_segment_changes))
    latencies = []
    for record in changes:
        source = msgspec.json.decode(record.value)["source"]
        if source["topic"] != settings.topic_orders:
            continue
        stamp = sent.get((source["partition"], source["offset"]))
        if stamp is not None:
            latencies.append(float(record.timestamp - stamp))
    return latencies


def _publish(settings: Settings, events: Sequence[ReplayEvent], rate: float | None = None,
             acknowledged=None) -> None:  # fmt: skip
    topics = {"users": settings.topic_users, "orders": settings.topic_orders}
    asyncio.run(publish_events(events, settings=settings, topics=topics,
                               rate=rate, acknowledged=acknowledged))  # fmt: skip


def bench_dataset(users: int, workdir: Path, say) -> tuple[Tables, DataSource]:
    """Generate ``users`` users (seed 11, the real catalogue when present) as Parquet under
    ``workdir/data`` and train a k=5 model into ``workdir/models``; the tables and their
    source."""
    say(f"generating {users:,} users and training (k=5) in {workdir}")
    products = load_catalogue(PRODUCTS) if PRODUCTS.exists() else None
    tables = generate_tables(users, seed=11, products=products)
    write_tables(tables, workdir / "data")
    source = DataSource(path=workdir / "data")
    train_to_directory(source, workdir / "models", TrainConfig(k=5, k_values=(5,), n_init=2))
    return tables, source


def measure(settings: Settings, args: argparse.Namespace, workdir: Path, say) -> StreamFigures:
    """Run the six measurements of the module docstring on ``settings``' stack."""
    figures = StreamFigures(users=args.users)
    tables, source = bench_dataset(args.users, workdir, say)
    plan = read_replay_plan(source)
    user_ids = tables.users.column("id").to_pylist()

    tag = uuid.uuid4().hex[:8]
    names = {
        "topic_users": f"bench-{tag}-users",
        "topic_orders": f"bench-{tag}-orders",
        "topic_segment_changes": f"bench-{tag}-changes",
        "topic_user_segments": f"bench-{tag}-segments",
        "topic_dead_letters": f"bench-{tag}-dead",
    }
    # The worker as deployed, HTTP side included, on a port of its own.
    worker = settings.model_copy(
        update={**names, "app_id": f"bench-{tag}", "model_dir": workdir / "models",
                "data_dir": workdir / "state", "log_level": "info", "http_port": _free_port(),
                "worker_processes": 1}  # one process: the baselines are one process each
    )  # fmt: skip
    take = worker.model_copy(update={"app_id": f"bench-{tag}-take"})
    lean_take = worker.model_copy(update={"app_id": f"bench-{tag}-lean-take"})
    raw = worker.model_copy(update={"app_id": f"bench-{tag}-aiokafka"})
    local = worker.model_copy(update={"app_id": f"bench-{tag}-local-state"})
    sink = f"bench-{tag}-sink"
    local_sink = f"bench-{tag}-local-sink"
    asyncio.run(ensure_topics(worker))
    try:
        say(f"1-3. worker on {len(plan.events):,} events (profiles and orders), from a new group")
        _publish(worker, plan.events)
        figures.mixed_events = len(plan.events)
        child, start_s = _start_worker(worker, workdir / "worker-1.log")
        figures.start_s.append(start_s)
        try:
            figures.mixed_rate = asyncio.run(_committed_lag(worker, worker.app_id, 900, child))
        finally:
            child.stop()
        figures.memory = _memory_per_user(worker, user_ids)
        figures.phases = read_phases(workdir / "worker-1.log")
        figures.pipeline_depth = worker.pipeline_depth

        wave = _renumbered(plan.events, 1)
        figures.orders = len(wave)
        say(f"4. worker restarted on {len(wave):,} new orders")
        _publish(worker, wave)
        child, start_s = _start_worker(worker, workdir / "worker-2.log")
        figures.start_s.append(start_s)
        try:
            figures.orders_rate = asyncio.run(_committed_lag(worker, worker.app_id, 900, child))
            count = int(args.rate * args.latency_seconds)
            say(f"5. {count:,} orders at {args.rate:,.0f}/s for latency")
            latency_wave = _renumbered(plan.events, 2)[:count]
            sent: dict[tuple[int, int], int] = {}

            def record(event: ReplayEvent, metadata: RecordMetadata) -> None:
                sent[(metadata.partition, metadata.offset)] = metadata.timestamp

            started = time.perf_counter()
            _publish(worker, latency_wave, rate=args.rate, acknowledged=record)
            figures.latency_rate = len(latency_wave) / (time.perf_counter() - started)
            asyncio.run(_committed_lag(worker, worker.app_id, 300, child))
        finally:
            child.stop()
        figures.latencies_ms = _latencies(worker, sent)

        figures.baseline_events = len(plan.events) + len(wave) + len(latency_wave)
        say(f"6. baselines on the same {figures.baseline_events:,} events")
        figures.take_rate = _run_group(
            take, ["-m", "benchmarks.baselines", "faust-take"], workdir / "take.log", 900
        )
        figures.lean_take_rate = _run_group(
            lean_take, ["-m", "benchmarks.baselines", "faust-take", "--lean"],
            workdir / "lean-take.log", 900,
        )  # fmt: skip
        figures.aiokafka_rate = _run_group(
            raw, ["-m", "benchmarks.baselines", "aiokafka", "--sink", sink],
            workdir / "aiokafka.log", 900,
        )  # fmt: skip
        figures.local_state_rate = _run_group(
            local, ["-m", "benchmarks.baselines", "local-state", "--sink", local_sink],
            workdir / "local-state.log", 900,
        )  # fmt: skip
        if args.profile:
            profile_wave = _renumbered(plan.events, 3)
            say(f"7. worker under cProfile on {len(profile_wave):,} new orders -> {args.profile}")
            _publish(worker, profile_wave)
            figures.profile_events = len(profile_wave)
            figures.profile_path = Path(args.profile).resolve()
            _run_group(
                worker,
                ["-m", "benchmarks.profiling", "--out", str(figures.profile_path),
                 "--events", str(len(profile_wave))],
                workdir / "worker-profile.log", 1800,
            )  # fmt: skip
            figures.profile = _profile_breakdown(figures.profile_path)
    finally:
        groups = [worker.app_id, take.app_id, lean_take.app_id, raw.app_id, local.app_id]
        drop_namespace(worker, groups, [sink, local_sink])
    return figures


def read_phases(log: Path) -> dict[str, float]:
    """The phase times a worker logged when it stopped (its last ``phases {...}`` line);
    empty when it logged none (stopped before its first batch, or killed)."""
    marker = " phases {"
    for line in reversed(log.read_text(errors="replace").splitlines()):
        at = line.find(marker)
        if at >= 0:
            decoded: dict[str, float] = msgspec.json.decode(line[at + len(" phases ") :])
            return decoded
    return {}


def phase_rows(phases: dict[str, float], events: int) -> list[tuple[str, str, str, str]]:
    """Rows (phase, seconds, share of the span, µs per event) of a worker's logged phases;
    the span (first batch's start to last batch's end) last."""
    span = phases.get("span_s", 0.0)
    rows = []
    for name, seconds in phases.items():
        if name == "span_s":
            continue
        share = f"{seconds / span:.0%}" if span else "-"
        rows.append((name, f"{seconds:.2f}", share, f"{seconds / max(events, 1) * 1e6:.1f}"))
    per_event = f"{span / max(events, 1) * 1e6:.1f}"
    rows.append(("span (first batch to last)", f"{span:.2f}", "100%", per_event))
    return rows


def _profile_breakdown(path: Path) -> dict[str, float]:
    """The grouped breakdown of the pstats file the profiled worker wrote on stopping."""
    if not path.is_file():
        raise ServiceError(
            f"the profiled worker wrote no profile to {path}: see worker-profile.log in the "
            "bench's --workdir"
        )
    from benchmarks.profiling import breakdown

    return breakdown(pstats.Stats(str(path)).stats)  # type: ignore[attr-defined]


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100, linear interpolation) of ``values``; NaN when empty."""
    return float(np.percentile(np.asarray(values, dtype=float), q)) if values else float("nan")


def print_figures(figures: StreamFigures, console: Console) -> None:
    """The figures as a table, with the targets they are held to."""
    table = Table(title="segstream bench stream")
    table.add_column("measure")
    table.add_column("figure", justify="right")
    table.add_column("target / note")
    ok = lambda good: "[green]met[/]" if good else "[red]missed[/]"  # noqa: E731
    table.add_row(
        "worker, order events/s (Kafka -> Redis -> model -> Kafka)",
        f"{figures.orders_rate:,.0f}",
        f">= 10,000 {ok(figures.orders_rate >= 10_000)}; {figures.orders:,} orders",
    )
    table.add_row(
        "worker, mixed profile+order events/s",
        f"{figures.mixed_rate:,.0f}",
        f"{figures.mixed_events:,} events, new group",
    )
    table.add_row(
        "bare Faust take_events agent, events/s",
        f"{figures.take_rate:,.0f}",
        f"{figures.baseline_events:,} events; asyncio loop, Faust's consumer",
    )
    table.add_row("the same agent on the worker's loop and consumer, events/s",
                  f"{figures.lean_take_rate:,.0f}", "uvloop, LeanConsumer, GC tuning")  # fmt: skip
    table.add_row("raw aiokafka consume -> produce, events/s", f"{figures.aiokafka_rate:,.0f}",
                  f"{figures.baseline_events:,} events")  # fmt: skip
    table.add_row("local state: consume -> per-user counters in a dict -> produce, events/s",
                  f"{figures.local_state_rate:,.0f}",
                  f"{figures.baseline_events:,} events; no Redis, no model")  # fmt: skip
    bases = (("bare take", figures.take_rate), ("bare take, worker's set-up",
             figures.lean_take_rate), ("raw aiokafka", figures.aiokafka_rate),
             ("local state", figures.local_state_rate))  # fmt: skip
    for name, base in bases:
        if base:
            table.add_row(
                f"ratio worker orders / {name}",
                f"{figures.orders_rate / base:.2f}",
                f"mixed: {figures.mixed_rate / base:.2f}",
            )
    lat = figures.latencies_ms
    p99 = percentile(lat, 99)
    table.add_row(
        f"latency order -> change, ms (at {figures.latency_rate:,.0f} events/s)",
        f"p50 {percentile(lat, 50):.0f}, p90 {percentile(lat, 90):.0f}, p99 {p99:.0f}, "
        f"max {max(lat, default=float('nan')):.0f}",
        f"p99 < 100 {ok(p99 < 100)}; over {len(lat):,} segment-changing orders, "
        f"{sum(1 for v in lat if v >= 100):,} at 100 ms or more",
    )
    mem = figures.memory
    mean = statistics.fmean(mem) if mem else float("nan")
    table.add_row(
        f"Redis memory per user (MEMORY USAGE), {len(mem):,} users",
        f"mean {mean:.0f} B, p99 {percentile(mem, 99):.0f} B, max {max(mem, default=0)} B",
        f"< 1 KB {ok(mean < 1024)}",
    )
    starts = ", ".join(f"{s:.1f}" for s in figures.start_s)
    table.add_row("worker start -> first event out, s", starts, "process spawn to first change")
    console.print(table)
    if figures.phases:
        phases = Table(
            title=f"wall clock per batch phase, mixed run ({figures.mixed_events:,} events, "
            f"SEGSTREAM_PIPELINE_DEPTH={figures.pipeline_depth}; at depth 2 the second stage's "
            "phases overlap the next batch's first, so shares may add up past 100%)"
        )
        for column in ("phase", "seconds", "share of span", "µs per event"):
            phases.add_column(column, justify="left" if column == "phase" else "right")
        for row in phase_rows(figures.phases, figures.mixed_events):
            phases.add_row(*row)
        console.print(phases)
    if figures.profile:
        from benchmarks.profiling import format_breakdown

        profile = Table(
            title=f"where the worker's time went (cProfile, own CPU time, event-loop thread), "
            f"{figures.profile_events:,} orders; statistics in {figures.profile_path}"
        )
        for column in ("step", "seconds", "share"):
            profile.add_column(column, justify="left" if column == "step" else "right")
        for row in format_breakdown(figures.profile, figures.profile_events):
            profile.add_row(*row)
        console.print(profile)


def _reachable(settings: Settings) -> bool:
    try:
        client = sync_redis_client(settings, socket_connect_timeout=1)
        client.ping()
        client.close()
        asyncio.run(partitions_of(settings, "__consumer_offsets"))
    except (redis.RedisError, OSError, KafkaError, SegstreamError):
        return False
    return True


def bench_workspace(
    stack: ExitStack, settings: Settings, workdir: str | None, prefix: str, console: Console
) -> Path:
    """Start the local Kafka and Redis unless ``settings`` reach running ones, and return the
    bench's working folder: ``workdir`` (made if missing) or a temporary one named ``prefix…``.

    What this starts (and only that) is stopped, and a temporary folder removed, when
    ``stack`` closes.
    """
    from segstream.services.stack import Stack

    if not _reachable(settings):
        console.print("starting the local Kafka and Redis")
        services = Stack(settings, load_stack_settings())
        started = services.up()
        if started.get("kafka") is not None:
            stack.callback(services.kafka.stop)
        if started.get("redis") is not None:
            stack.callback(services.redis.stop)
    if workdir:
        folder = Path(workdir)
        folder.mkdir(parents=True, exist_ok=True)
        return folder
    return Path(stack.enter_context(tempfile.TemporaryDirectory(prefix=prefix)))


def run_stream_bench(settings: Settings, args: argparse.Namespace) -> int:
    """``segstream bench stream``: measure, print; start and stop the local stack if needed."""
    console = Console()
    with ExitStack() as stack:
        workdir = bench_workspace(stack, settings, args.workdir, "ss-bench-", console)
        figures = measure(settings, args, workdir, lambda text: console.print(f"[bold]{text}"))
    print_figures(figures, console)
    return 0
