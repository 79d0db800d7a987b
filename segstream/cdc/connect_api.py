"""Kafka Connect's REST API, as far as segstream uses it: validate, put and watch one connector.

Every failure is a :class:`~segstream.errors.ServiceError` that names the cause and the setting
to change: Connect unreachable (``SEGSTREAM_CONNECT_URL``), a configuration Connect refuses
(each refused key with Connect's reason), a connector or task that failed (its trace's first
lines).
"""

from __future__ import annotations

import contextlib
import json
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

from segstream.errors import ServiceError
from segstream.settings import ENV_PREFIX, Settings

__all__ = ["ConnectorState", "connector_state", "current_config", "register"]

_TIMEOUT_S = 30.0
"""One REST request's timeout: validation loads the plugin's classes and connects to the
database, which takes seconds on a busy machine."""


@dataclass(frozen=True)
class ConnectorState:
    """A connector's state (``RUNNING``, ``FAILED``, ``PAUSED``, ``UNASSIGNED``) and its tasks'."""

    connector: str
    tasks: tuple[str, ...]
    trace: str = ""

    @property
    def running(self) -> bool:
        """The connector and at least one task run, none failed."""
        return self.connector == "RUNNING" and bool(self.tasks) and set(self.tasks) == {"RUNNING"}


def _request(settings: Settings, method: str, path: str, body: object = None) -> Any:
    """One JSON request to Connect; ``None`` for a 404.

    Raises:
        ServiceError: Connect does not answer, or answers with another error status.
    """
    url = f"{settings.connect_url}{path}"
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        url, data=data, method=method, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=_TIMEOUT_S) as reply:
            text = reply.read()
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return None
        detail = exc.read().decode(errors="replace")
        with contextlib.suppress(ValueError):
            detail = json.loads(detail).get("message", detail)
        raise ServiceError(
            f"Kafka Connect at {settings.connect_url} refused {method} {path} "
            f"(HTTP {exc.code}): {detail}"
        ) from exc
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ServiceError(
            f"Kafka Connect does not answer at {settings.connect_url} ({reason}): start it "
            f"(`segstream services up --cdc`) or point {ENV_PREFIX}CONNECT_URL at it"
        ) from exc
    return json.loads(text) if text else {}


def _validate(settings: Settings, config: dict[str, str]) -> None:
    """Ask Connect to validate ``config`` with the connector's own rules.

    Raises:
        ServiceError: naming each refused key with Connect's reason.
    """
    plugin = config["connector.class"].rsplit(".", 1)[-1]
    named = {"name": settings.cdc_connector_name, **config}
    result = _request(settings, "PUT", f"/connector-plugins/{plugin}/config/validate", named)
    if result is None:
        raise ServiceError(
            f"Kafka Connect at {settings.connect_url} has no {config['connector.class']} on "
            "its plugin path: install Debezium's PostgreSQL connector there (docs/cdc.md)"
        )
    values = [item.get("value") or {} for item in result.get("configs", [])]
    problems = [f"  {v['name']}: {'; '.join(v['errors'])}" for v in values if v.get("errors")]
    if problems:
        raise ServiceError(
            f"Kafka Connect refuses the connector configuration {settings.cdc_connector_name!r}:"
            "\n" + "\n".join(problems)
        )


def register(settings: Settings, config: dict[str, str]) -> bool:
    """Validate ``config`` and put it as connector ``cdc_connector_name``; idempotent.

    Returns True when the connector was created or its configuration changed, False when it
    was there with this configuration already.

    Raises:
        ServiceError: Connect is unreachable or refuses the configuration (see module).
    """
    name = settings.cdc_connector_name
    if current_config(settings) == config:
        return False
    _validate(settings, config)
    _request(settings, "PUT", f"/connectors/{name}/config", config)
    return True


def current_config(settings: Settings) -> dict[str, str] | None:
    """The configuration of connector ``cdc_connector_name``, or None when there is none.

    Raises:
        ServiceError: Connect is unreachable.
    """
    found = _request(settings, "GET", f"/connectors/{settings.cdc_connector_name}/config")
    if found is None:
        return None
    found.pop("name", None)  # Connect adds the connector's name to what it was given
    return {str(k): str(v) for k, v in found.items()}


def connector_state(
    settings: Settings, *, wait_s: float = 0.0, interval_s: float = 0.5
) -> ConnectorState | None:
    """The connector's state, polled until it runs or failed or ``wait_s`` passed; None when
    Connect has no such connector (still none after ``wait_s``).

    Raises:
        ServiceError: Connect is unreachable.
    """
    deadline = time.monotonic() + wait_s
    while True:
        status = _request(settings, "GET", f"/connectors/{settings.cdc_connector_name}/status")
        if status is None:
            # Just after a PUT the worker may not have read the config back from its topic.
            if time.monotonic() >= deadline:
                return None
            time.sleep(interval_s)
            continue
        tasks = status.get("tasks", [])
        traces = [t.get("trace", "") for t in [status["connector"], *tasks] if t.get("trace")]
        state = ConnectorState(
            connector=status["connector"]["state"],
            tasks=tuple(t["state"] for t in tasks),
            trace="\n".join(traces),
        )
        failed = "FAILED" in (state.connector, *state.tasks)
        if state.running or failed or time.monotonic() >= deadline:
            return state
        time.sleep(interval_s)
