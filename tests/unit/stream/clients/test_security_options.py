"""The Kafka and Redis factories give every client the configured TLS and credentials."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

import pytest
from faust.auth import SASLCredentials, SSLCredentials

from segstream.errors import ConfigError
from segstream.services.tls import Certificates, issue_certificates
from segstream.settings import Settings
from segstream.stream.clients import kafka, redis


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return issue_certificates(tmp_path_factory.mktemp("ca"))


def _sasl_ssl(certs: Certificates, **extra: object) -> Settings:
    return Settings(
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_mechanism="SCRAM-SHA-512",
        kafka_sasl_username="worker",
        kafka_sasl_password="kpw",  # type: ignore[arg-type]
        kafka_ssl_cafile=certs.ca,
        **extra,  # type: ignore[arg-type]
    )


class TestKafkaOptions:
    def test_plaintext_gets_no_security_options(self) -> None:
        assert kafka.connection_options(Settings()) == {
            "bootstrap_servers": "127.0.0.1:9092",
            "security_protocol": "PLAINTEXT",
        }
        assert kafka.faust_credentials(Settings()) is None

    def test_sasl_ssl_gets_credentials_and_a_verifying_context(self, certs: Certificates) -> None:
        options = kafka.connection_options(_sasl_ssl(certs))
        assert options["security_protocol"] == "SASL_SSL"
        assert options["sasl_mechanism"] == "SCRAM-SHA-512"
        assert options["sasl_plain_username"] == "worker"
        assert options["sasl_plain_password"] == "kpw"
        context = options["ssl_context"]
        assert context.verify_mode == ssl.CERT_REQUIRED
        assert context.check_hostname is True
        assert [c["subject"] for c in context.get_ca_certs()] == [
            ((("commonName", "segstream local CA"),),)
        ]

    def test_every_client_gets_the_options(self, certs: Certificates) -> None:
        settings = _sasl_ssl(certs)

        async def build() -> list[object]:
            # aiokafka clients are built inside a running loop; none is started here.
            return [
                kafka.producer(settings).client,
                kafka.output_producer(settings).client,
                kafka.consumer(settings, "t", group_id="g")._client,
                kafka.admin_client(settings)._client,
            ]

        for client in asyncio.run(build()):
            assert client._security_protocol == "SASL_SSL"  # type: ignore[attr-defined]
            assert client._sasl_mechanism == "SCRAM-SHA-512"  # type: ignore[attr-defined]
            assert client._sasl_plain_password == "kpw"  # type: ignore[attr-defined]
            assert client._ssl_context.verify_mode == ssl.CERT_REQUIRED  # type: ignore[attr-defined]

    def test_faust_gets_the_same_security(self, certs: Certificates) -> None:
        credentials = kafka.faust_credentials(_sasl_ssl(certs))
        assert isinstance(credentials, SASLCredentials)
        assert credentials.protocol.value == "SASL_SSL"
        assert credentials.mechanism.value == "SCRAM-SHA-512"
        assert (credentials.username, credentials.password) == ("worker", "kpw")
        assert "kpw" not in repr(credentials)

    def test_ssl_alone_gives_faust_an_ssl_context(self, certs: Certificates) -> None:
        settings = Settings(
            kafka_security_protocol="SSL",
            kafka_ssl_cafile=certs.ca,
            kafka_ssl_certfile=certs.client_cert,
            kafka_ssl_keyfile=certs.client_key,
        )
        credentials = kafka.faust_credentials(settings)
        assert isinstance(credentials, SSLCredentials)
        assert credentials.protocol.value == "SSL"
        assert "sasl_mechanism" not in kafka.connection_options(settings)

    def test_sasl_plaintext_has_no_tls(self) -> None:
        settings = Settings(
            kafka_security_protocol="SASL_PLAINTEXT",
            kafka_sasl_username="u",
            kafka_sasl_password="p",  # type: ignore[arg-type]
        )
        assert "ssl_context" not in kafka.connection_options(settings)
        credentials = kafka.faust_credentials(settings)
        assert isinstance(credentials, SASLCredentials)
        assert credentials.protocol.value == "SASL_PLAINTEXT"

    def test_a_ca_file_that_is_not_pem_names_the_variable(self, tmp_path: Path) -> None:
        bogus = tmp_path / "ca.pem"
        bogus.write_text("not a certificate")
        settings = Settings(kafka_security_protocol="SSL", kafka_ssl_cafile=bogus)
        with pytest.raises(ConfigError, match="SEGSTREAM_KAFKA_SSL_CAFILE"):
            kafka.connection_options(settings)

    def test_a_key_that_does_not_match_names_both_files(self, certs: Certificates) -> None:
        settings = Settings(
            kafka_security_protocol="SSL",
            kafka_ssl_certfile=certs.client_cert,
            kafka_ssl_keyfile=certs.server_key,
        )
        with pytest.raises(
            ConfigError, match=r"SEGSTREAM_KAFKA_SSL_CERTFILE .* SEGSTREAM_KAFKA_SSL_KEYFILE"
        ):
            kafka.connection_options(settings)


class TestRedisOptions:
    def test_a_plain_url_gets_no_options(self) -> None:
        assert redis.connection_options(Settings()) == {}

    def test_credentials_and_tls_files(self, certs: Certificates) -> None:
        settings = Settings(
            redis_url="rediss://segstream:rpw@127.0.0.1:6380/0",
            redis_ssl_cafile=certs.ca,
            redis_ssl_certfile=certs.client_cert,
            redis_ssl_keyfile=certs.client_key,
        )
        assert redis.connection_options(settings) == {
            "username": "segstream",
            "password": "rpw",
            "ssl_cert_reqs": "required",
            "ssl_check_hostname": True,
            "ssl_ca_certs": str(certs.ca),
            "ssl_certfile": str(certs.client_cert),
            "ssl_keyfile": str(certs.client_key),
        }

    def test_clients_connect_with_them(self, certs: Certificates) -> None:
        settings = Settings(
            redis_url="rediss://segstream:rpw@127.0.0.1:6380/0", redis_ssl_cafile=certs.ca
        )
        for client in (redis.sync_redis_client(settings), redis.redis_client(settings)):
            kwargs = client.connection_pool.connection_kwargs
            assert (kwargs["username"], kwargs["password"]) == ("segstream", "rpw")
            assert kwargs["ssl_ca_certs"] == str(certs.ca)
            # Explicit: redis-py 5.x defaulted it off; kept on whatever version is installed.
            assert kwargs["ssl_check_hostname"] is True
            assert client.connection_pool.connection_class.__name__ == "SSLConnection"

    @pytest.mark.parametrize(
        "reason",
        [
            "IP address mismatch, certificate is not valid for '127.0.0.1'",
            "Hostname mismatch, certificate is not valid for 'redis.internal'",
        ],
    )
    def test_a_certificate_for_another_host_is_named_as_such(self, reason: str) -> None:
        settings = Settings(redis_url="rediss://127.0.0.1:6380/0")
        exc = OSError(f"[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: {reason}")
        problem = redis.connection_problem(settings, exc)
        assert problem is not None
        assert "certificate issued for another host name" in problem
        assert "SEGSTREAM_REDIS_URL" in problem
        assert "SEGSTREAM_REDIS_SSL_CAFILE" not in problem  # the CA is not the cause


def test_a_cluster_setting_gives_a_cluster_client_seeded_from_the_url() -> None:
    from redis.asyncio.cluster import RedisCluster

    from segstream.stream.clients.redis import redis_client

    plain = redis_client(Settings(redis_url="redis://127.0.0.1:7000/0"))
    clustered = redis_client(Settings(redis_url="redis://127.0.0.1:7000/0", redis_cluster=True))
    assert not isinstance(plain, RedisCluster)
    assert isinstance(clustered, RedisCluster)
