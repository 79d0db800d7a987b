"""``segstream deliver``: POST segment changes to the configured webhooks (docs/delivery.md)."""

from __future__ import annotations

import argparse
import asyncio
import json
from typing import TypeAlias

from segstream.errors import ConfigError
from segstream.settings import load_settings

__all__ = ["add_commands"]

SubParsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


def _deliver(args: argparse.Namespace) -> int:
    from segstream.stream.delivery.config import load_delivery_config

    settings = load_settings()
    # The config is checked before any connection: a bad file is reported at once.
    config = load_delivery_config(settings.delivery_config)
    if args.check:
        names = ", ".join(d.name for d in config.destinations)
        print(f"{config.path}: {len(config.destinations)} destination(s) valid: {names}")
        return 0
    if args.backfill is not None and args.redrive:
        raise ConfigError("give --backfill DESTINATION or --redrive, not both")
    if args.backfill is not None:
        from segstream.stream.delivery.backfill import backfill

        report = asyncio.run(backfill(settings, config.named(args.backfill)))
        print(
            json.dumps(
                {
                    "destination": args.backfill,
                    "sent": report.sent,
                    "dead_lettered": report.dead_lettered,
                    "offsets": report.offsets,
                }
            )
        )
        return 0 if report.dead_lettered == 0 else 1
    if args.redrive:
        from dataclasses import asdict

        from segstream.stream.delivery.redrive import redrive

        result = asyncio.run(redrive(settings, config))
        print(json.dumps(asdict(result)))
        return 0 if result.dead_lettered == 0 and result.kept == 0 else 1
    from segstream.stream.delivery.process import run_delivery

    asyncio.run(run_delivery(settings, config))
    return 0


def add_commands(sub: SubParsers) -> None:
    """Register ``deliver``."""
    p = sub.add_parser(
        "deliver",
        help="POST segment changes to the webhooks of SEGSTREAM_DELIVERY_CONFIG",
        description=(
            "Consume segment-changes and POST them, in order per user, signed, with retries, "
            "to every destination of the TOML file SEGSTREAM_DELIVERY_CONFIG (docs/delivery.md)."
        ),
    )
    p.add_argument(
        "--backfill",
        metavar="DESTINATION",
        help="send every user's current segment to DESTINATION, then hand over to the live "
        "stream (run it before any deliver process serves DESTINATION: it refuses otherwise, "
        "saying how to add a destination to running processes); prints a JSON report",
    )
    p.add_argument(
        "--redrive",
        action="store_true",
        help="send the delivery dead letters again; prints a JSON report",
    )
    p.add_argument("--check", action="store_true", help="validate the config file and exit")
    p.set_defaults(handler=_deliver)
