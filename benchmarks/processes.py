"""``segstream bench stream --processes 1,2,all``: the worker with 1, 2, ... processes.

What is measured, for each count N (``all``: the usable cores), on one set of input topics
with at least max(N) partitions, each N in a consumer group and Redis keys of its own:

1. **throughput**: ``segstream worker --processes N`` (the supervisor and its children, as
   deployed) from a new group over the same backlog (a generated dataset's users and orders,
   then its orders again as new orders); events/s from the group's committed offsets, first
   commit to caught up (the same figure as ``bench stream``'s);
2. **latency**: the same group started again and, once its ``/readyz`` answers 200 (every
   process up and assigned), ``--rate`` orders/s for ``--latency-seconds``;
   for each order that changed a segment, the change's broker timestamp minus the order's;
   p50 and p99 printed.

Every N sees the same backlog (the latency waves come after every throughput run). The
machine's load average is printed with the figures: on a shared machine the processes
compete with everything else for the cores. Nothing is asserted; nothing is left behind.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
import urllib.error
import urllib.request
import uuid
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

from aiokafka.structs import RecordMetadata
from rich.console import Console
from rich.table import Table

from benchmarks.stream import (
    _Child,
    _committed_lag,
    _free_port,
    _latencies,
    _publish,
    _renumbered,
    bench_dataset,
    bench_workspace,
    percentile,
)
from segstream.errors import ConfigError, ServiceError
from segstream.settings import Settings
from segstream.stream.clients.redis import sync_redis_client
from segstream.stream.kafka.topics import ensure_topics
from segstream.stream.lifecycle.namespace import drop_keys, drop_namespace
from segstream.stream.lifecycle.replay import ReplayEvent
from segstream.stream.state.keys import state_prefix
from segstream.stream.worker.processes import usable_cores

__all__ = ["ProcessFigures", "parse_counts", "run_processes_bench"]


@dataclass
class ProcessFigures:
    """One process count's figures."""

    processes: int
    events: int = 0
    rate: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)
    latency_rate: float = 0.0
    load: tuple[float, float, float] = (0.0, 0.0, 0.0)
    """The machine's load averages when the throughput run ended."""


def parse_counts(text: str, cores: int) -> list[int]:
    """``--processes``' list: comma-separated counts, ``all`` for ``cores``; in order, once each.

    Raises:
        ConfigError: an entry that is neither a positive number nor ``all``.
    """
    counts: list[int] = []
    for part in text.split(","):
        word = part.strip().lower()
        if word == "all":
            n = cores
        elif word.isdigit() and 1 <= int(word) <= 1024:
            n = int(word)
        else:
            raise ConfigError(
                f"--processes {text}: {part.strip()!r} is not a count from 1 to 1024 or 'all'; "
                "give e.g. --processes 1,2,all"
            )
        if n not in counts:
            counts.append(n)
    return counts


def _start(settings: Settings, n: int, log: Path) -> _Child:
    return _Child(["-m", "segstream.cli", "worker", "--processes", str(n)], settings, log)


def _wait_ready(settings: Settings, child: _Child, deadline_s: float) -> None:
    """Until ``GET /readyz`` on the worker's HTTP port answers 200 (every process ready).

    Raises:
        ServiceError: the worker exited, or was not ready within ``deadline_s``.
    """
    url = f"http://127.0.0.1:{settings.http_port}/readyz"
    stop_at = time.monotonic() + deadline_s
    while time.monotonic() < stop_at:
        child.check_alive()
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass  # not listening yet, or 503: not ready yet
        time.sleep(0.5)
    raise ServiceError(f"the worker on port {settings.http_port} was not ready in {deadline_s} s")


def _latency_run(
    settings: Settings, events: list[ReplayEvent], rate: float, log: Path
) -> tuple[list[float], float]:
    """The group of ``settings`` started again, ``events`` sent at ``rate``/s: the latencies
    (ms) of the changes they caused and the rate actually sent."""
    child = _start(settings, settings.worker_processes or 1, log)
    try:
        # Every process up and assigned before the first order is sent: otherwise the start
        # (imports, model, group join) would be timed as latency.
        _wait_ready(settings, child, 300)
        asyncio.run(_committed_lag(settings, settings.app_id, 300, child))
        sent: dict[tuple[int, int], int] = {}

        def record(event: ReplayEvent, metadata: RecordMetadata) -> None:
            sent[(metadata.partition, metadata.offset)] = metadata.timestamp

        started = time.perf_counter()
        _publish(settings, events, rate=rate, acknowledged=record)
        sent_rate = len(events) / (time.perf_counter() - started)
        asyncio.run(_committed_lag(settings, settings.app_id, 300, child))
    finally:
        child.stop()
    return _latencies(settings, sent), sent_rate


def measure(
    settings: Settings, args: argparse.Namespace, counts: list[int], workdir: Path, say
) -> list[ProcessFigures]:
    """The module docstring's runs for each of ``counts``."""
    _, source = bench_dataset(args.users, workdir, say)
    from segstream.stream.lifecycle.replay import read_replay_plan

    plan = read_replay_plan(source)
    backlog = [*plan.events, *_renumbered(plan.events, 1)]

    tag = uuid.uuid4().hex[:8]
    base = settings.model_copy(
        update={
            "topic_users": f"bench-{tag}-users",
            "topic_orders": f"bench-{tag}-orders",
            "topic_segment_changes": f"bench-{tag}-changes",
            "topic_user_segments": f"bench-{tag}-segments",
            "topic_dead_letters": f"bench-{tag}-dead",
            "topic_partitions": max(settings.topic_partitions, *counts),
            "model_dir": workdir / "models",
            "data_dir": workdir / "state",
            "log_level": "info",
        }
    )
    groups = {
        n: base.model_copy(
            update={"app_id": f"bench-{tag}-p{n}", "worker_processes": n, "http_port": _free_port()}
        )
        for n in counts
    }
    figures = {n: ProcessFigures(n, events=len(backlog)) for n in counts}
    asyncio.run(ensure_topics(base))
    try:
        say(f"publishing {len(backlog):,} events ({base.topic_partitions} partitions per topic)")
        _publish(base, backlog)
        for n in counts:
            say(f"throughput: segstream worker --processes {n} on {len(backlog):,} events")
            child = _start(groups[n], n, workdir / f"throughput-p{n}.log")
            try:
                figures[n].rate = asyncio.run(
                    _committed_lag(groups[n], groups[n].app_id, 1800, child)
                )
            finally:
                child.stop()
            figures[n].load = os.getloadavg()
        count = int(args.rate * args.latency_seconds)
        for wave, n in enumerate(counts, start=2):
            say(f"latency: --processes {n}, {count:,} orders at {args.rate:,.0f}/s")
            events = _renumbered(plan.events, wave)[:count]
            figures[n].latencies_ms, figures[n].latency_rate = _latency_run(
                groups[n], events, args.rate, workdir / f"latency-p{n}.log"
            )
    finally:
        first, *others = counts
        drop_namespace(groups[first], [g.app_id for g in groups.values()])
        client = sync_redis_client(base)
        try:
            for n in others:
                drop_keys(client, state_prefix(groups[n]) + "*")
        finally:
            client.close()
    return [figures[n] for n in counts]


def print_figures(figures: list[ProcessFigures], console: Console) -> None:
    """One row per process count."""
    table = Table(
        title=f"segstream worker --processes N ({usable_cores()} usable cores on this machine)"
    )
    columns = ("processes", "events/s", "x 1 process", "p50 / p99 ms", "changes timed", "load")
    for name in columns:
        table.add_column(name, justify="right")
    one = next((f.rate for f in figures if f.processes == 1), None)
    for f in figures:
        latency = (
            f"{percentile(f.latencies_ms, 50):,.0f} / {percentile(f.latencies_ms, 99):,.0f}"
            if f.latencies_ms
            else "-"
        )
        table.add_row(
            str(f.processes),
            # 0: the whole backlog was committed at once, too few events to time (--users).
            f"{f.rate:,.0f}" if f.rate else "too few events",
            f"{f.rate / one:.2f}" if one else "-",
            latency,
            f"{len(f.latencies_ms):,} at {f.latency_rate:,.0f}/s",
            " ".join(f"{x:.1f}" for x in f.load),
        )
    console.print(table)
    console.print(f"events per run: {figures[0].events:,} (users, orders, then the orders again)")


def run_processes_bench(settings: Settings, args: argparse.Namespace) -> int:
    """``segstream bench stream --processes LIST``: measure, print; start and stop the local
    stack if needed."""
    counts = parse_counts(args.processes, usable_cores())
    console = Console()
    with ExitStack() as stack:
        workdir = bench_workspace(stack, settings, args.workdir, "ss-procs-", console)
        figures = measure(
            settings, args, counts, workdir, lambda text: console.print(f"[bold]{text}")
        )
    print_figures(figures, console)
    return 0
