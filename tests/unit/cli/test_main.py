"""The ``segstream`` command itself: parsing, help, config, log level, a closed stdout."""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from segstream.cli.main import build_parser, config_markdown, main
from segstream.settings import (
    SETTINGS_CLASSES,
    SegstreamSettings,
    Settings,
    StackSettings,
    settings_table,
)

REPO = Path(__file__).resolve().parents[3]


def parsers(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    """``parser`` and every sub-parser below it."""
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in dict.fromkeys(action.choices.values()):
                yield from parsers(child)


@pytest.mark.parametrize(
    "argv", [["--nope"], ["bench", "--nope"], ["drift", "--nope"], ["lag", "--nope"]]
)
def test_an_unknown_option_is_named_not_a_missing_command(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "unrecognized arguments: --nope" in err and "required" not in err


@pytest.mark.parametrize(
    ("argv", "named"), [([], "COMMAND"), (["bench"], "TARGET"), (["drift"], "ACTION")]
)
def test_a_missing_command_lists_the_choices(
    argv: list[str], named: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    assert f"{named} is required: one of " in capsys.readouterr().err


def test_every_option_has_help_and_every_default_is_shown() -> None:
    checked = 0
    for parser in parsers(build_parser()):
        help_text = " ".join(parser.format_help().split())
        for action in parser._actions:
            if not action.option_strings or action.help == argparse.SUPPRESS:
                continue
            assert action.help, f"{parser.prog} {action.option_strings[0]} has no help"
            if action.default not in (None, False, argparse.SUPPRESS):
                checked += 1
                assert f"(default: {action.default})" in help_text or "default" in action.help, (
                    f"{parser.prog} {action.option_strings[0]} hides its default"
                )
    assert checked >= 10  # the walk reached the sub-parsers: predict, bench, generate, train...


@pytest.mark.parametrize("verb", ["worker", "services", "segment", "lag", "config"])
def test_verbs_a_newcomer_starts_with_explain_themselves(verb: str) -> None:
    (parser,) = (p for p in parsers(build_parser()) if p.prog == f"segstream {verb}")
    assert parser.description and len(parser.description) > 60


def test_services_help_explains_every_action() -> None:
    (parser,) = (p for p in parsers(build_parser()) if p.prog == "segstream services")
    text = parser.format_help()
    for action in ("up:", "down:", "status:", "check:"):
        assert action in text


def test_predict_options_name_their_default_in_help() -> None:
    (parser,) = (p for p in parsers(build_parser()) if p.prog == "segstream predict")
    assert "(default: 5)" in " ".join(parser.format_help().split())


@pytest.mark.parametrize("cls", SETTINGS_CLASSES, ids=lambda cls: cls.__name__)
def test_config_markdown_has_one_well_formed_row_per_setting(
    cls: type[SegstreamSettings],
) -> None:
    rows = config_markdown(cls).splitlines()
    assert len(rows) == 2 + len(settings_table(cls))
    for row in rows:
        # Four unescaped pipes: three cells, however long or multi-paragraph the docstring.
        assert row.replace("\\|", "").count("|") == 4, row


def test_a_multi_paragraph_docstring_is_one_row() -> None:
    timeout = next(r for r in config_markdown().splitlines() if "SEGSTREAM_BATCH_TIMEOUT_S" in r)
    assert "merging those that queued up" in timeout


def test_the_stack_table_is_apart_from_the_products() -> None:
    product, stack = config_markdown(Settings), config_markdown(StackSettings)
    assert "`SEGSTREAM_KAFKA_PORT`" in stack and "`SEGSTREAM_KAFKA_PORT`" not in product
    assert "`SEGSTREAM_DATA_DIR`" in product and "`SEGSTREAM_DATA_DIR`" not in stack


@pytest.mark.parametrize("cls", SETTINGS_CLASSES, ids=lambda cls: cls.__name__)
def test_the_readme_tables_are_config_markdown_verbatim(cls: type[SegstreamSettings]) -> None:
    assert config_markdown(cls) in (REPO / "README.md").read_text(encoding="utf-8")


def test_config_markdown_prints_both_tables(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "--markdown"]) == 0
    printed = capsys.readouterr().out
    for cls in SETTINGS_CLASSES:
        assert config_markdown(cls) in printed


@pytest.fixture
def segstream_logger() -> Iterator[logging.Logger]:
    logger = logging.getLogger("segstream")
    level = logger.level
    yield logger
    logger.setLevel(level)


@pytest.mark.parametrize(("value", "level"), [("DEBUG", logging.DEBUG), ("Warning", 30)])
def test_the_log_level_is_applied_to_segstream_loggers_by_every_command(
    value: str,
    level: int,
    segstream_logger: logging.Logger,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("SEGSTREAM_LOG_LEVEL", value)
    assert main(["config"]) == 0
    assert segstream_logger.level == level
    assert "SEGSTREAM_LOG_LEVEL" in capsys.readouterr().out


def test_a_closed_stdout_ends_the_command_quietly_with_141() -> None:
    """As ``segstream segment 42 | head`` once head has exited: no traceback, 128 + SIGPIPE."""
    read_end, write_end = os.pipe()
    os.close(read_end)  # nobody will read: every write fails with EPIPE
    try:
        done = subprocess.run(
            [sys.executable, "-m", "segstream.cli", "config"],
            stdout=write_end,
            stderr=subprocess.PIPE,
            cwd=REPO,
            timeout=60,
            check=False,
        )
    finally:
        os.close(write_end)
    assert done.returncode == 141
    assert done.stderr == b""


@pytest.mark.parametrize("where", ["missing-dir/profile.pstats", "."])
def test_bench_stream_refuses_a_profile_path_it_cannot_write_before_running(
    where: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["bench", "stream", "--profile", where]) == 2
    err = capsys.readouterr().err
    assert f"--profile {where}: not a file in an existing directory" in err
    assert "Traceback" not in err


def test_config_prints_the_stack_settings_in_force(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SEGSTREAM_KAFKA_PORT", "19092")
    assert main(["config"]) == 0
    (line,) = (
        x for x in capsys.readouterr().out.splitlines() if x.startswith("SEGSTREAM_KAFKA_PORT ")
    )
    assert line.split()[1] == "19092"


def test_a_bad_stack_setting_stops_services_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SEGSTREAM_REDIS_PORT", "not-a-port")
    assert main(["services", "status"]) == 2
    assert "SEGSTREAM_REDIS_PORT" in capsys.readouterr().err
