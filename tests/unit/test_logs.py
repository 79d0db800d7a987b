"""One log format, segstream's level, Faust's idle-fetch reports demoted to DEBUG."""

from __future__ import annotations

import logging
import logging.config
from collections.abc import Iterator

import pytest

from segstream.logs import IDLE_FETCH_LOGGER, configure_logging, faust_logging_config

IDLE = "[^---AIOKafkaConsumerThread]: Aiokafka has not sent fetch request for %r since start"


class Stderr:
    """What the handlers write to stderr (pytest's capture, in place during the test)."""

    def __init__(self, capsys: pytest.CaptureFixture[str]) -> None:
        self.capsys = capsys
        self.text = ""

    def getvalue(self) -> str:
        self.text += self.capsys.readouterr().err
        return self.text


@pytest.fixture
def stderr(capsys: pytest.CaptureFixture[str]) -> Iterator[Stderr]:
    """Stderr as the handlers configured in the test write it; the root logger and the
    loggers this module touches are restored afterwards."""
    names = ("segstream", IDLE_FETCH_LOGGER)
    saved = [(logging.getLogger(n).level, list(logging.getLogger(n).filters)) for n in names]
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield Stderr(capsys)
    for name, (saved_level, filters) in zip(names, saved, strict=True):
        logging.getLogger(name).setLevel(saved_level)
        logging.getLogger(name).filters[:] = filters
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.mark.parametrize("level", ["DEBUG", "debug", "Debug"])
def test_the_level_applies_to_segstream_loggers_in_any_case(stderr: Stderr, level: str) -> None:
    configure_logging(level)
    logging.getLogger("segstream.stream.worker.assigner").debug("model %s replaced", "v2")
    logging.getLogger("some.library").info("chatty")
    lines = stderr.getvalue().splitlines()
    assert len(lines) == 1
    assert lines[0].endswith(" DEBUG segstream.stream.worker.assigner: model v2 replaced")


def test_at_info_segstream_debug_records_are_not_shown(stderr: Stderr) -> None:
    configure_logging("info")
    logging.getLogger("segstream.x").debug("hidden")
    logging.getLogger("segstream.x").info("shown")
    assert stderr.getvalue().splitlines()[-1].endswith(" INFO segstream.x: shown")
    assert "hidden" not in stderr.getvalue()


def test_idle_fetch_errors_are_demoted_and_other_errors_of_that_logger_stay(
    stderr: Stderr,
) -> None:
    configure_logging("info")
    logger = logging.getLogger(IDLE_FETCH_LOGGER)
    logger.setLevel(logging.WARNING)  # as the worker quiets Faust
    logger.error(IDLE, "orders-0")
    logger.error("Broker stopped responding to fetch requests for %r", "orders-1")
    assert "has not sent fetch request" not in stderr.getvalue()
    assert "ERROR faust.transport.drivers.aiokafka: Broker stopped" in stderr.getvalue()
    logger.setLevel(logging.DEBUG)  # someone debugging Faust still sees them, as DEBUG
    logger.error(IDLE, "orders-2")
    assert "DEBUG faust.transport.drivers.aiokafka: [^---AIOKafkaConsumerThread]" in (
        stderr.getvalue()
    )


def test_faust_gets_the_same_format_level_and_filter(stderr: Stderr) -> None:
    logging.config.dictConfig(faust_logging_config("DEBUG"))
    logging.getLogger("segstream.x").debug("ours")
    logging.getLogger("faust.worker").warning("theirs")
    logging.getLogger(IDLE_FETCH_LOGGER).setLevel(logging.WARNING)
    logging.getLogger(IDLE_FETCH_LOGGER).error(IDLE, "users-0")
    lines = stderr.getvalue().splitlines()
    assert [line.split(" ", 2)[2] for line in lines] == [
        "DEBUG segstream.x: ours",
        "WARNING faust.worker: theirs",
    ]
