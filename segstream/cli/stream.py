"""``segstream worker | replay | segment | bench stream``: the online half's verbs."""

from __future__ import annotations

import argparse
import asyncio
import json
from typing import Any

from segstream.errors import ConfigError, StateError
from segstream.settings import load_settings
from segstream.stream.clients.redis import redis_client

__all__ = ["add_commands"]

SubParsers = argparse._SubParsersAction  # type: ignore[type-arg]


def _worker(args: argparse.Namespace) -> int:
    from segstream.stream.service import create_service
    from segstream.stream.worker.run import run_worker

    return run_worker(load_settings(), create_service)


def _replay(args: argparse.Namespace) -> int:
    from rich.progress import MofNCompleteColumn, Progress, TimeRemainingColumn

    from segstream.stream.kafka.topics import ensure_topics
    from segstream.stream.lifecycle.replay import publish_events, read_replay_plan
    from segstream.training.data import DataSource

    settings = load_settings()
    if args.rate is not None and args.rate <= 0:
        raise ConfigError("--rate must be positive")
    if args.limit is not None and args.limit < 0:
        raise ConfigError("--limit must not be negative")
    source = DataSource.from_args(args.data, args.db)
    plan = read_replay_plan(source, args.limit)
    if plan.orders_without_items:
        print(f"skipping {plan.orders_without_items} orders without items (not sendable)")
    asyncio.run(ensure_topics(settings))
    topics = {"users": settings.topic_users, "orders": settings.topic_orders}
    columns = (*Progress.get_default_columns()[:-1], MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, transient=False) as progress:
        task = progress.add_task("replaying events", total=len(plan.events))
        seconds = asyncio.run(
            publish_events(
                plan.events,
                settings=settings,
                topics=topics,
                rate=args.rate,
                progress=lambda n: progress.advance(task, n),
            )
        )
    rate = len(plan.events) / seconds if seconds > 0 else float("inf")
    print(f"published {len(plan.events)} events in {seconds:.1f} s ({rate:,.0f} events/s)")
    return 0


def _segment(args: argparse.Namespace) -> int:

    from segstream.stream.clients.retry import REDIS_TRANSIENT, retry
    from segstream.stream.state.codec import describe_user
    from segstream.stream.state.keys import state_prefix
    from segstream.stream.state.store import RedisState

    settings = load_settings()

    async def read() -> tuple[dict[bytes, bytes], list[bytes]]:
        client = redis_client(settings)
        try:
            return await RedisState(client, state_prefix(settings)).read_user(args.user_id)
        finally:
            await client.aclose()

    fields, pending = asyncio.run(
        retry(
            read,
            what=f"reading user {args.user_id} from {settings.redis_url}",
            transient=REDIS_TRANSIENT,
            attempts=3,
            error=StateError,
        )
    )
    if not fields and not pending:
        print(f"user {args.user_id}: no state in Redis (app {settings.app_id})")
        return 1
    described = describe_user(args.user_id, fields, pending)
    if args.json:
        print(json.dumps(described, ensure_ascii=False, indent=1))
    else:
        _print_user(described)
    return 0


def _print_user(user: dict[str, Any]) -> None:
    print(f"user {user['user_id']}")
    model, since = user["model_version"], user["updated_at"]
    print(f"  segment        {user['segment']}  (model {model}, since {since})")
    print(f"  assignable     {user['assignable']}")
    for name, value in user["features"].items():
        print(f"  {name:22} {value}")
    print(f"  orders counted {', '.join(map(str, user['orders'])) or '-'}")
    for title, counts in (
        ("brands", user["brand_counts"]),
        ("categories", user["category_counts"]),
    ):
        shown = ", ".join(f"{name} x{count}" for name, count in counts.items())
        print(f"  {title:14} {shown or '-'}")
    for fence, offset in user["fences"].items():
        print(f"  last offset    {fence}: {offset}")
    print(f"  pending        {len(user['pending'])} change(s) not yet acknowledged by the broker")


def add_commands(sub: SubParsers) -> None:
    """Register worker, replay, segment and ``bench stream``."""
    p = sub.add_parser(
        "worker",
        help="run the streaming worker (workers with the same SEGSTREAM_APP_ID share the work)",
    )
    p.set_defaults(handler=_worker)

    p = sub.add_parser("replay", help="publish a dataset's users and orders as input events")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", metavar="DIR", help="directory of thelook Parquet/CSV tables")
    source.add_argument("--db", metavar="URL", help="SQLAlchemy URL of a thelook database")
    p.add_argument("--rate", type=float, metavar="N", help="at most N events a second")
    p.add_argument("--limit", type=int, metavar="N", help="only the first N events")
    p.set_defaults(handler=_replay)

    p = sub.add_parser("segment", help="print a user's state as the worker keeps it in Redis")
    p.add_argument("user_id", type=int, metavar="USER_ID")
    p.add_argument("--json", action="store_true", help="print one JSON document")
    p.set_defaults(handler=_segment)
