"""The exceptions segstream raises: one root, one class per kind of failure.

Callers catch :class:`SegstreamError` to handle anything of ours; client errors from
aiokafka, redis-py, DuckDB or SQLAlchemy are wrapped in one of these with the context that
a reader needs (which server, which file, which event) and chained with ``raise ... from``.
"""

from __future__ import annotations

__all__ = [
    "ArtifactError",
    "CommandTimeout",
    "ConfigError",
    "DataError",
    "DriftStateError",
    "EventError",
    "InputError",
    "ModelMismatchError",
    "ReplicaWaitTimeout",
    "SegstreamError",
    "ServiceError",
    "StateConflict",
    "StateError",
    "StateUnavailable",
    "describe",
]


class SegstreamError(Exception):
    """Root of every error segstream raises on purpose."""


class ConfigError(SegstreamError):
    """A setting is missing, malformed or inconsistent."""


class ServiceError(SegstreamError):
    """A local service (Kafka, Redis, PostgreSQL) cannot be installed, started or reached."""


class CommandTimeout(ServiceError):
    """A command's Kafka or Redis did not let it finish within ``SEGSTREAM_COMMAND_TIMEOUT_S``."""


class DataError(SegstreamError):
    """Input tables are missing, malformed, or do not have the expected columns."""


class ArtifactError(SegstreamError):
    """A model artifact is missing, corrupt, truncated, or of an incompatible schema version."""


class ModelMismatchError(ArtifactError):
    """Features handed to a model do not match the columns it was trained on."""


class EventError(SegstreamError):
    """An input event cannot be processed; ``reason`` is a short machine-readable code."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class InputError(SegstreamError):
    """A value breaks its field's rule in the input table (``segstream.training.inputs``).

    ``reason`` is one of the stream's dead-letter reason codes (``out_of_range``,
    ``wrong_type``...); the message names the field, what it must be and the value given, and
    is the same text whichever entry point (stream, API, CLI, training) met the value.
    """

    def __init__(self, reason: str, field: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.field = field
        self.message = message


class StateError(SegstreamError):
    """The state store (Redis), or the state kept in it, cannot serve a call.

    Catch a subclass to tell the cases apart: the store is unavailable
    (:class:`StateUnavailable`), another writer kept winning (:class:`StateConflict`), the
    drift state does not fit (:class:`DriftStateError`), replicas were late
    (:class:`ReplicaWaitTimeout`, retried where it is raised).
    """


class StateUnavailable(StateError):
    """Redis failed after the call's retries were exhausted, or refused it for good (ACLs, a
    command it rejects): nothing is wrong with the state itself."""


class StateConflict(StateError):
    """Another writer changed the users a write needed unchanged, every time it was tried;
    the state is sound and a later retry (the batch's redelivery) can succeed."""


class DriftStateError(StateError):
    """The shared drift state in Redis is missing, malformed, pruned past the epoch asked
    for, or does not fit the model; retrying the same call cannot help."""


class ReplicaWaitTimeout(StateError):
    """Fewer Redis replicas than required acknowledged a write step within the WAIT timeout."""

    def __init__(self, message: str, result: object = None) -> None:
        super().__init__(message)
        self.result = result
        """What the step returned on the primary, whose writes were made but are not yet
        acknowledged by enough replicas (``None`` when unknown). A retry of the step finds
        them made (fenced) and reports less: callers that learn from the first outcome keep
        it (``RedisState.apply`` puts the decoded states here)."""


def describe(exc: BaseException) -> str:
    """``"<Type>: <message>"`` for a person, the type named once.

    Some clients put their class name in the message already (aiokafka's
    ``KafkaConnectionError: KafkaConnectionError: …``); it is not repeated. An exception
    without a message is its type's name alone; segstream's own errors are their message.
    """
    if isinstance(exc, SegstreamError):
        return str(exc)  # written for a person already, with its context
    name = type(exc).__name__
    text = str(exc).strip()
    while text.startswith(name + ":") or text == name:
        text = text[len(name) :].lstrip(":").strip()
    return f"{name}: {text}" if text else name
