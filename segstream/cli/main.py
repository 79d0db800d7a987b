"""The ``segstream`` command: one sub-command per verb, each area registering its own."""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
from collections.abc import Sequence
from typing import Any, TypeAlias

from segstream.errors import SegstreamError
from segstream.logs import configure_logging
from segstream.settings import (
    SETTINGS_CLASSES,
    SegstreamSettings,
    Settings,
    load_settings,
    load_stack_settings,
    settings_table,
)

__all__ = ["HelpFormatter", "Parser", "add_verbs", "build_parser", "config_markdown", "main"]

SubParsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"

_VERBS = ("command", "bench_target", "drift_command", "cdc_command")
"""Namespace attributes that hold a (sub-)command's name, for the prefix of error messages."""


_AREAS = (
    "segstream.cli.services",
    "segstream.cli.demo",
    "segstream.cli.training",
    "segstream.cli.stream",
    "segstream.cli.cdc",
    "segstream.cli.ops",
    "segstream.cli.lifecycle",
    "segstream.cli.delivery",
    "segstream.cli.bench",
)
"""The modules that register verbs, in the order ``segstream --help`` lists them."""


class HelpFormatter(argparse.HelpFormatter):
    """argparse's formatter, with ``(default: X)`` after an option's help when it has a
    default worth naming (not None or False) and its help does not name one already."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help
        if (
            text
            and action.option_strings
            and action.default not in (None, False, argparse.SUPPRESS)
            and "default" not in text
        ):
            text += " (default: %(default)s)"
        return text


class Parser(argparse.ArgumentParser):
    """The parser of every ``segstream`` verb (sub-parsers are of the parser's own class):
    :class:`HelpFormatter` unless another is given."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)


def add_verbs(parser: argparse.ArgumentParser, dest: str, metavar: str) -> SubParsers:
    """Sub-commands of ``parser``, one of which must be given.

    argparse's ``required=True`` reports a missing sub-command before an unknown option,
    so ``segstream --nope`` would say "a command is required"; here an unknown option is
    named first, and only then is a missing sub-command an error.
    """
    sub = parser.add_subparsers(dest=dest, metavar=metavar)

    def missing(args: argparse.Namespace) -> int:
        choices = ", ".join(sub.choices)
        parser.error(f"{metavar} is required: one of {choices}")

    parser.set_defaults(handler=missing)
    return sub


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser; each area module adds its verbs through ``add_commands``."""
    parser = Parser(
        prog="segstream",
        description="Streaming, real-time customer-segment assignment.",
    )
    sub = add_verbs(parser, "command", "COMMAND")
    config = sub.add_parser(
        "config",
        help="print every setting: variable, value, meaning",
        description="Print every SEGSTREAM_* setting with the value in force and its meaning.",
    )
    config.add_argument(
        "--markdown",
        action="store_true",
        help="print the README's tables of defaults instead (the product's, the local stack's)",
    )
    config.set_defaults(handler=_print_config)
    for name in _AREAS:
        # Each area imports its heavy dependencies (numpy, faust, sklearn) inside its handlers,
        # so that `segstream --help` stays fast.
        importlib.import_module(name).add_commands(sub)
    return parser


def config_markdown(cls: type[SegstreamSettings] = Settings) -> str:
    """The README's configuration table of ``cls``: one row per setting, cells free of ``|``."""
    lines = ["| variable | default | meaning |", "|---|---|---|"]
    for variable, default, meaning in settings_table(cls):
        meaning = meaning.replace("``", "`").replace("|", "\\|")
        shown = f"`{default}`" if default else "unset"
        lines.append(f"| `{variable}` | {shown} | {meaning} |")
    return "\n".join(lines)


def _print_config(args: argparse.Namespace) -> int:
    if args.markdown:
        print("\n\n".join(config_markdown(cls) for cls in SETTINGS_CLASSES))
        return 0
    product = load_settings()
    for current in (product, load_stack_settings()):
        for variable, _, meaning in settings_table(type(current)):
            name = variable.removeprefix("SEGSTREAM_").lower()
            # Secrets are SecretStr (printed as stars); the URL shows its password as ***.
            value = product.redis_display if name == "redis_url" else getattr(current, name)
            print(f"{variable:36} {'' if value is None else value!s:32} {meaning}")
    return 0


def _silence_stdout() -> None:
    """Point stdout at /dev/null, so that the interpreter's last flush does not fail again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; a :class:`SegstreamError` prints its message and exits 2.

    Logging is set up first (:func:`segstream.logs.configure_logging`, at
    ``SEGSTREAM_LOG_LEVEL``). When the reader of stdout goes away (``segstream segment 42 |
    head``), the command ends quietly with 141 (128 + SIGPIPE), as ``git`` does.
    """
    command = "segstream"
    try:
        # Settings first: an invalid one is reported by every command, --help included.
        configure_logging(load_settings().log_level)
        args = build_parser().parse_args(argv)
        command = " ".join(["segstream", *(v for k, v in vars(args).items() if k in _VERBS and v)])
        code = int(args.handler(args) or 0)
        sys.stdout.flush()  # inside the try: a closed pipe is reported below, not at exit
        return code
    except SegstreamError as exc:
        print(f"{command}: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        _silence_stdout()
        return 128 + signal.SIGPIPE
    except KeyboardInterrupt:
        print(f"{command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
