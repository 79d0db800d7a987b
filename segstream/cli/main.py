"""The ``segstream`` command: one sub-command per verb, each area registering its own."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from segstream.errors import SegstreamError

__all__ = ["main"]


_AREAS = (
    "segstream.cli.services",
    "segstream.cli.demo",
    "segstream.cli.training",
    "segstream.cli.stream",
    "segstream.cli.ops",
    "segstream.cli.lifecycle",
    "segstream.cli.bench",
)
"""The modules that register verbs, in the order ``segstream --help`` lists them."""


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser; each area module adds its verbs through ``add_commands``."""
    parser = argparse.ArgumentParser(
        prog="segstream",
        description="Streaming, real-time customer-segment assignment.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    config = sub.add_parser("config", help="print every setting: variable, value, meaning")
    config.add_argument("--markdown", action="store_true", help="the README's table of defaults")
    config.set_defaults(handler=_print_config)
    for name in _AREAS:
        # Each area imports its heavy dependencies (numpy, faust, sklearn) inside its handlers,
        # so that `segstream --help` stays fast.
        importlib.import_module(name).add_commands(sub)
    return parser


def _print_config(args: argparse.Namespace) -> int:
    from segstream.settings import load_settings, settings_table

    if args.markdown:
        print("| variable | default | meaning |\n|---|---|---|")
        for variable, default, meaning in settings_table():
            summary = " ".join(meaning.split("\n\n", 1)[0].split())  # first paragraph: one row
            print(f"| `{variable}` | `{default}` | {summary.replace('``', '`')} |")
        return 0
    current = load_settings()
    for variable, _, meaning in settings_table():
        value = getattr(current, variable.removeprefix("SEGSTREAM_").lower())
        print(f"{variable:36} {value!s:32} {meaning}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; a :class:`SegstreamError` prints its message and exits 2."""
    # Third-party clients (aiokafka, faust) are chatty at INFO; our own loggers are not.
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("segstream").setLevel(logging.INFO)
    command = "segstream"
    try:
        # Building the parser may read settings (for defaults): its errors are reported too.
        args = build_parser().parse_args(argv)
        command = f"segstream {args.command}"
        return int(args.handler(args) or 0)
    except SegstreamError as exc:
        print(f"{command}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
