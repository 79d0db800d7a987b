"""The product's settings and the local stack's are two classes sharing one prefix: every
``SEGSTREAM_*`` name belongs to exactly one, and a name given in code to the wrong one fails."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from segstream.errors import ConfigError
from segstream.settings import (
    ENV_PREFIX,
    SETTINGS_CLASSES,
    Settings,
    StackSettings,
    as_environment,
    load_settings,
    load_stack_settings,
    unknown_variables,
)

STACK_ONLY = {
    "kafka_port",
    "kafka_controller_port",
    "redis_port",
    "prometheus_port",
    "kafka_jars_dir",
    "kafka_heap_mb",
    "postgres_port",
    "connect_port",
    "connect_heap_mb",
    "jvm_options",
}
"""The fields moved out of Settings: a user's SEGSTREAM_<NAME> for each must keep working."""


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith(ENV_PREFIX):
            monkeypatch.delenv(name)


def test_no_field_is_declared_in_both_classes() -> None:
    assert set(Settings.model_fields).isdisjoint(StackSettings.model_fields)


def test_the_stack_holds_exactly_the_local_servers_settings() -> None:
    assert set(StackSettings.model_fields) == STACK_ONLY
    assert "data_dir" in Settings.model_fields  # the worker and CDC read it too


@pytest.mark.parametrize("name", sorted({*Settings.model_fields, *StackSettings.model_fields}))
def test_every_variable_is_accepted_by_exactly_one_class(name: str) -> None:
    variable = f"{ENV_PREFIX}{name.upper()}"
    owners = [cls for cls in SETTINGS_CLASSES if name in cls.model_fields]
    assert len(owners) == 1, owners
    assert unknown_variables({variable: "x"}) == []  # no "not a setting" warning for it


@pytest.mark.parametrize(
    ("variable", "value", "field", "expected"),
    [
        ("SEGSTREAM_KAFKA_PORT", "19092", "kafka_port", 19092),
        ("SEGSTREAM_KAFKA_CONTROLLER_PORT", "19099", "kafka_controller_port", 19099),
        ("SEGSTREAM_REDIS_PORT", "16379", "redis_port", 16379),
        ("SEGSTREAM_PROMETHEUS_PORT", "19090", "prometheus_port", 19090),
        ("SEGSTREAM_KAFKA_JARS_DIR", "/opt/jars", "kafka_jars_dir", Path("/opt/jars")),
        ("SEGSTREAM_KAFKA_HEAP_MB", "1024", "kafka_heap_mb", 1024),
        ("SEGSTREAM_POSTGRES_PORT", "15432", "postgres_port", 15432),
        ("SEGSTREAM_CONNECT_PORT", "18083", "connect_port", 18083),
        ("SEGSTREAM_CONNECT_HEAP_MB", "1024", "connect_heap_mb", 1024),
        (
            "SEGSTREAM_JVM_OPTIONS",
            "-Xss1m -XX:+UseSerialGC",
            "jvm_options",
            "-Xss1m -XX:+UseSerialGC",
        ),
    ],
)
def test_the_stack_reads_the_same_variables_as_before(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, field: str, expected: object
) -> None:
    monkeypatch.setenv(variable, value)
    assert getattr(load_stack_settings(), field) == expected
    load_settings()  # the product ignores it, without complaint


def test_the_controller_port_follows_the_kafka_port_unless_set() -> None:
    assert load_stack_settings(kafka_port=19092).controller_port == 19093
    assert load_stack_settings(kafka_port=19092, kafka_controller_port=20000).controller_port == (
        20000
    )


def test_an_invalid_stack_variable_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEGSTREAM_KAFKA_HEAP_MB", "12")
    with pytest.raises(ConfigError, match="SEGSTREAM_KAFKA_HEAP_MB"):
        load_stack_settings()


def test_jvm_options_are_split_as_a_shell_would() -> None:
    stack = load_stack_settings(jvm_options="-Dname='two words' -XX:+UseSerialGC")
    assert stack.jvm_option_list == ["-Dname=two words", "-XX:+UseSerialGC"]
    assert load_stack_settings(jvm_options="").jvm_option_list == []


@pytest.mark.parametrize(
    ("value", "cause"),
    [
        ("-Xss1m UseSerialGC", "starts with '-'"),
        ("-Dname='unclosed", "split .* No closing quotation"),
    ],
)
def test_a_jvm_option_that_is_not_one_is_refused_by_name(
    monkeypatch: pytest.MonkeyPatch, value: str, cause: str
) -> None:
    monkeypatch.setenv("SEGSTREAM_JVM_OPTIONS", value)
    with pytest.raises(ConfigError, match=f"SEGSTREAM_JVM_OPTIONS(.|\\n)*{cause}"):
        load_stack_settings()


class TestNamesGivenInCode:
    """A stack field given to the product's class (or the reverse) would be dropped by
    ``extra="ignore"``, and a test would run on the default ports: it fails instead."""

    def test_a_stack_override_on_the_product_names_its_class(self) -> None:
        with pytest.raises(TypeError, match=r"Settings has no field 'kafka_port' .*StackSettings"):
            load_settings(kafka_port=19092)

    def test_a_product_override_on_the_stack_names_its_class(self) -> None:
        with pytest.raises(TypeError, match=r"StackSettings has no field 'app_id' .*Settings"):
            load_stack_settings(app_id="x")

    def test_an_unknown_override_is_refused(self) -> None:
        with pytest.raises(TypeError, match=r"'kafka_prot' \(no settings class has it\)"):
            load_stack_settings(kafka_prot=1)

    def test_the_constructors_check_too(self) -> None:
        with pytest.raises(TypeError, match="redis_port"):
            Settings(redis_port=16379)  # type: ignore[call-arg]

    def test_a_copy_with_the_other_classs_field_is_refused(self) -> None:
        with pytest.raises(TypeError, match=r"'redis_port' .*StackSettings"):
            load_settings().model_copy(update={"redis_port": 16379})
        with pytest.raises(TypeError, match=r"'data_dir' .*Settings"):
            load_stack_settings().model_copy(update={"data_dir": Path("x")})

    def test_a_copy_with_its_own_field_works(self) -> None:
        assert load_stack_settings().model_copy(update={"redis_port": 16379}).redis_port == 16379

    def test_unknown_environment_variables_stay_ignored(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("SEGSTREAM_FROM_A_NEWER_VERSION", "1")
        assert load_settings().app_id == "segstream"
        assert load_stack_settings().kafka_port == 9092


def test_a_child_keeps_the_stack_variables_it_was_given() -> None:
    env = as_environment(load_settings(), {"SEGSTREAM_KAFKA_PORT": "19092", "SEGSTREAM_OLD": "x"})
    assert env["SEGSTREAM_KAFKA_PORT"] == "19092"
    assert "SEGSTREAM_OLD" not in env


def test_a_child_given_the_stack_loads_exactly_it() -> None:
    stack = load_stack_settings(kafka_port=19092, redis_port=16379)
    env = as_environment(load_settings(), {"SEGSTREAM_KAFKA_PORT": "9"}, stack)
    assert env["SEGSTREAM_KAFKA_PORT"] == "19092"
    child = {k.removeprefix(ENV_PREFIX).lower(): v for k, v in env.items()}
    assert StackSettings(**{k: v for k, v in child.items() if k in STACK_ONLY}) == stack
