"""Security settings: Kafka TLS/SASL, Redis credentials and TLS, the HTTP token, typos."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from segstream.errors import ConfigError
from segstream.services.tls import Certificates, issue_certificates
from segstream.settings import Settings, as_environment, load_settings, unknown_variables


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("SEGSTREAM_"):
            monkeypatch.delenv(name)


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return issue_certificates(tmp_path_factory.mktemp("ca"))


def _error(monkeypatch: pytest.MonkeyPatch, **variables: str) -> str:
    for name, value in variables.items():
        monkeypatch.setenv(f"SEGSTREAM_{name.upper()}", value)
    with pytest.raises(ConfigError) as caught:
        load_settings()
    return str(caught.value)


class TestKafkaSecurity:
    def test_plaintext_by_default(self) -> None:
        settings = load_settings()
        assert settings.kafka_security_protocol == "PLAINTEXT"
        assert settings.kafka_sasl_password is None

    def test_sasl_ssl_with_scram_is_read(
        self, monkeypatch: pytest.MonkeyPatch, certs: Certificates
    ) -> None:
        monkeypatch.setenv("SEGSTREAM_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
        monkeypatch.setenv("SEGSTREAM_KAFKA_SASL_MECHANISM", "SCRAM-SHA-512")
        monkeypatch.setenv("SEGSTREAM_KAFKA_SASL_USERNAME", "worker")
        monkeypatch.setenv("SEGSTREAM_KAFKA_SASL_PASSWORD", "s3cret-kafka")
        monkeypatch.setenv("SEGSTREAM_KAFKA_SSL_CAFILE", str(certs.ca))
        settings = load_settings()
        assert settings.kafka_sasl_mechanism == "SCRAM-SHA-512"
        assert settings.kafka_sasl_password is not None
        assert settings.kafka_sasl_password.get_secret_value() == "s3cret-kafka"
        assert "s3cret-kafka" not in repr(settings)
        assert settings.kafka_ssl_cafile == certs.ca

    @pytest.mark.parametrize("missing", ["KAFKA_SASL_USERNAME", "KAFKA_SASL_PASSWORD"])
    def test_sasl_without_a_credential_names_it(
        self, monkeypatch: pytest.MonkeyPatch, missing: str
    ) -> None:
        given = {"kafka_sasl_username": "worker", "kafka_sasl_password": "pw"}
        del given[missing.lower()]
        message = _error(monkeypatch, kafka_security_protocol="SASL_PLAINTEXT", **given)
        assert f"SEGSTREAM_{missing} is required" in message
        assert "SASL_PLAINTEXT" in message

    def test_an_empty_password_counts_as_missing(self, monkeypatch: pytest.MonkeyPatch) -> None:
        message = _error(
            monkeypatch,
            kafka_security_protocol="SASL_SSL",
            kafka_sasl_username="worker",
            kafka_sasl_password="",
        )
        assert "SEGSTREAM_KAFKA_SASL_PASSWORD is required" in message

    def test_a_missing_ca_file_names_the_variable_and_path(
        self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
    ) -> None:
        message = _error(
            monkeypatch, kafka_security_protocol="SSL", kafka_ssl_cafile=str(tmp_path / "ca.pem")
        )
        assert "SEGSTREAM_KAFKA_SSL_CAFILE: no such file" in message
        assert str(tmp_path / "ca.pem") in message

    def test_a_certificate_without_its_key_is_refused(
        self, monkeypatch: pytest.MonkeyPatch, certs: Certificates
    ) -> None:
        message = _error(
            monkeypatch, kafka_security_protocol="SSL", kafka_ssl_certfile=str(certs.client_cert)
        )
        expected = "SEGSTREAM_KAFKA_SSL_KEYFILE is required with SEGSTREAM_KAFKA_SSL_CERTFILE"
        assert expected in message

    @pytest.mark.parametrize(
        ("variable", "value"),
        [("kafka_sasl_username", "worker"), ("kafka_ssl_cafile", "/etc/hostname")],
    )
    def test_security_options_the_protocol_would_ignore_are_refused(
        self, monkeypatch: pytest.MonkeyPatch, variable: str, value: str
    ) -> None:
        message = _error(monkeypatch, **{variable: value})
        assert f"SEGSTREAM_{variable.upper()} is set but" in message
        assert "PLAINTEXT" in message

    def test_an_unknown_mechanism_names_the_variable(self, monkeypatch: pytest.MonkeyPatch) -> None:
        assert "SEGSTREAM_KAFKA_SASL_MECHANISM" in _error(
            monkeypatch, kafka_sasl_mechanism="GSSAPI"
        )


class TestRedisCredentials:
    def test_user_and_password_move_out_of_the_url(self) -> None:
        settings = Settings(redis_url="redis://app:p%40ss@cache:6380/2")
        assert settings.redis_url == "redis://cache:6380/2"
        assert settings.redis_username == "app"
        assert settings.redis_password is not None
        assert settings.redis_password.get_secret_value() == "p@ss"
        assert settings.redis_display == "redis://app:***@cache:6380/2"
        assert "p@ss" not in repr(settings) and "p%40ss" not in repr(settings)

    def test_a_password_alone_in_the_url(self) -> None:
        settings = Settings(redis_url="rediss://:hunter2@cache:6380/0")
        assert settings.redis_username is None
        assert settings.redis_display == "rediss://:***@cache:6380/0"

    def test_separate_variables_give_the_same_settings(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("SEGSTREAM_REDIS_URL", "redis://cache:6380/2")
        monkeypatch.setenv("SEGSTREAM_REDIS_USERNAME", "app")
        monkeypatch.setenv("SEGSTREAM_REDIS_PASSWORD", "p@ss")
        assert load_settings() == Settings(redis_url="redis://app:p%40ss@cache:6380/2")

    def test_a_url_without_credentials_is_shown_as_it_is(self) -> None:
        assert Settings().redis_display == "redis://127.0.0.1:6379/0"

    def test_two_different_passwords_are_refused(self, monkeypatch: pytest.MonkeyPatch) -> None:
        message = _error(
            monkeypatch,
            redis_url="redis://app:first-secret@cache:6379/0",
            redis_password="second-secret",
        )
        assert "SEGSTREAM_REDIS_URL and SEGSTREAM_REDIS_PASSWORD" in message
        assert "first-secret" not in message
        assert "second-secret" not in message

    def test_a_malformed_url_with_a_password_does_not_echo_it(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        message = _error(monkeypatch, redis_url="http://app:hunter2@cache:6379/0")
        assert "SEGSTREAM_REDIS_URL" in message
        assert "hunter2" not in message

    def test_tls_files_need_a_rediss_url(
        self, monkeypatch: pytest.MonkeyPatch, certs: Certificates
    ) -> None:
        message = _error(monkeypatch, redis_ssl_cafile=str(certs.ca))
        assert "SEGSTREAM_REDIS_SSL_CAFILE is set but SEGSTREAM_REDIS_URL is not a rediss://" in (
            message
        )

    def test_rediss_with_a_missing_key_file(
        self, monkeypatch: pytest.MonkeyPatch, certs: Certificates, tmp_path: Path
    ) -> None:
        message = _error(
            monkeypatch,
            redis_url="rediss://cache:6379/0",
            redis_ssl_certfile=str(certs.client_cert),
            redis_ssl_keyfile=str(tmp_path / "nope.pem"),
        )
        assert "SEGSTREAM_REDIS_SSL_KEYFILE: no such file" in message


class TestSecretsInAChildEnvironment:
    def test_a_child_loads_the_same_secrets(self, certs: Certificates) -> None:
        settings = Settings(
            redis_url="rediss://app:pw@cache:6379/0",
            redis_ssl_cafile=certs.ca,
            kafka_security_protocol="SASL_SSL",
            kafka_sasl_username="worker",
            kafka_sasl_password="kpw",  # type: ignore[arg-type]
            http_token="tok",  # type: ignore[arg-type]
        )
        env = as_environment(settings, {"PATH": "/bin", "SEGSTREAM_OLD": "x"})
        assert env["SEGSTREAM_KAFKA_SASL_PASSWORD"] == "kpw"
        assert env["SEGSTREAM_REDIS_PASSWORD"] == "pw"
        assert "SEGSTREAM_KAFKA_SSL_CAFILE" not in env  # unset stays unset
        assert "SEGSTREAM_OLD" not in env
        child = {k.removeprefix("SEGSTREAM_").lower(): v for k, v in env.items() if k != "PATH"}
        assert Settings(**child) == settings


class TestUnknownVariables:
    def test_a_typo_is_named_with_the_closest_setting(self) -> None:
        found = unknown_variables({"SEGSTREAM_REDIS_PASWORD": "x", "SEGSTREAM_APP_ID": "a"})
        assert found == [("SEGSTREAM_REDIS_PASWORD", "SEGSTREAM_REDIS_PASSWORD")]

    def test_nothing_close_gives_no_suggestion(self) -> None:
        assert unknown_variables({"SEGSTREAM_ZZZ": "1", "OTHER_REDIS_PASWORD": "x"}) == [
            ("SEGSTREAM_ZZZ", None)
        ]

    def test_loading_warns_once_per_unknown_variable(
        self, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
    ) -> None:
        monkeypatch.setenv("SEGSTREAM_BATCH_SIZ", "10")
        with caplog.at_level(logging.WARNING, logger="segstream.settings"):
            settings = load_settings()
        assert settings.batch_size == 2000  # ignored, not guessed
        warnings = [r.getMessage() for r in caplog.records if r.name == "segstream.settings"]
        assert warnings == [
            "SEGSTREAM_BATCH_SIZ is not a segstream setting and is ignored; "
            "did you mean SEGSTREAM_BATCH_SIZE?"
        ]
