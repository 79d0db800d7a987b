"""``segstream lag | api | populations``: the operators' verbs.

``lag`` reads the worker group's position from Kafka itself (so it answers while every worker
is down) and prints one row per partition; ``api`` serves the HTTP API, metrics and status
page standalone, from Redis and the model directory; ``populations`` prints the maintained
segment populations and, with ``--recount``, rebuilds them from the user hashes.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from typing import TYPE_CHECKING, TypeAlias

from segstream.cli.deadline import KAFKA, REDIS, CommandDeadline
from segstream.settings import load_settings

if TYPE_CHECKING:  # imported where used: parsing a command line loads neither
    from rich.table import Table

    from segstream.stream.kafka.lag import LagSnapshot

__all__ = ["add_commands", "lag_problems", "lag_table"]

SubParsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


def _seconds(value: float | None) -> str:
    return "unknown" if value is None else f"{value:.1f}"


def lag_table(snapshot: LagSnapshot) -> Table:
    """The per-partition table ``segstream lag`` prints, with a total row."""
    from rich.table import Table

    table = Table(title=f"consumer group {snapshot.group}")
    widest = max((len(p.topic) for p in snapshot.partitions), default=5)
    # The topic column never wraps or truncates: operators and scripts grep for the name.
    table.add_column("topic", no_wrap=True, min_width=widest)
    for name in ("partition", "committed", "end", "lag", "seconds behind"):
        table.add_column(name, justify="right")
    for p in snapshot.partitions:
        style = "bold red" if p.lag else None
        committed = "none" if p.committed is None else str(p.committed)
        table.add_row(
            p.topic,
            str(p.partition),
            committed,
            str(p.end),
            str(p.lag),
            _seconds(p.seconds_behind),
            style=style,
        )
    table.add_section()
    table.add_row(
        "total", "", "", "", str(snapshot.total_lag), _seconds(snapshot.max_seconds_behind)
    )
    return table


def _lag(args: argparse.Namespace) -> int:
    from rich.console import Console

    from segstream.stream.kafka.lag import read_lag

    settings = load_settings()
    group = args.group or settings.app_id
    topics = args.topic or [settings.topic_users, settings.topic_orders]
    deadline = CommandDeadline(settings, f"reading the lag of group {group!r}", KAFKA)
    snapshot = deadline.run(read_lag(settings, group, topics))
    if args.json:
        document = {
            "group": snapshot.group,
            "group_known": snapshot.group_known,
            "taken_at": snapshot.taken_at,
            "total_lag": snapshot.total_lag,
            "max_seconds_behind": snapshot.max_seconds_behind,
            "missing_topics": list(snapshot.missing_topics),
            "partitions": [asdict(p) for p in snapshot.partitions],
        }
        print(json.dumps(document))
    else:
        Console().print(lag_table(snapshot))
    problems = lag_problems(snapshot, group_option=args.group is not None)
    for problem in problems:
        print(f"segstream lag: {problem}", file=sys.stderr)
    return 1 if problems else 0


def lag_problems(snapshot: LagSnapshot, *, group_option: bool) -> list[str]:
    """Why a lag reading does not describe what was asked for, one sentence each (empty when
    it does): topics that do not exist, a group the cluster does not know."""
    problems = []
    if snapshot.missing_topics:
        problems.append(
            f"topic(s) {', '.join(snapshot.missing_topics)} do not exist on the cluster "
            "(--topic, or SEGSTREAM_TOPIC_USERS and SEGSTREAM_TOPIC_ORDERS)"
        )
    if not snapshot.group_known:
        where = "--group" if group_option else "SEGSTREAM_APP_ID, or --group"
        problems.append(
            f"consumer group {snapshot.group!r} is unknown to the cluster: it has no member "
            f"and no committed offset (check {where}; a new group is known once a worker "
            "has joined it)"
        )
    return problems


def _populations(args: argparse.Namespace) -> int:
    from segstream.stream.clients.redis import redis_client
    from segstream.stream.clients.retry import redis_call
    from segstream.stream.state.keys import state_prefix
    from segstream.stream.state.populations import (
        Populations,
        read_populations,
        recount_populations,
    )

    settings = load_settings()
    prefix = state_prefix(settings)

    async def once() -> Populations:
        client = redis_client(settings)
        try:
            if args.recount:
                # O(users): bounded per page walked, not as a whole.
                return await recount_populations(
                    client, prefix, cluster=settings.redis_cluster, progress=deadline.progress
                )
            return await read_populations(client, prefix, cluster=settings.redis_cluster)
        finally:
            await client.aclose()

    what = "recounting" if args.recount else "reading"
    deadline = CommandDeadline(settings, f"{what} the populations", REDIS)
    populations = deadline.run(
        redis_call(
            once,
            what=f"{'recounting' if args.recount else 'reading'} the populations in Redis at "
            f"{settings.redis_display} (SEGSTREAM_REDIS_URL)",
            attempts=3,
        )
    )
    by_version = {
        version: {str(s): n for s, n in sorted(counts.items())}
        for version, counts in sorted(populations.by_version.items())
    }
    if args.json:
        document = {
            "app_id": settings.app_id,
            "recounted": args.recount,
            "users": populations.users,
            "unassigned": populations.unassigned,
            "by_version": by_version,
            "seconds": populations.duration_s,
        }
        print(json.dumps(document))
        return 0
    action = "recounted from the user hashes" if args.recount else "read"
    print(
        f"app {settings.app_id}: {populations.users} users, {populations.unassigned} not "
        f"assigned yet ({action} in {1000 * populations.duration_s:.1f} ms)"
    )
    for version, counts in by_version.items():
        listed = ", ".join(f"{segment}: {n}" for segment, n in counts.items())
        print(f"  model {version}  {listed}")
    return 0


def _api(args: argparse.Namespace) -> int:
    from segstream.stream.http.server import run_web
    from segstream.stream.service import delivery_groups

    # Through load_settings, so that a bad --port is refused like a bad SEGSTREAM_HTTP_PORT.
    settings = load_settings(**({} if args.port is None else {"http_port": args.port}))
    print(f"segstream api on http://{settings.http_host}:{settings.http_port}/ (Ctrl-C stops)")
    run_web(settings, delivery=delivery_groups(settings))
    return 0


def add_commands(sub: SubParsers) -> None:
    """Register ``lag``, ``api`` and ``populations``."""
    p = sub.add_parser(
        "lag",
        help="per-partition lag of the worker group (messages and seconds), read from Kafka",
        description="Per-partition lag of a consumer group, read from Kafka itself (works "
        "while every worker is down). Exit 0; 1 when a topic does not exist or the cluster "
        "does not know the group; 2 when the broker cannot be reached.",
    )
    p.add_argument("--group", metavar="ID", help="consumer group (default: SEGSTREAM_APP_ID)")
    p.add_argument(
        "--topic",
        action="append",
        metavar="NAME",
        help="a topic of the group, repeatable (default: the users and orders topics)",
    )
    p.add_argument("--json", action="store_true", help="print one JSON document")
    p.set_defaults(handler=_lag)

    p = sub.add_parser(
        "api",
        help="serve the HTTP API, /metrics and the status page (SEGSTREAM_HTTP_HOST/PORT)",
    )
    p.add_argument("--port", type=int, metavar="N", help="override SEGSTREAM_HTTP_PORT")
    p.set_defaults(handler=_api)

    p = sub.add_parser(
        "populations",
        help="users per segment and model version, from the maintained counters in Redis",
        description="Users per segment and model version, read from the population counters "
        "the worker keeps next to each user's state (O(hash slots), not O(users)). "
        "--recount rebuilds the counters from the user hashes (SCAN on every primary): run "
        "it with the workers and reassign stopped, since a user they change meanwhile may be "
        "counted twice or not at all.",
    )
    p.add_argument(
        "--recount",
        action="store_true",
        help="rebuild the counters from the user hashes first (a repair; O(users))",
    )
    p.add_argument("--json", action="store_true", help="print one JSON document")
    p.set_defaults(handler=_populations)
