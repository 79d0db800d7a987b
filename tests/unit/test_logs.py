"""One log format, segstream's level, Faust's idle-fetch reports demoted to DEBUG."""

from __future__ import annotations

import logging
import logging.config
import subprocess
import sys
from collections.abc import Iterator

import pytest

from segstream.logs import (
    COORDINATOR_LOGGER,
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
    names = ("segstream", IDLE_FETCH_LOGGER, COORDINATOR_LOGGER)
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


COORDINATOR_FAILED = "Group Coordinator Request failed: %s"
"""aiokafka's words for a failed coordinator look-up (``GroupCoordinator``), then retried."""


@pytest.mark.parametrize("configure", ["segstream", "faust"])
def test_a_retried_coordinator_look_up_is_a_warning_and_a_refused_one_stays_an_error(
    stderr: Stderr, configure: str
) -> None:
    if configure == "segstream":
        configure_logging("info")
    else:
        logging.config.dictConfig(faust_logging_config("info"))
    logger = logging.getLogger(COORDINATOR_LOGGER)
    logger.setLevel(logging.WARNING)  # as the worker quiets aiokafka
    logger.error(COORDINATOR_FAILED, "[Error 15] GroupCoordinatorNotAvailableError")
    logger.error(COORDINATOR_FAILED, "[Error 30] GroupAuthorizationFailedError: g")
    lines = [line.split(" ", 2)[2] for line in stderr.getvalue().splitlines()]
    assert lines == [
        f"WARNING {COORDINATOR_LOGGER}: Group Coordinator Request failed: "
        "[Error 15] GroupCoordinatorNotAvailableError",
        f"ERROR {COORDINATOR_LOGGER}: Group Coordinator Request failed: "
        "[Error 30] GroupAuthorizationFailedError: g",
    ]


def test_a_demotion_never_raises_a_record_s_level(stderr: Stderr) -> None:
    configure_logging("info")
    logger = logging.getLogger(COORDINATOR_LOGGER)
    logger.setLevel(logging.DEBUG)
    logger.debug(COORDINATOR_FAILED, "[Error 15] GroupCoordinatorNotAvailableError")
    assert f"DEBUG {COORDINATOR_LOGGER}: Group Coordinator" in stderr.getvalue()


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


class Shown(logging.Handler):
    """The records a logger's handler emits, with a summary filter of its own."""

    def __init__(self, summary: RepeatSummary) -> None:
        super().__init__()
        self.addFilter(summary)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.fixture
def library() -> Iterator[logging.Logger]:
    """A third-party logger of the test's own, not propagating to the root's handlers."""
    logger = logging.getLogger("some.client")
    logger.propagate = False
    yield logger
    logger.handlers.clear()
    logger.propagate = True


def test_a_run_that_ends_within_its_window_is_counted_at_the_next_record_after_it(
    library: logging.Logger,
) -> None:
    clock = Clock()
    shown = Shown(RepeatSummary(window_s=30.0, clock=clock))
    library.addHandler(shown)
    for attempt in range(5):  # an outage of 4 s, then the client reconnects
        clock.now = float(attempt)
        library.error(REFUSED, 1, f"refused {attempt}")
    clock.now = 20.0
    library.warning("reconnected")  # within the window: the count is not due yet
    assert shown.lines == ["Unable connect to node with id 1: refused 0", "reconnected"]
    clock.now = 31.0
    library.warning("fetching")
    assert shown.lines[2:] == [
        "Unable connect to node with id 1: refused 4 "
        "[last of 4 like this held back after the one shown]",
        "fetching",
    ]
    clock.now = 70.0
    library.warning("again")  # said once: the run is done
    assert shown.lines[4:] == ["again"]


def test_flush_says_every_count_still_unsaid_and_nothing_twice(library: logging.Logger) -> None:
    clock = Clock()
    summary = RepeatSummary(window_s=30.0, clock=clock)
    shown = Shown(summary)
    library.addHandler(shown)
    for _ in range(3):
        library.error(REFUSED, 2, "refused")
    library.error("Unable to update metadata from %s", 2)  # shown, nothing held back
    summary.flush()
    summary.flush()
    assert shown.lines == [
        "Unable connect to node with id 2: refused",
        "Unable to update metadata from 2",
        "Unable connect to node with id 2: refused [last of 2 like this held back after "
        "the one shown]",
    ]


def _stderr_of(script: str) -> str:
    """What a fresh interpreter running ``script`` wrote to stderr (it must exit with 0)."""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    )
    return done.stderr


def test_counts_unsaid_at_exit_are_written_before_the_process_ends() -> None:
    script = (
        "import logging\n"
        "from segstream.logs import configure_logging\n"
        "configure_logging('info')\n"
        "for _ in range(40):\n"
        "    logging.getLogger('aiokafka').error('Unable connect to node with id %s', 1)\n"
    )
    lines = _stderr_of(script).splitlines()
    assert len(lines) == 2
    assert lines[0].endswith("ERROR aiokafka: Unable connect to node with id 1")
    assert lines[1].endswith(
        "ERROR aiokafka: Unable connect to node with id 1 "
        "[last of 39 like this held back after the one shown]"
    )


def test_a_handler_closed_before_exit_gets_no_summary_and_no_logging_error() -> None:
    script = (
        "import io, logging\n"
        "from segstream.logs import configure_logging\n"
        "configure_logging('info')\n"
        "stream = io.StringIO()\n"
        "logging.getLogger().handlers[0].setStream(stream)  # as a test runner's capture\n"
        "for _ in range(5):\n"
        "    logging.getLogger('aiokafka').error('Unable connect to node with id %s', 1)\n"
        "stream.close()\n"
    )
    assert _stderr_of(script) == ""
