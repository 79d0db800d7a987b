"""Building the Kafka clients segstream uses, from :class:`~segstream.settings.Settings`.

Every producer, consumer and admin client of the product is built here, so the connection
options (servers, TLS, SASL) are set in one place; Faust's own clients get the same security
through :func:`faust_credentials`. Callers pass what differs per use (a group, timeouts, fetch
sizes) as keyword arguments, which override the common options.
"""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient

from segstream.errors import ConfigError
from segstream.settings import Settings

if TYPE_CHECKING:
    from faust.types.auth import CredentialsT

__all__ = [
    "admin_client",
    "connection_options",
    "connection_problem",
    "consumer",
    "faust_credentials",
    "output_producer",
    "producer",
    "tls_context",
]


def tls_context(
    cafile: Path | None, certfile: Path | None, keyfile: Path | None, prefix: str
) -> ssl.SSLContext:
    """A client TLS context that verifies the server's certificate and host name.

    Args:
        cafile: PEM CAs to trust; the system's CAs if None.
        certfile, keyfile: the client's certificate and key for mutual TLS, if given.
        prefix: the settings' variable prefix (``SEGSTREAM_KAFKA_SSL_``), for messages.

    Raises:
        ConfigError: a file is not PEM, or the key does not match the certificate; naming
            the variable to fix.
    """
    try:
        context = ssl.create_default_context(cafile=str(cafile) if cafile else None)
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(f"{prefix}CAFILE {str(cafile)!r} holds no usable CA: {exc}") from exc
    if certfile is not None:
        try:
            context.load_cert_chain(str(certfile), str(keyfile) if keyfile else None)
        except (ssl.SSLError, OSError) as exc:
            raise ConfigError(
                f"{prefix}CERTFILE {str(certfile)!r} / {prefix}KEYFILE {str(keyfile)!r} are "
                f"not a PEM certificate and its (unencrypted) key: {exc}"
            ) from exc
    return context


def _kafka_tls(settings: Settings) -> ssl.SSLContext | None:
    if settings.kafka_security_protocol not in ("SSL", "SASL_SSL"):
        return None
    return tls_context(
        settings.kafka_ssl_cafile,
        settings.kafka_ssl_certfile,
        settings.kafka_ssl_keyfile,
        "SEGSTREAM_KAFKA_SSL_",
    )


def connection_options(settings: Settings) -> dict[str, Any]:
    """The options every Kafka client gets: where the brokers are and how to authenticate.

    Raises:
        ConfigError: a TLS file cannot be used (see :func:`tls_context`).
    """
    protocol = settings.kafka_security_protocol
    options: dict[str, Any] = {
        "bootstrap_servers": settings.kafka_bootstrap_servers,
        "security_protocol": protocol,
    }
    context = _kafka_tls(settings)
    if context is not None:
        options["ssl_context"] = context
    if protocol.startswith("SASL_"):
        # Settings guarantee both are set for a SASL protocol.
        assert settings.kafka_sasl_password is not None
        options["sasl_mechanism"] = settings.kafka_sasl_mechanism
        options["sasl_plain_username"] = settings.kafka_sasl_username
        options["sasl_plain_password"] = settings.kafka_sasl_password.get_secret_value()
    return options


def faust_credentials(settings: Settings) -> CredentialsT | None:
    """The same security as :func:`connection_options`, as Faust's ``broker_credentials``.

    None for PLAINTEXT. Raises ConfigError as :func:`connection_options` does.
    """
    from faust.auth import SASLCredentials, SSLCredentials

    protocol = settings.kafka_security_protocol
    context = _kafka_tls(settings)
    if protocol == "SSL":
        return SSLCredentials(context)
    if protocol.startswith("SASL_"):
        assert settings.kafka_sasl_password is not None
        # With a TLS context Faust uses SASL_SSL, without one SASL_PLAINTEXT.
        return SASLCredentials(
            username=settings.kafka_sasl_username,
            password=settings.kafka_sasl_password.get_secret_value(),
            ssl_context=context,
            mechanism=settings.kafka_sasl_mechanism,
        )
    return None


def admin_client(settings: Settings, **options: Any) -> AIOKafkaAdminClient:
    """An admin client (not started)."""
    return AIOKafkaAdminClient(**{**connection_options(settings), **options})


def consumer(settings: Settings, *topics: str, **options: Any) -> AIOKafkaConsumer:
    """A consumer (not started), subscribed to ``topics`` if any are given."""
    return AIOKafkaConsumer(*topics, **{**connection_options(settings), **options})


def producer(settings: Settings, **options: Any) -> AIOKafkaProducer:
    """A producer (not started)."""
    return AIOKafkaProducer(**{**connection_options(settings), **options})


OUTPUT_BATCH_BYTES = 256 * 1024
"""Largest record batch the output producer builds, in bytes (less if the limit is lower)."""


DEFAULT_REQUEST_BYTES = 1024 * 1024
"""The Kafka clients' default ``max_request_size`` (1 MiB), for outputs that are all small."""


def output_producer(
    settings: Settings, max_request_size: int = DEFAULT_REQUEST_BYTES
) -> AIOKafkaProducer:
    """The producer of the worker's outputs (not started).

    Its own aiokafka producer rather than Faust's: the publisher appends records to record
    batches directly, which Faust's producer does not expose. Idempotent with ``acks="all"``:
    a record is acknowledged once every in-sync replica has it, and the producer's own
    retries neither duplicate nor reorder it.

    Args:
        max_request_size: the largest record batch the broker accepts, in bytes (the
            dead-letter topic's ``max.message.bytes``, :func:`segstream.stream.kafka.topics.
            max_message_bytes`). A record above it is refused by the producer itself, and
            batches are built no larger, so the broker never refuses one for its size. The
            default suits a producer of segment changes only (``segstream reassign``).
    """
    return producer(
        settings,
        acks="all",
        enable_idempotence=True,
        linger_ms=0,
        max_batch_size=min(OUTPUT_BATCH_BYTES, max_request_size),
        max_request_size=max_request_size,
    )


async def connection_problem(settings: Settings, timeout_s: float = 5.0) -> str | None:
    """Why a client of ``settings`` cannot talk to the first bootstrap broker, if it is a
    problem of configuration; None when a connection succeeds or the broker is simply down.

    aiokafka logs the cause of a failed bootstrap and raises only "Unable to bootstrap", so
    a caller that got that error asks here which setting to change: refused SASL
    credentials, an untrusted certificate, or a security protocol the listener does not
    speak. Those never heal by retrying.
    """
    from aiokafka.conn import create_conn
    from aiokafka.errors import (
        KafkaConnectionError,
        SaslAuthenticationFailed,
        UnsupportedSaslMechanismError,
    )

    host, _, port = settings.kafka_bootstrap_servers.split(",")[0].strip().rpartition(":")
    options = connection_options(settings)
    options.pop("bootstrap_servers")
    where = f"Kafka at {host}:{port}"
    protocol = settings.kafka_security_protocol
    try:
        async with asyncio.timeout(timeout_s):
            conn = await create_conn(
                host, int(port), request_timeout_ms=int(timeout_s * 1000), **options
            )
        conn.close()
    except SaslAuthenticationFailed:
        return (
            f"{where} refused the SASL credentials ({settings.kafka_sasl_mechanism}, user "
            f"{settings.kafka_sasl_username!r}): check SEGSTREAM_KAFKA_SASL_USERNAME, "
            "SEGSTREAM_KAFKA_SASL_PASSWORD and SEGSTREAM_KAFKA_SASL_MECHANISM"
        )
    except UnsupportedSaslMechanismError:
        return (
            f"{where} does not offer SASL mechanism {settings.kafka_sasl_mechanism}: "
            "check SEGSTREAM_KAFKA_SASL_MECHANISM"
        )
    except ssl.SSLCertVerificationError as exc:
        return (
            f"{where} presented a certificate this client does not trust "
            f"({exc.verify_message}): set SEGSTREAM_KAFKA_SSL_CAFILE to the CA that signed it"
        )
    except ssl.SSLError as exc:
        return (
            f"{where} did not complete a TLS handshake ({exc.reason}): is its listener TLS? "
            f"SEGSTREAM_KAFKA_SECURITY_PROTOCOL is {protocol}"
        )
    except KafkaConnectionError as exc:
        if "closed" in str(exc) and protocol in ("PLAINTEXT", "SASL_PLAINTEXT"):
            return (
                f"{where} closed the connection at once: its listener likely expects TLS or "
                f"SASL while SEGSTREAM_KAFKA_SECURITY_PROTOCOL is {protocol}"
            )
        return None
    except (OSError, TimeoutError):
        return None  # down or unreachable: worth retrying
    return None
