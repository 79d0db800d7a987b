"""The worker's faust.App is whole once constructed: its options, the lean consumer and the
progress watchdog come from the settings, with nothing attached afterwards."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from segstream.settings import Settings
from segstream.stream.worker.app import AGENT_NAME, WorkerApp, create_app, trim_framework
from segstream.stream.worker.consumer import LeanTransport
from segstream.stream.worker.watchdog import Deadlines


def _settings(tmp_path: Path) -> Settings:
    return Settings(
        data_dir=tmp_path,
        fetch_max_wait_ms=77,
        commit_deadline_s=12.0,
        batch_deadline_s=34.0,
        stall_grace_s=5.0,
        shutdown_timeout_s=21.0,
    )


def test_the_constructed_app_consumes_leanly_with_the_settings_commit_deadline_and_wait(
    tmp_path: Path,
) -> None:
    app = WorkerApp(_settings(tmp_path))
    transport = app.transport
    assert isinstance(transport, LeanTransport)
    assert (transport.fetch_max_wait_ms, transport.commit_deadline_s) == (77, 12.0)
    assert transport.hold_messages is True
    assert (tmp_path / "faust").is_dir()


def test_the_watchdog_reads_the_progress_the_consumer_records_under_the_settings_deadlines(
    tmp_path: Path,
) -> None:
    app = WorkerApp(_settings(tmp_path))
    assert isinstance(app.transport, LeanTransport)
    assert app.watchdog.progress is app.progress is app.transport.progress
    assert app.watchdog.deadlines == Deadlines(
        batch_s=34.0, commit_s=12.0, grace_s=5.0, shutdown_s=21.0
    )


def test_create_app_adds_the_one_agent_to_a_worker_app(tmp_path: Path) -> None:
    app = create_app(_settings(tmp_path))
    assert isinstance(app, WorkerApp)
    assert list(app.agents) == [AGENT_NAME]


def test_trimmed_faust_no_longer_warns_of_sensor_state_at_each_rebalance(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = WorkerApp(_settings(tmp_path))
    # The logger is the module's, shared by every app of this process: start from no filter.
    monkeypatch.setattr(app.log.logger, "filters", [])
    caplog.set_level(logging.DEBUG, logger=app.log.logger.name)

    def own() -> list[logging.LogRecord]:
        # Only the app's: records of other loggers can come in meanwhile (a summary of a
        # client's repeated errors that an earlier test in this process left unsaid).
        return [r for r in caplog.records if r.name == app.log.logger.name]

    app.log.warning("Missing sensor state for rebalance end #%s", 1)  # as Faust words it
    assert [r.levelno for r in own()] == [logging.WARNING]  # before: shown
    caplog.clear()
    trim_framework(app)
    trim_framework(app)  # once per start of the agent: one filter, not two
    app.log.warning("Missing sensor state for rebalance end #%s", 2)
    app.log.warning("Some other problem")
    assert [(r.levelno, r.getMessage().endswith("#2")) for r in own()] == [
        (logging.DEBUG, True),
        (logging.WARNING, False),
    ]
    assert app.monitor not in set(app.sensors)
