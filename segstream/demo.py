"""``segstream demo``: the whole product end to end on this machine, then a clean stop.

It starts the local stack only if it is not already running, and stops exactly what it
started, also on Ctrl-C or an error.
"""

from __future__ import annotations

import argparse

from segstream.services.check import round_trip
from segstream.services.stack import Stack
from segstream.settings import Settings, load_settings

__all__ = ["add_commands", "run_demo"]


def add_commands(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Register the ``demo`` verb."""
    parser = sub.add_parser("demo", help="run the product end to end on the local stack")
    parser.set_defaults(handler=lambda args: run_demo(load_settings()))


def run_demo(settings: Settings) -> int:
    """Services up, a smoke round trip through Kafka and Redis, services down."""
    stack = Stack(settings)
    print("== starting Kafka and Redis")
    timings = stack.up()
    try:
        for status in stack.status():
            print(f"   {status.name:6} {status.address}")
        trip = round_trip(settings)
        print(f"== round trip: Kafka {trip.kafka_ms:.1f} ms, Redis {trip.redis_ms:.1f} ms")
    finally:
        print("== stopping what the demo started")
        if timings.get("kafka") is not None:
            stack.kafka.stop()
        if timings.get("redis") is not None:
            stack.redis.stop()
    return 0
