"""``segstream cdc connector | check`` and ``segstream shop``: change data capture's verbs."""

from __future__ import annotations

import argparse
import json
import signal
import sys
from types import FrameType
from typing import TypeAlias

from segstream.errors import ConfigError, ServiceError
from segstream.settings import load_settings

__all__ = ["add_commands"]

SubParsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"

_MASK = "********"


def _connector(args: argparse.Namespace) -> int:
    from segstream.cdc.connect_api import connector_state, register
    from segstream.cdc.connector import connector_config, database_password

    settings = load_settings()
    if not args.register:
        # Printing needs no password: a deployment fills in its own.
        config = connector_config(settings, _MASK)
        print(json.dumps({"name": settings.cdc_connector_name, "config": config}, indent=2))
        return 0
    config = connector_config(settings, database_password(settings))
    changed = register(settings, config)
    what = "registered" if changed else "already registered with this configuration"
    print(f"connector {settings.cdc_connector_name} {what} at {settings.connect_url}")
    state = connector_state(settings, wait_s=args.wait)
    if state is None:
        raise ServiceError(f"Kafka Connect lost connector {settings.cdc_connector_name}")
    print(f"state: connector {state.connector}, tasks {', '.join(state.tasks) or 'none yet'}")
    if "FAILED" in (state.connector, *state.tasks):
        first = "\n".join(state.trace.splitlines()[:6])
        raise ServiceError(f"connector {settings.cdc_connector_name} failed:\n{first}")
    return 0


def _check(args: argparse.Namespace) -> int:
    from segstream.cdc.fit import fit_problems

    settings = load_settings()
    problems = fit_problems(settings, check_connect=not args.no_connect)
    if problems:
        print("the change-data-capture topics and tables do not fit segstream:")
        for problem in problems:
            print(f"  - {problem}")
        return 1
    print(
        f"fit: topics {settings.cdc_topic_prefix}.{settings.cdc_schema}.* keyed by user and "
        "co-partitioned, tables REPLICA IDENTITY FULL"
        + ("" if args.no_connect else f", connector {settings.cdc_connector_name} as needed")
    )
    return 0


def _shop(args: argparse.Namespace) -> int:
    from segstream.cdc.shop import Shop, Step
    from segstream.training.postgres_sink import connect

    if args.rate <= 0:
        raise ConfigError("--rate must be positive (changes a second)")
    if args.duration is not None and args.duration <= 0:
        raise ConfigError("--duration must be positive (seconds)")
    if args.steps is not None and args.steps < 0:
        raise ConfigError("--steps must not be negative")
    stopping = False

    def stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True  # the step under way finishes its transaction first

    previous = signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)

    def report(step: Step) -> None:
        if not args.quiet:
            print(f"{step.kind:13} {step.detail}", flush=True)

    try:
        with connect(args.db, autocommit=True) as conn:
            shop = Shop(conn, seed=args.seed, schema=load_settings().cdc_schema)
            counts = shop.run(
                args.rate,
                duration_s=args.duration,
                steps=args.steps,
                report=report,
                stop=lambda: stopping,
            )
    finally:
        signal.signal(signal.SIGINT, previous)
    total = sum(counts.values())
    summary = ", ".join(f"{kind} {n}" for kind, n in sorted(counts.items()))
    print(f"{total} change(s): {summary or 'none'}", file=sys.stderr if args.quiet else sys.stdout)
    return 0


def add_commands(sub: SubParsers) -> None:
    """Register ``cdc`` (connector, check) and ``shop``."""
    from segstream.cli.main import add_verbs

    cdc = sub.add_parser(
        "cdc",
        help="change data capture from PostgreSQL with Debezium: the connector, the fit check",
        description="The Debezium PostgreSQL connector segstream reads, and whether the topics "
        "and tables fit the stream (docs/cdc.md).",
    )
    verbs = add_verbs(cdc, "cdc_command", "ACTION")
    p = verbs.add_parser(
        "connector",
        help="print the connector configuration segstream needs; --register puts it in Connect",
        description="Print the one Debezium configuration segstream needs (the password "
        "masked), from SEGSTREAM_CDC_* settings. --register validates it with Kafka Connect "
        "and puts it at SEGSTREAM_CONNECT_URL (idempotent), then waits for it to run.",
    )
    p.add_argument("--register", action="store_true", help="put it in Kafka Connect")
    p.add_argument(
        "--wait",
        type=float,
        default=60.0,
        metavar="S",
        help="--register: seconds to wait for the connector and its task to run",
    )
    p.set_defaults(handler=_connector)
    p = verbs.add_parser(
        "check",
        help="refuse, naming the setting, when the change topics or tables do not fit",
        description='Check the change topics (exist, keys {"user_id": N}, equal partition '
        "counts), the tables (REPLICA IDENTITY FULL) and the registered connector. Exit 1 "
        "with each problem when they do not fit.",
    )
    p.add_argument(
        "--no-connect",
        action="store_true",
        help="do not ask Kafka Connect for the connector's configuration",
    )
    p.set_defaults(handler=_check)

    p = sub.add_parser(
        "shop",
        help="run a live, seeded mix of shop changes on the database (for CDC)",
        description="New users and orders, extra and deleted lines, orders moved between "
        "users, profile edits, users deleted, product corrections, each one transaction, at "
        "--rate a second, until --duration, --steps or Ctrl-C. The tables come from "
        "`segstream generate --db`.",
    )
    p.add_argument("--db", required=True, metavar="URL", help="the shop's PostgreSQL database")
    p.add_argument("--rate", type=float, default=5.0, metavar="N", help="changes a second")
    p.add_argument("--seed", type=int, default=0, metavar="S", help="random seed")
    p.add_argument("--duration", type=float, metavar="S", help="stop after S seconds")
    p.add_argument("--steps", type=int, metavar="N", help="stop after N changes")
    p.add_argument("--quiet", action="store_true", help="print only the summary")
    p.set_defaults(handler=_shop)
