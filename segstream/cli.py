"""The ``segstream`` command: one sub-command per verb, each area registering its own."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from segstream.errors import SegstreamError

__all__ = ["main"]


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser; each area adds its verbs through ``add_commands``."""
    # Imported here so that `segstream --help` does not pay for numpy, faust or sklearn twice.
    from segstream.services import cli as services_cli

    parser = argparse.ArgumentParser(
        prog="segstream",
        description="Streaming, real-time customer-segment assignment.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    services_cli.add_commands(sub)
    for module in ("segstream.training.cli", "segstream.stream.cli"):
        try:
            area = __import__(module, fromlist=["add_commands"])
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise
            continue
        area.add_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; a :class:`SegstreamError` prints its message and exits 2."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except SegstreamError as exc:
        print(f"segstream {args.command}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"segstream {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
