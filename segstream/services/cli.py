"""``segstream services up | down | status`` (filled in by the local-stack module)."""

from __future__ import annotations

import argparse


def add_commands(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Register the ``services`` verb."""
    parser = sub.add_parser("services", help="start, stop or inspect the local Kafka and Redis")
    parser.set_defaults(handler=lambda args: parser.print_help())
