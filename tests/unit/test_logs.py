"""One log format, segstream's level, Faust's idle-fetch reports demoted to DEBUG."""

from __future__ import annotations

import logging
import logging.config
from collections.abc import Iterator

import pytest

from segstream.logs import (
    IDLE_FETCH_LOGGER,
    RepeatSummary,
    configure_logging,
    faust_logging_config,
)

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


class Clock:
    """A settable clock for :class:`RepeatSummary` (seconds)."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _record(name: str, msg: str, *args: object, level: int = logging.ERROR) -> logging.LogRecord:
    return logging.LogRecord(name, level, __file__, 1, msg, args, None)


REFUSED = "Unable connect to node with id %s: %s"


def test_a_repeated_client_error_shows_once_per_window_then_with_its_count() -> None:
    clock = Clock()
    summary = RepeatSummary(window_s=30.0, clock=clock)
    shown = []
    for second in range(95):  # an outage of 95 s, the client retrying twice a second
        clock.now = float(second)
        for _ in range(2):
            record = _record("aiokafka", REFUSED, 1, "[Errno 111] Connection refused")
            if summary.filter(record):
                shown.append((second, record.getMessage()))
    assert [second for second, _ in shown] == [0, 30, 60, 90]
    assert shown[0][1] == "Unable connect to node with id 1: [Errno 111] Connection refused"
    assert shown[1][1].endswith(" [59 more like this held back in the 30 s before]")
    assert shown[1][1].startswith("Unable connect to node with id 1: [Errno 111]")


def test_different_messages_levels_and_loggers_are_runs_of_their_own() -> None:
    summary = RepeatSummary(clock=Clock())
    first = [
        _record("aiokafka", REFUSED, 1, "refused"),
        _record("aiokafka", "Unable to update metadata from %s", [1]),
        _record("aiokafka", REFUSED, 1, "refused", level=logging.WARNING),
        _record("aiokafka.consumer.fetcher", REFUSED, 1, "refused"),
    ]
    assert all(summary.filter(record) for record in first)
    assert not any(summary.filter(_record(r.name, str(r.msg), *r.args, level=r.levelno))
                   for r in first)  # fmt: skip


def test_segstream_records_always_pass_and_a_percent_in_the_count_note_is_safe() -> None:
    summary = RepeatSummary(clock=Clock())
    for _ in range(3):
        assert summary.filter(_record("segstream.stream.worker.app", "offset commit abandoned"))
    clock = Clock()
    summary = RepeatSummary(window_s=1.0, clock=clock)
    assert summary.filter(_record("kafka", "disk at %d%%", 95))
    assert not summary.filter(_record("kafka", "disk at %d%%", 96))
    clock.now = 1.0
    record = _record("kafka", "disk at %d%%", 97)
    assert summary.filter(record)
    assert record.getMessage() == "disk at 97% [1 more like this held back in the 1 s before]"


def test_the_worker_logging_summarises_repeated_library_errors(stderr: Stderr) -> None:
    configure_logging("info")
    for _ in range(50):
        logging.getLogger("aiokafka").error(REFUSED, 1, "refused")
    lines = [line for line in stderr.getvalue().splitlines() if "Unable connect" in line]
    assert len(lines) == 1


def test_faust_s_logging_config_summarises_them_too(stderr: Stderr) -> None:
    logging.config.dictConfig(faust_logging_config("info"))
    for _ in range(50):
        logging.getLogger("aiokafka").error(REFUSED, 1, "refused")
    lines = [line for line in stderr.getvalue().splitlines() if "Unable connect" in line]
    assert len(lines) == 1
