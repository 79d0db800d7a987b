"""Consumer lag read from Kafka: ``read_lag``, ``segstream lag`` and the lag gauges agree.

No worker runs: the stand-in worker (a plain consumer in the group feeding the worker's batch
processor) commits the first events, then N more are produced and must show as exactly N
pending, in messages and in seconds, until the stand-in processes them.
"""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

from segstream.cli.main import main
from segstream.settings import Settings
from segstream.stream.http.metrics import Metrics
from segstream.stream.kafka.lag import LagSnapshot, read_lag
from tests.integration.stream.conftest import Dataset
from tests.integration.stream.ops.conftest import ops_settings
from tests.integration.stream.ops.support import ServedApp, publish, stand_in_worker, wait_for
from tests.ports import free_port

FIRST = 300
PENDING = 137


def lag_now(settings: Settings) -> LagSnapshot:
    topics = [settings.topic_users, settings.topic_orders]
    return asyncio.run(read_lag(settings, settings.app_id, topics))


def cli_lag(settings: Settings, monkeypatch: pytest.MonkeyPatch, capsys, *args: str) -> str:
    for name in ("kafka_bootstrap_servers", "app_id", "topic_users", "topic_orders"):
        monkeypatch.setenv(f"SEGSTREAM_{name.upper()}", str(getattr(settings, name)))
    capsys.readouterr()
    assert main(["lag", *args]) == 0
    return capsys.readouterr().out


def gauges(app: ServedApp) -> tuple[float, float]:
    """Sum of the lag-in-messages gauges and max of the lag-in-seconds gauges."""
    status, _, body = app.request("GET", "/metrics")
    assert status == 200
    messages, seconds = 0.0, 0.0
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            if sample.name == "segstream_consumer_lag_messages":
                messages += sample.value
            elif sample.name == "segstream_consumer_lag_seconds":
                seconds = max(seconds, sample.value)
    return messages, seconds


def test_produced_events_show_as_exactly_n_pending_until_processed(
    kafka_bootstrap: str,
    redis_url: str,
    dataset: Dataset,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    settings = ops_settings(kafka_bootstrap, redis_url, dataset.models_dir)
    events = dataset.plan.events
    publish(settings, events[:FIRST])
    assert stand_in_worker(settings, FIRST) == FIRST
    app = ServedApp(settings, metrics=Metrics(), lag_interval_s=0.3)
    try:
        caught_up = lag_now(settings)
        assert (caught_up.total_lag, caught_up.max_seconds_behind) == (0, 0.0)
        assert sum(p.committed or 0 for p in caught_up.partitions) == FIRST
        wait_for(lambda: gauges(app) == (0.0, 0.0), "the gauges at 0")

        produced_at = time.time()
        publish(settings, events[FIRST : FIRST + PENDING])
        time.sleep(1.0)  # the behaviour: pending events 1 s old show at least 1 s behind
        pending = lag_now(settings)
        assert pending.total_lag == PENDING
        assert pending.max_seconds_behind is not None
        assert 1.0 <= pending.max_seconds_behind <= time.time() - produced_at + 0.5
        for p in pending.partitions:
            assert p.lag == p.end - (p.committed or 0)
            assert (p.seconds_behind or 0.0) > 0.0 if p.lag else p.seconds_behind == 0.0

        document = json.loads(cli_lag(settings, monkeypatch, capsys, "--json"))
        assert document["total_lag"] == PENDING
        assert sum(p["lag"] for p in document["partitions"]) == PENDING
        assert document["max_seconds_behind"] >= 1.0
        table = cli_lag(settings, monkeypatch, capsys)
        total_row = next(line for line in table.splitlines() if "total" in line)
        assert total_row.replace("│", " ").split()[1] == str(PENDING)
        assert settings.topic_orders in table and settings.topic_users in table

        wait_for(lambda: gauges(app)[0] == PENDING, f"the gauges at {PENDING}")
        assert gauges(app)[1] >= 1.0

        assert stand_in_worker(settings, PENDING) == PENDING
        drained = lag_now(settings)
        assert (drained.total_lag, drained.max_seconds_behind) == (0, 0.0)
        assert json.loads(cli_lag(settings, monkeypatch, capsys, "--json"))["total_lag"] == 0
        wait_for(lambda: gauges(app) == (0.0, 0.0), "the gauges back at 0")
    finally:
        app.stop()


def test_a_group_that_never_committed_has_every_record_pending(
    kafka_bootstrap: str, redis_url: str, dataset: Dataset
) -> None:
    settings = ops_settings(kafka_bootstrap, redis_url, dataset.models_dir)
    publish(settings, dataset.plan.events[:50])
    snapshot = lag_now(settings)
    assert snapshot.total_lag == 50
    assert all(p.committed is None for p in snapshot.partitions)
    assert len(snapshot.partitions) == 8


def known_group(
    kafka_bootstrap: str, redis_url: str, dataset: Dataset, monkeypatch: pytest.MonkeyPatch
) -> Settings:
    """A fresh app whose group the cluster knows (20 events committed by the stand-in worker),
    its settings in the environment for ``segstream lag``."""
    settings = ops_settings(kafka_bootstrap, redis_url, dataset.models_dir)
    publish(settings, dataset.plan.events[:20])
    assert stand_in_worker(settings, 20) == 20
    for name in ("kafka_bootstrap_servers", "app_id", "topic_users", "topic_orders"):
        monkeypatch.setenv(f"SEGSTREAM_{name.upper()}", str(getattr(settings, name)))
    return settings


def test_lag_command_exits_1_naming_topics_that_do_not_exist(
    kafka_bootstrap: str,
    redis_url: str,
    dataset: Dataset,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    settings = known_group(kafka_bootstrap, redis_url, dataset, monkeypatch)
    capsys.readouterr()
    argv = ["lag", "--group", settings.app_id, "--topic", "no-such-topic-xyz"]
    assert main([*argv, "--json"]) == 1
    captured = capsys.readouterr()
    document = json.loads(captured.out)
    assert document["missing_topics"] == ["no-such-topic-xyz"] and document["group_known"]
    assert document["partitions"] == [] and document["total_lag"] == 0
    assert "topic(s) no-such-topic-xyz do not exist" in captured.err
    assert main(argv) == 1
    assert "no-such-topic-xyz do not exist" in capsys.readouterr().err


def test_lag_command_exits_1_naming_a_group_the_cluster_does_not_know(
    kafka_bootstrap: str,
    redis_url: str,
    dataset: Dataset,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    known_group(kafka_bootstrap, redis_url, dataset, monkeypatch)
    capsys.readouterr()
    assert main(["lag", "--group", "nosuchgroup", "--json"]) == 1
    captured = capsys.readouterr()
    assert json.loads(captured.out)["group_known"] is False
    assert "consumer group 'nosuchgroup' is unknown to the cluster" in captured.err
    assert "--group" in captured.err
    # The group the stand-in worker committed for is known: the same command exits 0.
    assert main(["lag", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["group_known"] is True


def test_lag_command_exits_2_naming_an_unreachable_broker(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    address = f"127.0.0.1:{free_port()}"
    monkeypatch.setenv("SEGSTREAM_KAFKA_BOOTSTRAP_SERVERS", address)
    assert main(["lag"]) == 2
    assert address in capsys.readouterr().err
