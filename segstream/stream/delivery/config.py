"""The delivery config file (``SEGSTREAM_DELIVERY_CONFIG``): where segment changes are POSTed.

A TOML file with one ``[[destination]]`` table per receiving system::

    [[destination]]
    name = "crm"                       # [a-z0-9_-]{1,40}: names metrics, groups, dead letters
    url = "https://crm.example.com/hooks/segments"
    secret_env = "CRM_WEBHOOK_SECRET"  # or secret = "..." (at least 16 characters)
    batch_size = 100                   # events per POST (1..1000)
    linger_ms = 50                     # longest wait to fill a batch
    rate_per_s = 20                    # POSTs per second at most (token bucket)
    timeout_s = 10                     # per POST: connect + answer
    max_attempts = 8                   # then the batch's events are dead-lettered
    backoff_first_s = 0.5              # exponential backoff: 0.5, 1, 2, ... capped at
    backoff_max_s = 60                 #   backoff_max_s; a Retry-After header wins (capped)
    headers = { "X-Team" = "growth" }  # extra request headers

Every problem is a :class:`DeliveryConfigError` naming the file, the destination and the field,
raised at start-up, before anything is consumed. A secret is a :class:`~pydantic.SecretStr`: it
is never printed, logged or put in an error.
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from segstream.errors import ConfigError

__all__ = [
    "DeliveryConfig",
    "DeliveryConfigError",
    "Destination",
    "destination_names",
    "load_delivery_config",
]

NAME = re.compile(r"^[a-z0-9_-]{1,40}$")
MIN_SECRET_CHARS = 16
"""Shortest accepted signing secret: a shorter one is guessable (HMAC keys want entropy)."""
_RESERVED_HEADERS = frozenset(
    {"content-type", "content-length", "host", "x-segstream-signature", "idempotency-key"}
)


class DeliveryConfigError(ConfigError):
    """The delivery config file is missing, not TOML, or a destination's field is invalid."""


class Destination(BaseModel):
    """One HTTP endpoint that receives segment changes (see the module docstring for fields)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    """Short id of the destination: metrics label, consumer group suffix, dead-letter field."""
    url: str
    """``http://`` or ``https://`` URL the batches are POSTed to."""
    secret: SecretStr
    """HMAC-SHA256 key of the ``X-Segstream-Signature`` header; never printed."""
    batch_size: int = Field(default=100, ge=1, le=1000)
    """Most events in one POST."""
    linger_ms: int = Field(default=50, ge=0, le=60_000)
    """Longest wait for a batch to fill, in milliseconds."""
    rate_per_s: float = Field(default=20.0, gt=0, le=10_000)
    """Most POSTs per second to this destination."""
    timeout_s: float = Field(default=10.0, gt=0, le=300)
    """Longest one POST may take (connect, send, answer), in seconds."""
    max_attempts: int = Field(default=8, ge=1, le=100)
    """POSTs of one batch before its events are dead-lettered."""
    backoff_first_s: float = Field(default=0.5, gt=0, le=600)
    """Wait before the first retry, in seconds; doubled each retry."""
    backoff_max_s: float = Field(default=60.0, gt=0, le=3600)
    """Longest wait between two attempts, in seconds (a Retry-After above it is capped)."""
    headers: dict[str, str] = Field(default_factory=dict)
    """Extra request headers (not Content-Type, Host, Idempotency-Key or the signature)."""

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str) -> str:
        if not NAME.match(value):
            raise ValueError(f"must match {NAME.pattern} (lower case, digits, _ and -)")
        return value

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http:// or https:// URL with a host")
        try:
            parts.port  # noqa: B018 - raises on a port that is not a number
        except ValueError as exc:
            raise ValueError(f"has an invalid port: {exc}") from exc
        return value

    @field_validator("secret")
    @classmethod
    def _check_secret(cls, value: SecretStr) -> SecretStr:
        if len(value.get_secret_value()) < MIN_SECRET_CHARS:
            raise ValueError(f"must be at least {MIN_SECRET_CHARS} characters")
        return value

    @field_validator("headers")
    @classmethod
    def _check_headers(cls, value: dict[str, str]) -> dict[str, str]:
        reserved = sorted(h for h in value if h.lower() in _RESERVED_HEADERS)
        if reserved:
            raise ValueError(f"{', '.join(reserved)} are set by segstream and cannot be given")
        return value


@dataclass(frozen=True)
class DeliveryConfig:
    """Every destination of one config file, in the file's order; names are unique."""

    path: Path
    destinations: tuple[Destination, ...]

    def named(self, name: str) -> Destination:
        """The destination called ``name``.

        Raises:
            DeliveryConfigError: no destination has that name (the known ones listed).
        """
        for destination in self.destinations:
            if destination.name == name:
                return destination
        known = ", ".join(d.name for d in self.destinations)
        raise DeliveryConfigError(f"{self.path}: no destination named {name!r} (known: {known})")


def _resolve_secret(path: Path, where: str, table: dict[str, Any]) -> dict[str, Any]:
    """``table`` with ``secret_env`` replaced by the secret read from that variable."""
    table = dict(table)
    if "secret_env" not in table:
        if "secret" not in table:
            raise DeliveryConfigError(f"{path}: {where}: give `secret` or `secret_env`")
        return table
    variable = table.pop("secret_env")
    if "secret" in table:
        raise DeliveryConfigError(f"{path}: {where}: give `secret` or `secret_env`, not both")
    if not isinstance(variable, str) or not os.environ.get(variable):
        raise DeliveryConfigError(
            f"{path}: {where}: field `secret_env`: environment variable {variable!r} is not set"
        )
    table["secret"] = os.environ[variable]
    return table


def _tables(path: Path | None) -> tuple[Path, list[dict[str, Any]]]:
    """The file's path and its ``[[destination]]`` tables, unvalidated.

    Raises:
        DeliveryConfigError: ``path`` is None, the file cannot be read, is not TOML, has a
            top-level key other than ``destination`` or no destination table.
    """
    if path is None:
        raise DeliveryConfigError(
            "SEGSTREAM_DELIVERY_CONFIG is not set: point it at the TOML file of destinations "
            "(docs/delivery.md)"
        )
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise DeliveryConfigError(
            f"{path} (SEGSTREAM_DELIVERY_CONFIG) cannot be read: {exc.strerror}"
        ) from exc
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise DeliveryConfigError(f"{path} is not valid TOML: {exc}") from exc
    unknown = sorted(set(document) - {"destination"})
    if unknown:
        raise DeliveryConfigError(
            f"{path}: unknown top-level key(s) {unknown}; expected [[destination]]"
        )
    tables = document.get("destination")
    if not isinstance(tables, list) or not tables or not all(isinstance(t, dict) for t in tables):
        raise DeliveryConfigError(f"{path}: no [[destination]] table")
    return path, tables


def _unique(path: Path, names: list[str]) -> None:
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise DeliveryConfigError(f"{path}: destination names must be unique: {duplicates}")


def destination_names(path: Path | None) -> tuple[str, ...]:
    """The destinations' names of the file at ``path``, in the file's order, each checked.

    For a process that only watches delivery (the worker's status page): it needs no
    signing secret, so ``secret_env`` variables need not be set where it runs, and the other
    fields are left to ``segstream deliver`` to check.

    Raises:
        DeliveryConfigError: as :func:`load_delivery_config`, for the file and the names.
    """
    path, tables = _tables(path)
    names: list[str] = []
    for index, table in enumerate(tables, start=1):
        name = table.get("name")
        if not isinstance(name, str) or not NAME.match(name):
            raise DeliveryConfigError(
                f"{path}: destination #{index}: field `name`: must match {NAME.pattern} "
                "(lower case, digits, _ and -)"
            )
        names.append(name)
    _unique(path, names)
    return tuple(names)


def load_delivery_config(path: Path | None) -> DeliveryConfig:
    """Read and validate the config file at ``path``.

    Raises:
        DeliveryConfigError: ``path`` is None (``SEGSTREAM_DELIVERY_CONFIG`` unset), the file
            cannot be read or is not TOML, it has no destination, two share a name, or a field
            is invalid: naming the file, the destination and the field (never a secret).
    """
    path, tables = _tables(path)
    destinations: list[Destination] = []
    for index, table in enumerate(tables, start=1):
        where = f"destination {table.get('name', f'#{index}')!r}"
        try:
            destinations.append(Destination(**_resolve_secret(path, where, table)))
        except ValidationError as exc:
            problems = "; ".join(
                f"field `{'.'.join(map(str, e['loc'])) or '?'}`: {e['msg']}" for e in exc.errors()
            )
            raise DeliveryConfigError(f"{path}: {where}: {problems}") from None
    _unique(path, [d.name for d in destinations])
    return DeliveryConfig(path, tuple(destinations))
