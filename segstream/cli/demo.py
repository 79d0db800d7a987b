"""``segstream demo``: the whole product end to end on this machine, then a clean stop.

Services up -> generate a thelook-shaped dataset -> train -> start a worker -> replay the
dataset through Kafka while a live panel shows events processed, lag, segment populations
and the latest changes -> check that every user's streamed segment equals the batch one ->
stop the worker and whatever services the demo started. Ctrl-C at any point runs the same
clean-up, so nothing is left running.

The demo works in its own namespace (app id ``segstream-demo``, topics ``demo.*``, data
under ``<data_dir>/demo``) and resets only that namespace, so it never touches the state or
topics of a real deployment on the same stack.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Any

from segstream.errors import ConfigError, ServiceError
from segstream.settings import Settings, as_environment, load_settings, load_stack_settings

if TYPE_CHECKING:
    from segstream.services.stack import Stack

__all__ = ["add_commands", "run_demo"]

SHARED_CATALOGUE = Path("../shared/data/thelook/products.parquet")
DEMO_APP_ID = "segstream-demo"


def add_commands(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Register the ``demo`` verb."""
    parser = sub.add_parser("demo", help="run the product end to end on the local stack")
    parser.add_argument("--users", type=int, default=20_000, help="users to generate")
    parser.add_argument(
        "--rate", type=float, default=None, help="replay at most N events/s (default: flat out)"
    )
    parser.add_argument(
        "--products",
        default=None,
        help=f"real product catalogue (default: {SHARED_CATALOGUE} when present)",
    )
    parser.add_argument(
        "--cdc",
        action="store_true",
        help="change data capture instead: PostgreSQL, Debezium, live shop mutations (docs/cdc.md)",
    )
    parser.add_argument(
        "--shop-rate", type=float, default=20.0, metavar="N", help="--cdc: shop changes a second"
    )
    parser.add_argument(
        "--shop-seconds",
        type=float,
        default=30.0,
        metavar="S",
        help="--cdc: seconds of live shop changes",
    )
    parser.set_defaults(handler=_demo)


def _demo(args: argparse.Namespace) -> int:
    if args.users < 10:
        raise ConfigError("--users must be at least 10")
    if args.cdc:
        if args.shop_rate <= 0 or args.shop_seconds <= 0:
            raise ConfigError("--shop-rate and --shop-seconds must be positive")
        if args.rate is not None or args.products is not None:
            raise ConfigError("--rate and --products are the JSON demo's: --cdc takes --shop-rate")
        from segstream.cli.demo_cdc import run_cdc_demo

        return run_cdc_demo(load_settings(), args)
    return run_demo(load_settings(), args)


def _demo_settings(settings: Settings, stack: Stack, models: Path) -> Settings:
    """The demo's namespace on the local stack: its own app id, topics and models."""
    return load_settings(
        **{
            **settings.model_dump(),
            "kafka_bootstrap_servers": stack.kafka.bootstrap,
            "redis_url": stack.redis.url,
            "model_dir": models,
            "app_id": DEMO_APP_ID,
            "topic_users": "demo.users",
            "topic_orders": "demo.orders",
            "topic_segment_changes": "demo.segment-changes",
            "topic_user_segments": "demo.user-segments",
            "topic_dead_letters": "demo.dead-letters",
        }
    )


def _segstream(*args: str) -> list[str]:
    return [sys.executable, "-m", "segstream.cli", *args]


def _step(title: str) -> float:
    print(f"\n== {title}", flush=True)
    return time.perf_counter()


def _run(env: dict[str, str], *args: str) -> None:
    result = subprocess.run(_segstream(*args), env=env, check=False)
    if result.returncode != 0:
        raise ServiceError(f"`segstream {' '.join(args)}` failed with exit {result.returncode}")


def _start(env: dict[str, str], log_path: Path, *args: str) -> subprocess.Popen[bytes]:
    """``segstream ARGS`` started in the background, its output (both streams) to ``log_path``."""
    with open(log_path, "wb") as log:
        return subprocess.Popen(_segstream(*args), env=env, stdout=log, stderr=subprocess.STDOUT)


def _start_worker(env: dict[str, str], work: Path, settings: Settings) -> subprocess.Popen[bytes]:
    """``segstream worker`` in the background, logging to ``work/worker.log``; says where its
    log and status page (``settings``' HTTP address) are."""
    work.mkdir(parents=True, exist_ok=True)
    worker = _start(env, work / "worker.log", "worker")
    print(f"   worker pid {worker.pid}, log {work / 'worker.log'}")
    print(f"   status page http://{settings.http_host}:{settings.http_port}/")
    return worker


def _reset_namespace(settings: Settings) -> None:
    """Delete the demo's topics and Redis keys left by a previous run.

    The demo's consumer group keeps no offset of the deleted topics, so the worker reads the
    re-created ones from the beginning.
    """
    from segstream.stream.lifecycle.namespace import drop_namespace

    drop_namespace(settings, [settings.app_id])
    time.sleep(1.0)  # topic deletion completes asynchronously on the broker


def _status(url: str) -> dict[str, Any] | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            status: dict[str, Any] | None = json.loads(response.read())
            return status
    except (urllib.error.URLError, OSError, ValueError):
        return None


def _panel(status: dict[str, Any] | None, replay_done: bool) -> Any:
    from rich.console import Group
    from rich.table import Table

    if status is None:
        return Table(title="waiting for the worker's status page…")
    lag = status.get("lag") or {}
    committed = sum(p.get("committed") or 0 for p in lag.get("partitions", []))
    head = Table.grid(padding=(0, 3))
    head.add_row(
        f"[b]events processed[/b] {committed:,}",
        f"[b]lag[/b] {lag.get('total') if lag.get('total') is not None else '?'}",
        f"[b]processed/s[/b] {status['throughput'].get('processed_per_s') or 0:,.0f}",
        f"[b]replay[/b] {'done' if replay_done else 'running'}",
    )
    pops = Table(title=f"segments (model {status['model'].get('version')})", min_width=40)
    pops.add_column("segment", justify="right")
    pops.add_column("users", justify="right")
    for row in status["populations"].get("segments", []):
        pops.add_row(str(row["segment"]), f"{row['users']:,}")
    changes = Table(title="latest segment changes", min_width=50)
    for column in ("user", "from", "to"):
        changes.add_column(column, justify="right")
    for change in status["changes"].get("latest", [])[:8]:
        previous = change.get("previous_segment")
        changes.add_row(
            str(change.get("user_id")),
            "new" if previous is None else str(previous),
            "none" if change.get("segment") is None else str(change["segment"]),
        )
    return Group(head, pops, changes)


def _with_current_populations(
    status: dict[str, Any] | None, url: str, since: float, timeout_s: float = 30.0
) -> dict[str, Any] | None:
    """``status`` with populations counted after ``since`` (seconds since the epoch).

    The page's populations are the last background count, which can predate the end of the
    replay; ``GET /segments`` recounts once its figures are a few seconds old, so it is asked
    until it answers with a count taken after the worker caught up.
    """
    deadline = time.monotonic() + timeout_s
    current = _status(url.replace("/status.json", "/segments"))
    while (current is None or current.get("counted_at", 0) < since) and (
        time.monotonic() < deadline
    ):
        time.sleep(0.5)
        current = _status(url.replace("/status.json", "/segments"))
    if status is None or current is None:
        return status
    return {**status, "populations": {**status["populations"], "segments": current["segments"]}}


def _watch(
    settings: Settings,
    replay: subprocess.Popen[bytes],
    worker: subprocess.Popen[bytes] | None = None,
    log: Path | None = None,
) -> None:
    """Live panel until the replay has finished and the worker has caught up.

    Raises:
        ServiceError: the replay failed, or the ``worker`` stopped (its ``log`` named).
    """
    from rich.live import Live

    url = f"http://{settings.http_host}:{settings.http_port}/status.json"
    caught_up_since: float | None = None
    caught_up_wall = 0.0
    with Live(_panel(None, False), refresh_per_second=2) as live:
        while True:
            status = _status(url)
            done = replay.poll() is not None
            live.update(_panel(status, done))
            if done and replay.returncode != 0:
                raise ServiceError(f"the replay failed with exit {replay.returncode}")
            if worker is not None and worker.poll() is not None:
                raise ServiceError(
                    f"the worker stopped with exit {worker.returncode}: see {log or 'its log'}"
                )
            lag = (status or {}).get("lag") or {}
            caught_up = done and lag.get("total") == 0 and not lag.get("missing_topics")
            if caught_up:
                # Two quiet readings in a row: the worker has really drained its input.
                if caught_up_since is not None and time.monotonic() - caught_up_since > 2:
                    final = _with_current_populations(status, url, caught_up_wall)
                    live.update(_panel(final, True))
                    return
                if caught_up_since is None:
                    caught_up_since, caught_up_wall = time.monotonic(), time.time()
            else:
                caught_up_since = None
            time.sleep(0.5)


def _stop(process: subprocess.Popen[bytes] | None, name: str) -> None:
    if process is None or process.poll() is not None:
        return
    print(f"   stopping the {name}", flush=True)
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def run_demo(settings: Settings, args: argparse.Namespace | None = None) -> int:
    """Run the demo; returns 0 when the stream's segments equal the batch's for every user."""
    users = args.users if args else 20_000
    rate = args.rate if args else None
    products = Path(args.products) if args and args.products else SHARED_CATALOGUE
    work = settings.data_dir.resolve() / "demo"
    data, models = work / "data", work / "models"
    # Here, not at the top: parsing `segstream demo` must not import the stack's clients.
    from segstream.services.stack import Stack

    stack = Stack(settings, load_stack_settings())
    worker: subprocess.Popen[bytes] | None = None
    replay: subprocess.Popen[bytes] | None = None
    started: dict[str, float | None] = {}
    try:
        t0 = _step("starting Kafka and Redis")
        started = stack.up()
        for status in stack.status():
            print(f"   {status.name:6} {status.address}")
        demo = _demo_settings(settings, stack, models)
        env = as_environment(demo, os.environ)
        _reset_namespace(demo)
        print(f"   ready in {time.perf_counter() - t0:.1f} s")

        _step(f"generating {users:,} thelook-shaped users")
        extra = ["--products", str(products)] if products.exists() else []
        _run(env, "generate", "--out", str(data), "--users", str(users), *extra)

        _step("training: features SQL -> scale -> PCA -> k-means (k at the elbow)")
        _run(env, "train", "--data", str(data), "--out", str(models), "--no-align")

        _step("starting the streaming worker")
        worker = _start_worker(env, work, settings)

        _step("replaying the dataset's users and orders through Kafka")
        replay_args = ["replay", "--data", str(data)] + (["--rate", str(rate)] if rate else [])
        replay = _start(env, work / "replay.log", *replay_args)
        _watch(demo, replay, worker, work / "worker.log")

        assign = ["assign", "--model", str(models / "current"), "--data", str(data),
                  "--out", str(work / "assigned.parquet")]  # fmt: skip
        if demo.drift == "off":
            _step("batch vs stream: does every user's streamed segment equal `segstream assign`?")
        else:
            _step(
                "batch vs stream: does every user's streamed segment equal `segstream assign "
                "--with-drift --epoch E`, E the drift epoch stored with them?"
            )
            assign += ["--with-drift", *_epoch_arguments(demo)]
        _run(env, *assign)
        return _report_parity(demo, work / "assigned.parquet")
    finally:
        _step("stopping everything the demo started")
        _stop(replay, "replay")
        _stop(worker, "worker")
        if started.get("kafka") is not None:
            stack.kafka.stop()
        if started.get("redis") is not None:
            stack.redis.stop()
        print("   done", flush=True)


def _epoch_arguments(settings: Settings) -> list[str]:
    """``--epoch E`` for epoch 0 and every drift epoch Redis keeps for the current model."""
    import asyncio

    from segstream.stream.clients.redis import redis_client
    from segstream.stream.drift.shared import drift_store
    from segstream.stream.state.keys import state_prefix
    from segstream.training.artifact import load_model

    version = load_model(settings.model_dir / "current").version

    async def read() -> list[int]:
        client = redis_client(settings)
        try:
            return await drift_store(settings, client, state_prefix(settings)).epochs(version)
        finally:
            await client.aclose()

    kept = asyncio.run(read())
    print(f"   {len(kept)} drift epochs kept, plus epoch 0 (the trained centres)")
    return [arg for epoch in [0, *kept] for arg in ("--epoch", str(epoch))]


def _report_parity(settings: Settings, assigned_path: Path) -> int:
    import pandas as pd

    from segstream.stream.lifecycle.verify import compare_with_batch
    from segstream.training.artifact import load_model

    model = load_model(settings.model_dir / "current")
    report = compare_with_batch(settings, pd.read_parquet(assigned_path), model.version)
    print(
        f"   {report.users:,} users: {report.matches:,} equal, {report.mismatched} different "
        f"segment, {report.missing} missing, {report.other_model} under another model"
        + (
            f", {report.other_epoch} at a drift epoch no longer kept"
            if settings.drift != "off"
            else ""
        )
    )
    for user_id, batch, stream in report.examples:
        print(f"   user {user_id}: batch segment {batch}, stream segment {stream}")
    return 0 if report.ok else 1
