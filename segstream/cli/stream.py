"""``segstream worker | replay | segment | forget | bench stream``: the online half's verbs."""

from __future__ import annotations

import argparse
import json
from typing import Any, TypeAlias

from segstream.cli.deadline import KAFKA, REDIS, CommandDeadline
from segstream.errors import ConfigError
from segstream.settings import load_settings

__all__ = ["add_commands", "user_text"]

SubParsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


def _worker(args: argparse.Namespace) -> int:
    from segstream.stream.http.front import supervisor_http
    from segstream.stream.service import create_service
    from segstream.stream.worker.supervisor import run_workers

    overrides = {} if args.processes is None else {"worker_processes": args.processes}
    settings = load_settings(**overrides)
    return run_workers(settings, create_service, front=supervisor_http(settings))


def _processes(text: str) -> int:
    """argparse type of ``--processes``: a whole number from 1 to 1024."""
    if not (text.isascii() and text.isdigit() and 1 <= int(text) <= 1024):
        raise argparse.ArgumentTypeError(f"a number of processes from 1 to 1024, got {text!r}")
    return int(text)


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
    deadline = CommandDeadline(settings, "replaying events", KAFKA)
    if args.rate is not None:
        deadline.seconds += 1 / args.rate  # a paced replay waits that long between events
    deadline.run(ensure_topics(settings))
    topics = {"users": settings.topic_users, "orders": settings.topic_orders}
    columns = (*Progress.get_default_columns()[:-1], MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, transient=False) as progress:
        task = progress.add_task("replaying events", total=len(plan.events))
        deadline.progress()
        seconds = deadline.run(
            publish_events(
                plan.events,
                settings=settings,
                topics=topics,
                rate=args.rate,
                progress=deadline.tracking(lambda n: progress.advance(task, n)),
            )
        )
    rate = len(plan.events) / seconds if seconds > 0 else float("inf")
    print(f"published {len(plan.events)} events in {seconds:.1f} s ({rate:,.0f} events/s)")
    return 0


def _segment(args: argparse.Namespace) -> int:
    from segstream.stream.clients.redis import redis_client
    from segstream.stream.clients.retry import redis_call
    from segstream.stream.state.codec import describe_user
    from segstream.stream.state.keys import state_prefix
    from segstream.stream.state.store import RedisState

    settings = load_settings()

    async def read() -> tuple[dict[bytes, bytes], list[bytes]]:
        client = redis_client(settings)
        try:
            return await RedisState(
                client, state_prefix(settings), cluster=settings.redis_cluster
            ).read_user(args.user_id)
        finally:
            await client.aclose()

    deadline = CommandDeadline(settings, f"reading user {args.user_id}", REDIS)
    fields, pending = deadline.run(
        redis_call(
            read,
            what=f"reading user {args.user_id} from Redis at {settings.redis_display} "
            "(SEGSTREAM_REDIS_URL)",
            attempts=3,
        )
    )
    if not fields and not pending:
        message = (
            f"user {args.user_id} is unknown: no state in Redis for app {settings.app_id} "
            "(SEGSTREAM_APP_ID); the stream has never seen them, or they left (segstream "
            "forget, or their users row deleted) and have had no event since"
        )
        if args.json:
            print(json.dumps({"user_id": args.user_id, "error": message}))
        else:
            print(message)
        return 1
    described = describe_user(args.user_id, fields, pending)
    if args.json:
        print(json.dumps(described, ensure_ascii=False, indent=1))
    else:
        print(user_text(described))
    return 0


def _user_id(text: str) -> int:
    """argparse type of a user id: an integer from 1 to 2**53-1 (the input table's ``MAX_ID``)."""
    from segstream.training.inputs import MAX_ID

    if not (text.isascii() and text.isdigit() and 1 <= int(text) <= MAX_ID):
        raise argparse.ArgumentTypeError(
            f"a user id is an integer from 1 to {MAX_ID}, got {text!r}"
        )
    return int(text)


def _forget(args: argparse.Namespace) -> int:
    from segstream.stream.kafka.forget import request_leaves

    settings = load_settings()
    user_ids = list(dict.fromkeys(args.user_ids))
    deadline = CommandDeadline(settings, "sending the leave requests", KAFKA)
    requests = deadline.run(request_leaves(settings, user_ids))
    if args.json:
        print(json.dumps([
            {"user_id": r.user_id, "topic": r.topic, "partition": r.partition,
             "offset": r.offset}
            for r in requests
        ]))  # fmt: skip
        return 0
    for r in requests:
        print(
            f"user {r.user_id}: leave queued as a tombstone on {r.topic}[{r.partition}] at "
            f"offset {r.offset}; the worker owning that partition erases every key of theirs, "
            "publishes their leave event and a user-segments tombstone"
        )
    return 0


def user_text(user: dict[str, Any]) -> str:
    """``segstream segment``'s readable form of :func:`~segstream.stream.state.codec
    .describe_user`'s document: one ``name  value`` line per fact, nothing printed as None."""
    if user["segment"] is None:
        missing = [
            name
            for name, value in user["features"].items()
            if value is None or (name == "total_orders" and not value)  # no order counted yet
        ]
        why = f"missing {', '.join(missing)}" if missing else "no model has assigned them yet"
        # A user with changes queued had a segment: they lost a feature and were unassigned.
        segment = f"none ({why}; unassigned)" if user.get("changes") else f"none yet ({why})"
    else:
        segment = f"{user['segment']}  (model {user['model_version']}"
        if user.get("drift_epoch") is not None:
            segment += f", drift epoch {user['drift_epoch']}"
        segment += f", since {user['updated_at']})" if user["updated_at"] else ")"
    orders = user["orders"]
    counted = f"{len(orders)}" + (f" (ids {', '.join(map(str, orders))})" if orders else "")
    lines = [
        f"user {user['user_id']}",
        f"  segment        {segment}",
        f"  assignable     {'yes' if user['assignable'] else 'no'}",
        *(
            f"  {name:22} {'-' if value is None else value}"
            for name, value in user["features"].items()
        ),
        f"  orders counted {counted}",
    ]
    for title, counts in (
        ("brands", user["brand_counts"]),
        ("categories", user["category_counts"]),
    ):
        shown = ", ".join(f"{name} x{count}" for name, count in counts.items())
        lines.append(f"  {title:14} {shown or '-'}")
    lines += [f"  last offset    {fence}: {offset}" for fence, offset in user["fences"].items()]
    lines.append(
        f"  pending        {len(user['pending'])} change(s) not yet acknowledged by the broker"
    )
    return "\n".join(lines)


def add_commands(sub: SubParsers) -> None:
    """Register worker, replay, segment, forget and ``bench stream``."""
    p = sub.add_parser(
        "worker",
        help="run the streaming worker (workers with the same SEGSTREAM_APP_ID share the work)",
        description="Run the streaming worker in this process until Ctrl-C or SIGTERM: it "
        "consumes the SEGSTREAM_TOPIC_USERS and SEGSTREAM_TOPIC_ORDERS topics, keeps each "
        "user's features in Redis (SEGSTREAM_REDIS_URL), assigns segments with the model at "
        "SEGSTREAM_MODEL_DIR/current (reloaded when it changes) and publishes every segment "
        "change. It first checks that the model loads, that Redis answers and that the HTTP "
        "port is free, and creates missing topics. Workers with the same SEGSTREAM_APP_ID form "
        "one consumer group and share the partitions; each serves its HTTP side (API, "
        "/metrics, status page) on SEGSTREAM_HTTP_HOST:SEGSTREAM_HTTP_PORT, so a second "
        "worker on one host needs another port, or SEGSTREAM_HTTP_PORT=0 for none. With "
        "--processes N (N > 1) a supervisor runs N worker processes in the group on this "
        "host, serves the one HTTP side (merged /metrics) and restarts a process that dies. "
        "All settings: segstream config.",
    )
    p.add_argument(
        "--processes",
        type=_processes,
        metavar="N",
        help="worker processes to run in one group under one supervisor (default: "
        "SEGSTREAM_WORKER_PROCESSES, else the usable cores capped by the input partitions); "
        "1 runs the worker in this process",
    )
    p.set_defaults(handler=_worker)

    p = sub.add_parser("replay", help="publish a dataset's users and orders as input events")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", metavar="DIR", help="directory of thelook Parquet/CSV tables")
    source.add_argument("--db", metavar="URL", help="SQLAlchemy URL of a thelook database")
    p.add_argument("--rate", type=float, metavar="N", help="at most N events a second")
    p.add_argument("--limit", type=int, metavar="N", help="only the first N events")
    p.set_defaults(handler=_replay)

    p = sub.add_parser(
        "segment",
        help="print a user's state as the worker keeps it in Redis",
        description="Print a user's segment, features, counted orders and offsets as the "
        "workers keep them in Redis (SEGSTREAM_REDIS_URL, app SEGSTREAM_APP_ID). Exit 1 "
        "when the user is unknown.",
    )
    p.add_argument("user_id", type=int, metavar="USER_ID", help="the user's id")
    p.add_argument(
        "--json",
        action="store_true",
        help='print one JSON document ({"user_id", "error"} for an unknown user)',
    )
    p.set_defaults(handler=_segment)

    p = sub.add_parser(
        "forget",
        help="make users leave: every key of theirs erased, a leave event published",
        description="Send a tombstone (a null value keyed by the user) to SEGSTREAM_TOPIC_USERS "
        "for each USER_ID. The worker owning the user's partition applies it in order with "
        "their other events: it erases every key segstream holds for them (state, outbox, "
        "population membership), publishes a leave event on SEGSTREAM_TOPIC_SEGMENT_CHANGES "
        "(schemas/segment_left.json) and a tombstone on SEGSTREAM_TOPIC_USER_SEGMENTS. A later "
        "event of the user starts them afresh. Returns once the broker acknowledged the "
        "tombstones; the same as POST /users/{user_id}/forget. With SEGSTREAM_SOURCE=cdc, "
        "delete the users row instead (refused here).",
    )
    p.add_argument("user_ids", type=_user_id, nargs="+", metavar="USER_ID", help="a user's id")
    p.add_argument("--json", action="store_true", help="print where each tombstone landed")
    p.set_defaults(handler=_forget)
