"""``segstream reassign | drift``: the model lifecycle's verbs (see ``docs/lifecycle.md``)."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING, Any, TypeAlias

from segstream.cli.deadline import KAFKA, REDIS, CommandDeadline
from segstream.cli.main import add_verbs
from segstream.errors import ConfigError
from segstream.settings import Settings, load_settings

if TYPE_CHECKING:  # imported where used: a verb loads only what it needs
    import redis.asyncio as aioredis

    from segstream.stream.drift.shared import DriftStore
    from segstream.training.artifact import Model

__all__ = ["add_commands"]

SubParsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


def _reassign(args: argparse.Namespace) -> int:
    from rich.progress import MofNCompleteColumn, Progress, TimeRemainingColumn

    from segstream.stream.lifecycle.reassign import reassign_all

    if args.batch_size < 1:
        raise ConfigError("--batch-size must be at least 1")
    settings = load_settings()
    columns = (*Progress.get_default_columns()[:-1], MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, transient=False, disable=args.json) as progress:
        task = progress.add_task("re-assigning users", total=None)
        deadline = CommandDeadline(settings, "re-assigning users", REDIS, KAFKA)
        report = deadline.run(
            reassign_all(
                settings,
                batch_size=args.batch_size,
                on_start=deadline.tracking(lambda users: progress.update(task, total=users)),
                progress=deadline.tracking(lambda n: progress.advance(task, n)),
            )
        )
    if args.json:
        print(json.dumps(report.as_dict(), indent=1))
        return 0
    print(
        f"model {report.model_version}: {report.users} users in {report.seconds:.1f} s, "
        f"{report.assignable} assignable"
    )
    print(f"  segment changed      {report.changed} (one segment-change event each)")
    stored = "model version" + (" and drift epoch" if settings.drift != "off" else "")
    print(f"  same segment         {report.version_only} ({stored} updated, no event)")
    print(f"  already up to date   {report.unchanged}")
    print(f"  published            {report.published} change events (pending ones included)")
    if report.conflicts:
        print(
            f"  left to the workers  {report.conflicts} (a worker updated them from an event "
            "meanwhile, features or segment, and its write stands; run again once every "
            "worker uses this model)"
        )
    return 0


def _redis_named(settings: Settings) -> str:
    return f"Redis at {settings.redis_display} (SEGSTREAM_REDIS_URL)"


def _drift_store(settings: Settings) -> tuple[Model, aioredis.Redis, DriftStore]:
    from segstream.stream.clients.redis import redis_client
    from segstream.stream.drift.shared import drift_store
    from segstream.stream.state.keys import state_prefix
    from segstream.training.artifact import load_model

    model = load_model(settings.model_dir)
    client = redis_client(settings)
    return model, client, drift_store(settings, client, state_prefix(settings))


def _drift_show(args: argparse.Namespace) -> int:
    from segstream.stream.clients.retry import redis_call
    from segstream.stream.drift.centroids import drift_distances

    settings = load_settings()
    model, client, store = _drift_store(settings)

    async def read() -> tuple[Any, Any, list[int]]:
        try:
            return (
                await store.read(model),
                await store.contributions(model.version),
                await store.epochs(model.version),
            )
        finally:
            await client.aclose()

    deadline = CommandDeadline(settings, "reading the drift state", REDIS)
    state, contributions, epochs = deadline.run(
        redis_call(read, what=f"reading the drift state from {_redis_named(settings)}",
                   attempts=3)
    )  # fmt: skip
    distances = drift_distances(state.centers, model.centers)
    document = {
        "model_version": model.version,
        "drift": settings.drift,
        "state_version": state.version,
        "points_learned": state.learned,
        "drift_epoch": state.epoch.number,
        "epochs_kept": epochs,
        "max_distance": settings.drift_max_distance,
        "segments": [
            {
                "segment": s,
                "trained": model.centers[s].tolist(),
                "current": state.centers[s].tolist(),
                "distance": float(distances[s]),
            }
            for s in range(model.k)
        ],
        "writers": {c.writer: c.points for c in contributions},
    }
    if args.json:
        print(json.dumps(document, indent=1))
        return 0
    print(
        f"model {model.version} (SEGSTREAM_DRIFT={settings.drift}): shared centroids version "
        f"{state.version}, {state.learned} points learned, max distance "
        f"{settings.drift_max_distance}"
    )
    kept = f"epochs {epochs[0]}-{epochs[-1]} kept" if epochs else "no epoch published yet"
    print(
        f"  workers assign with drift epoch {state.epoch.number} ({kept}; `segstream assign "
        "--with-drift --epoch E` reproduces epoch E)"
    )
    for row in document["segments"]:
        trained, current = row["trained"], row["current"]
        print(
            f"  segment {row['segment']}: trained ({trained[0]:+.4f}, {trained[1]:+.4f}) "
            f"now ({current[0]:+.4f}, {current[1]:+.4f}) distance {row['distance']:.4f}"
        )
    if contributions:
        shown = ", ".join(f"{c.writer} {c.points}" for c in contributions)
        print(f"  points by worker process: {shown}")
    return 0


def _drift_reset(args: argparse.Namespace) -> int:
    from segstream.stream.clients.retry import redis_call

    settings = load_settings()
    model, client, store = _drift_store(settings)
    version = args.model_version or model.version

    async def reset() -> bool:
        try:
            return await store.reset(version)
        finally:
            await client.aclose()

    deadline = CommandDeadline(settings, "resetting the drift state", REDIS)
    existed = deadline.run(
        redis_call(reset, what=f"resetting the drift state in {_redis_named(settings)}",
                   attempts=3)
    )  # fmt: skip
    if existed:
        print(f"drift of model {version} reset: workers use its trained centres within 1 s")
    else:
        print(f"model {version} had not drifted")
    return 0


def add_commands(sub: SubParsers) -> None:
    """Register ``reassign`` and ``drift show|reset``."""
    p = sub.add_parser(
        "reassign",
        help="re-assign every user in Redis with the current model (safe while workers run)",
    )
    p.add_argument("--batch-size", type=int, default=1000, metavar="N", help="users per batch")
    p.add_argument("--json", action="store_true", help="print the figures as JSON, no progress")
    p.set_defaults(handler=_reassign)

    drift = sub.add_parser("drift", help="the shared drifted centroids (SEGSTREAM_DRIFT=river)")
    verbs = add_verbs(drift, "drift_command", "ACTION")
    p = verbs.add_parser("show", help="the current model's centres: trained, now, distance")
    p.add_argument("--json", action="store_true", help="print one JSON document")
    p.set_defaults(handler=_drift_show)
    p = verbs.add_parser("reset", help="forget a model version's drift (back to trained centres)")
    p.add_argument("--model-version", metavar="VERSION", help="default: the current model's")
    p.set_defaults(handler=_drift_reset)
