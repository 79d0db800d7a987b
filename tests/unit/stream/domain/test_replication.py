"""Replication factor: min(3, brokers) unless SEGSTREAM_TOPIC_REPLICATION_FACTOR says otherwise."""

from __future__ import annotations

import os

import pytest

from segstream.errors import ConfigError
from segstream.settings import as_environment, load_settings
from segstream.stream.domain.replication import (
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
