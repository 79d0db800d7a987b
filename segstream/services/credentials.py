"""What the secured local stack (``segstream services up --secure``) authenticates with.

Under ``<data_dir>/``: ``tls/`` holds a throwaway CA and the servers' certificate
(:mod:`segstream.services.tls`), ``secrets/`` the Kafka and Redis passwords of the stack's one
user, each generated once into a file readable by its owner only. The passwords never go on a
command line that segstream prints or runs a server with (the config files that hold them are
owner-only too); clients read them from the files (:func:`client_settings`) or from the
``$(cat …)`` lines of :func:`client_environment`.
"""

from __future__ import annotations

import os
import secrets
import shlex
from pathlib import Path

from pydantic import SecretStr

from segstream.services.tls import Certificates, issue_certificates
from segstream.settings import Settings, StackSettings

__all__ = [
    "USER",
    "client_environment",
    "client_settings",
    "password",
    "password_file",
    "stack_certificates",
]

USER = "segstream"
"""The secured stack's Kafka SCRAM user and Redis ACL user."""


def password_file(settings: Settings, service: str) -> Path:
    """Where ``service``'s (``kafka`` or ``redis``) password is kept."""
    return settings.data_dir.resolve() / "secrets" / f"{service}-password"


def password(settings: Settings, service: str) -> str:
    """``service``'s password: read from its file, generated there (0600) the first time."""
    path = password_file(settings, service)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        os.chmod(path.parent, 0o700)
        # O_EXCL: two `up`s at once cannot each write a different password.
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as file:
            file.write(secrets.token_urlsafe(24))
    return path.read_text().strip()


def stack_certificates(settings: Settings) -> Certificates:
    """The stack's CA and certificates (issued the first time)."""
    return issue_certificates(settings.data_dir.resolve() / "tls")


def client_settings(settings: Settings, stack: StackSettings) -> Settings:
    """``settings`` as a client of the secured stack: SASL_SSL with SCRAM-SHA-512 to Kafka,
    TLS and the ACL user to Redis, the CA to trust, the passwords read from their files."""
    certificates = stack_certificates(settings)
    return settings.model_copy(
        update={
            "kafka_bootstrap_servers": f"127.0.0.1:{stack.kafka_port}",
            "kafka_security_protocol": "SASL_SSL",
            "kafka_sasl_mechanism": "SCRAM-SHA-512",
            "kafka_sasl_username": USER,
            "kafka_sasl_password": SecretStr(password(settings, "kafka")),
            "kafka_ssl_cafile": certificates.ca,
            "redis_url": f"rediss://127.0.0.1:{stack.redis_port}/0",
            "redis_username": USER,
            "redis_password": SecretStr(password(settings, "redis")),
            "redis_ssl_cafile": certificates.ca,
        }
    )


def client_environment(settings: Settings, stack: StackSettings) -> list[str]:
    """Shell lines exporting the ``SEGSTREAM_*`` variables a client of the secured stack
    needs; each password is a ``$(cat <file>)``, never its value."""
    client = client_settings(settings, stack)
    lines = []
    for name in (
        "kafka_bootstrap_servers",
        "kafka_security_protocol",
        "kafka_sasl_mechanism",
        "kafka_sasl_username",
        "kafka_sasl_password",
        "kafka_ssl_cafile",
        "redis_url",
        "redis_username",
        "redis_password",
        "redis_ssl_cafile",
    ):
        value = getattr(client, name)
        if isinstance(value, SecretStr):
            shown = f'"$(cat {shlex.quote(str(password_file(settings, name.split("_")[0])))})"'
        else:
            shown = shlex.quote(str(value))
        lines.append(f"export SEGSTREAM_{name.upper()}={shown}")
    return lines
