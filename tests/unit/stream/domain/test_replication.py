"""Replication factor: min(3, brokers) unless SEGSTREAM_TOPIC_REPLICATION_FACTOR says otherwise."""

from __future__ import annotations

import os

import pytest

from segstream.errors import ConfigError
from segstream.settings import as_environment, load_settings
from segstream.stream.domain.replication import (
    check_redis_replicas,
    default_replication_factor,
    min_insync_replicas,
    replication_factor,
)


@pytest.mark.parametrize(("brokers", "factor"), [(1, 1), (2, 2), (3, 3), (5, 3), (12, 3)])
def test_default_is_at_most_three_copies(brokers: int, factor: int) -> None:
    assert default_replication_factor(brokers) == factor


def test_no_broker_is_an_error() -> None:
    with pytest.raises(ConfigError, match="0 brokers"):
        default_replication_factor(0)


@pytest.mark.parametrize(("factor", "isr"), [(1, 1), (2, 1), (3, 2), (5, 4)])
def test_min_insync_replicas_is_one_less(factor: int, isr: int) -> None:
    assert min_insync_replicas(factor) == isr


def test_setting_overrides_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEGSTREAM_TOPIC_REPLICATION_FACTOR", "2")
    assert replication_factor(load_settings(), brokers=5) == 2


def test_unset_setting_means_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SEGSTREAM_TOPIC_REPLICATION_FACTOR", raising=False)
    settings = load_settings()
    assert settings.topic_replication_factor is None
    assert replication_factor(settings, brokers=1) == 1
    assert replication_factor(settings, brokers=4) == 3
    # A child process given these settings reads the setting as unset too.
    env = as_environment(settings, os.environ)
    assert "SEGSTREAM_TOPIC_REPLICATION_FACTOR" not in env


def test_more_copies_than_brokers_names_the_setting() -> None:
    with pytest.raises(ConfigError, match=r"SEGSTREAM_TOPIC_REPLICATION_FACTOR is 3 .* 2 broker"):
        replication_factor(load_settings(topic_replication_factor=3), brokers=2)


@pytest.mark.parametrize("value", ["0", "-1", "three"])
def test_invalid_setting_names_the_variable(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("SEGSTREAM_TOPIC_REPLICATION_FACTOR", value)
    with pytest.raises(ConfigError, match="SEGSTREAM_TOPIC_REPLICATION_FACTOR"):
        load_settings()


class TestRedisMinReplicas:
    def test_unset_waits_for_one_replica_on_a_cluster_and_none_on_a_single_server(self) -> None:
        assert load_settings().min_replicas == 0
        assert load_settings(redis_cluster=True).min_replicas == 1
        assert load_settings(redis_cluster=True, redis_min_replicas=0).min_replicas == 0
        assert load_settings(redis_min_replicas=2).min_replicas == 2

    def test_enough_replicas_on_every_primary_pass(self) -> None:
        check_redis_replicas(load_settings(redis_cluster=True), {"a:1": 1, "b:2": 2})
        check_redis_replicas(load_settings(), {"the Redis server": 0})

    def test_every_primary_short_of_replicas_names_one_and_the_setting(self) -> None:
        settings = load_settings(redis_min_replicas=2)
        with pytest.raises(ConfigError) as caught:
            check_redis_replicas(settings, {"a:1": 1, "b:2": 1, "c:3": 0})
        text = str(caught.value)
        assert "SEGSTREAM_REDIS_MIN_REPLICAS is 2" in text
        assert "primary c:3 has 0 replica(s)" in text
        assert "3 primaries are short" in text
        assert "SEGSTREAM_REDIS_MIN_REPLICAS=0" in text

    def test_some_primaries_short_of_replicas_are_returned_to_be_written_degraded(self) -> None:
        settings = load_settings(redis_min_replicas=2)
        short = check_redis_replicas(settings, {"a:1": 2, "b:2": 1, "c:3": 0})
        assert short == {"b:2": 1, "c:3": 0}

    def test_the_cluster_default_is_named_when_the_setting_is_unset(self) -> None:
        with pytest.raises(ConfigError, match="unset, so 1 on a Redis Cluster"):
            check_redis_replicas(load_settings(redis_cluster=True), {"a:1": 0})

    def test_a_wait_timeout_not_shorter_than_the_socket_timeout_is_refused(self) -> None:
        with pytest.raises(ConfigError, match="SEGSTREAM_REDIS_WAIT_TIMEOUT_MS"):
            load_settings(redis_wait_timeout_ms=5000, redis_socket_timeout_s=5)
        assert load_settings(redis_wait_timeout_ms=4999, redis_socket_timeout_s=5)
