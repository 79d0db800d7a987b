"""A captured database of its own on the local PostgreSQL, for the demo and the bench.

:func:`scratch_settings` names one database's whole capture after it (database, topic
prefix, publication, slot, connector), so a demo or a bench run never touches the ``shop``
database a deployment captures; :func:`drop_scratch` removes all of it again (connector,
then slot once Connect let go of it, then the database).
"""

from __future__ import annotations

import contextlib
import time
import urllib.request
from typing import Any

from segstream.errors import ServiceError
from segstream.settings import Settings, StackSettings

__all__ = ["create_scratch", "drop_scratch", "owner_url", "registered", "scratch_settings"]


def scratch_settings(settings: Settings, stack: StackSettings, name: str) -> Settings:
    """``settings`` capturing database ``name`` of the local PostgreSQL (on ``stack``'s
    port), everything named ``name`` (topics ``<name>.<cdc_schema>.<table>``)."""
    from segstream.services.postgres import CDC_ROLE

    port = stack.postgres_port
    return settings.model_copy(
        update={
            "cdc_database_url": f"postgresql://{CDC_ROLE}@127.0.0.1:{port}/{name}",
            "cdc_topic_prefix": name,
            "cdc_publication": name,
            "cdc_slot": name,
            "cdc_connector_name": name,
        }
    )


def owner_url(settings: Settings, stack: StackSettings, database: str, *, driver: str = "") -> str:
    """The local superuser's URL of ``database`` with its password (``driver``: ``+psycopg``
    for SQLAlchemy)."""
    from segstream.services.credentials import password
    from segstream.services.postgres import SUPERUSER

    secret = password(settings, "postgres")
    return f"postgresql{driver}://{SUPERUSER}:{secret}@127.0.0.1:{stack.postgres_port}/{database}"


def create_scratch(settings: Settings, stack: StackSettings, name: str) -> str:
    """An empty database ``name`` (refused when it exists); returns its owner's URL."""
    from segstream.training.postgres_sink import connect

    with connect(owner_url(settings, stack, "postgres"), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return owner_url(settings, stack, name)


def registered(settings: Settings, prefix: str) -> list[str]:
    """The connectors of ``settings``' Kafka Connect whose name starts with ``prefix``.

    Raises:
        ServiceError: Kafka Connect does not answer.
    """
    import json

    try:
        with urllib.request.urlopen(f"{settings.connect_url}/connectors", timeout=30) as answer:
            names: list[str] = json.loads(answer.read())
    except (OSError, ValueError) as exc:
        raise ServiceError(
            f"Kafka Connect at {settings.connect_url} (SEGSTREAM_CONNECT_URL) does not list its "
            f"connectors: {exc}"
        ) from exc
    return sorted(name for name in names if name.startswith(prefix))


def drop_scratch(
    settings: Settings, stack: StackSettings, name: str, timeout_s: float = 60.0
) -> None:
    """Delete connector ``name`` (when registered), its replication slot and database.

    Raises:
        ServiceError: the slot stayed in use for ``timeout_s`` seconds.
    """
    from segstream.training.postgres_sink import connect

    request = urllib.request.Request(f"{settings.connect_url}/connectors/{name}", method="DELETE")
    with contextlib.suppress(OSError):  # not registered: nothing to delete
        urllib.request.urlopen(request, timeout=30).read()
    with connect(owner_url(settings, stack, "postgres"), autocommit=True) as conn:
        _drop_slot(conn, name, timeout_s)
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _drop_slot(conn: Any, slot: str, timeout_s: float) -> None:
    # The slot stays active until Connect's task has stopped reading it.
    deadline = time.monotonic() + timeout_s
    while True:
        row = conn.execute(
            "SELECT active FROM pg_replication_slots WHERE slot_name = %s", (slot,)
        ).fetchone()
        if row is None:
            return
        if not row[0]:
            conn.execute("SELECT pg_drop_replication_slot(%s)", (slot,))
            return
        if time.monotonic() > deadline:
            raise ServiceError(
                f"replication slot {slot} still in use after {timeout_s:.0f} s: stop the "
                f"connector {slot} in Kafka Connect, then drop it"
            )
        time.sleep(0.2)
