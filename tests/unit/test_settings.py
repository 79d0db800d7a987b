"""Settings come from SEGSTREAM_* variables, with defaults, and fail loudly when wrong."""

from __future__ import annotations

from pathlib import Path

import pytest

from segstream.errors import ConfigError
from segstream.settings import Settings, load_settings, load_stack_settings


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("SEGSTREAM_"):
            monkeypatch.delenv(name)


def test_defaults_point_at_the_local_stack() -> None:
    settings = load_settings()
    assert settings.kafka_bootstrap_servers == "127.0.0.1:9092"
    assert settings.redis_url == "redis://127.0.0.1:6379/0"
    assert settings.model_dir == Path("models")
    assert settings.topic_segment_changes == "segment-changes"
    assert load_stack_settings().controller_port == 9093


def test_environment_variables_with_the_prefix_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEGSTREAM_KAFKA_BOOTSTRAP_SERVERS", "broker-a:9092,broker-b:9093")
    monkeypatch.setenv("SEGSTREAM_REDIS_URL", "redis://cache:6380/2")
    monkeypatch.setenv("SEGSTREAM_MODEL_DIR", "/srv/models")
    monkeypatch.setenv("SEGSTREAM_TOPIC_ORDERS", "shop.orders")
    monkeypatch.setenv("SEGSTREAM_BATCH_SIZE", "250")
    settings = load_settings()
    assert settings.kafka_bootstrap_servers == "broker-a:9092,broker-b:9093"
    assert settings.redis_url == "redis://cache:6380/2"
    assert settings.model_dir == Path("/srv/models")
    assert settings.topic_orders == "shop.orders"
    assert settings.batch_size == 250


def test_unprefixed_variables_are_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_URL", "redis://elsewhere:1/0")
    assert load_settings().redis_url == "redis://127.0.0.1:6379/0"


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("SEGSTREAM_KAFKA_BOOTSTRAP_SERVERS", "no-port"),
        ("SEGSTREAM_KAFKA_BOOTSTRAP_SERVERS", "host:99999"),
        ("SEGSTREAM_REDIS_URL", "http://127.0.0.1:6379"),
        ("SEGSTREAM_BATCH_SIZE", "0"),
        ("SEGSTREAM_HTTP_PORT", "not-a-number"),
        ("SEGSTREAM_DRIFT", "sometimes"),
    ],
)
def test_invalid_value_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError, match=variable):
        load_settings()


def test_topic_names_must_be_distinct(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEGSTREAM_TOPIC_ORDERS", "users")
    with pytest.raises(ConfigError, match="distinct"):
        load_settings()


def test_settings_are_frozen() -> None:
    settings = load_settings()
    with pytest.raises(ValueError):
        settings.batch_size = 5  # type: ignore[misc]
    assert isinstance(settings, Settings)


def test_readme_documents_every_setting_with_its_default() -> None:
    from segstream.settings import settings_table

    readme = (Path(__file__).parents[2] / "README.md").read_text()
    for variable, default, _ in settings_table():
        shown = f"`{default}`" if default else "unset"
        assert f"| `{variable}` | {shown} |" in readme, variable


@pytest.mark.parametrize("value", ["DEBUG", "debug", "Info", "WARNING"])
def test_the_log_level_is_accepted_in_any_case(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("SEGSTREAM_LOG_LEVEL", value)
    assert load_settings().log_level == value.lower()


def test_an_unknown_log_level_is_refused_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEGSTREAM_LOG_LEVEL", "LOUD")
    with pytest.raises(ConfigError, match="SEGSTREAM_LOG_LEVEL"):
        load_settings()
