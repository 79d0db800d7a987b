"""The worker's logs: one format for segstream's and Faust's records, started either way,
SEGSTREAM_LOG_LEVEL applied to segstream's loggers, no idle-fetch errors after rebalances."""

from __future__ import annotations

import re
import signal

from segstream.settings import Settings
from segstream.stream.lifecycle.replay import ReplayPlan
from tests.integration.stream.conftest import (
    FAUST_WORKER,
    Dataset,
    app_settings,
    replay,
    wait_until_assigned,
    wait_until_consumed,
)

RECORD = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d (DEBUG|INFO|WARNING|ERROR|CRITICAL) [\w.]+: ")
"""A record in segstream's format (segstream.logs.LOG_FORMAT)."""
FAUST_RECORD = re.compile(r"^\[\d{4}-\d\d-\d\d [\d:,]+\] \[\d+\] \[[A-Z]+\]")
"""A record in Faust's own format, ``[time] [pid] [LEVEL]``."""


def test_both_kinds_of_worker_log_in_one_format_at_the_configured_level(
    kafka_bootstrap: str, redis_url: str, dataset: Dataset, start_worker, tmp_path
) -> None:
    quiet: Settings = app_settings(
        kafka_bootstrap, redis_url, model_dir=dataset.models_dir, log_level="warning",
        data_dir=tmp_path / "a",
    )  # fmt: skip
    chatty = quiet.model_copy(update={"log_level": "info", "data_dir": tmp_path / "b"})
    replay(quiet, ReplayPlan(dataset.plan.events[:2_000], 0))
    first = start_worker(quiet)
    second = start_worker(chatty, FAUST_WORKER)  # joins: a rebalance for both
    # The first worker may consume all 2,000 records before the second has joined; stopping
    # the second then would leave nothing of its assignment in its log to check.
    wait_until_assigned([second])  # the quiet first worker logs no INFO line to wait on
    wait_until_consumed(quiet, [first, second])
    assert second.stop(signal.SIGTERM) == 0, second.log_tail()
    assert first.stop(signal.SIGTERM) == 0, first.log_tail()

    logs = {"segstream worker": first, "faust worker": second}
    for name, worker in logs.items():
        lines = worker.log_path.read_text(errors="replace").splitlines()
        faust_style = [line for line in lines if FAUST_RECORD.match(line)]
        assert not faust_style, f"{name}: {faust_style[:3]}"
        assert "has not sent fetch request" not in "\n".join(lines), name
    quiet_lines = first.log_path.read_text().splitlines()
    assert not [line for line in quiet_lines if " INFO segstream." in line]  # level: warning
    chatty_lines = second.log_path.read_text().splitlines()
    assigned = [line for line in chatty_lines if "input partitions assigned" in line]
    assert assigned and all(RECORD.match(line) for line in assigned), second.log_tail()
