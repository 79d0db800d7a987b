"""The one settings object, read from ``SEGSTREAM_*`` environment variables.

Every command builds a :class:`Settings` once at start-up with :func:`load_settings`, which
turns pydantic's validation errors into one :class:`~segstream.errors.ConfigError` that names
each offending variable. The object is frozen: pass it down, never mutate it.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Literal
from urllib.parse import urlparse

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from segstream.errors import ConfigError

__all__ = ["ENV_PREFIX", "Settings", "as_environment", "load_settings", "settings_table"]

ENV_PREFIX = "SEGSTREAM_"


class Settings(BaseSettings):
    """segstream's configuration; each field is read from ``SEGSTREAM_<FIELD NAME>``."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        frozen=True,
        extra="ignore",
        case_sensitive=False,
        use_attribute_docstrings=True,
    )

    kafka_bootstrap_servers: str = "127.0.0.1:9092"
    """Comma-separated ``host:port`` list of Kafka brokers."""

    redis_url: str = "redis://127.0.0.1:6379/0"
    """URL of the Redis server (``redis://`` or ``rediss://``) holding per-user state."""

    model_dir: Path = Path("models")
    """Directory of model versions; ``<model_dir>/current`` points at the one in use."""

    app_id: str = "segstream"
    """Faust application id; also the Kafka consumer group of the workers."""

    topic_users: str = "users"
    """Input topic of user profile upserts, keyed by user_id."""

    topic_orders: str = "orders"
    """Input topic of orders with their items, keyed by user_id."""

    topic_segment_changes: str = "segment-changes"
    """Output topic: one event each time a user's segment changes."""

    topic_user_segments: str = "user-segments"
    """Compacted output topic: each user's current segment, keyed by user_id."""

    topic_dead_letters: str = "segstream-dead-letters"
    """Output topic: the original bytes of every rejected input event."""

    topic_partitions: int = Field(default=4, ge=1, le=1024)
    """Partitions given to the topics segstream creates."""

    batch_size: int = Field(default=2000, ge=1, le=100_000)
    """Most events a worker handles in one batch (one Redis round trip, one model call)."""

    batch_timeout_s: float = Field(default=0.02, gt=0, le=10)
    """Longest a worker waits to fill a batch, in seconds.

    Short, because every event of a batch waits up to this long before its work starts; under
    load the worker still processes full batches, merging those that queued up while it was
    busy (up to batch_size)."""

    http_port: int = Field(default=6066, ge=0, le=65535)
    """Port of the worker's HTTP side (API, metrics, status page); 0 turns it off."""

    http_host: str = "127.0.0.1"
    """Address the HTTP side binds to; loopback unless you mean to expose it (containers)."""

    drift: Literal["off", "river"] = "off"
    """Online centroid drift: ``off``, or ``river`` for river's streaming k-means."""

    drift_learning_rate: float = Field(default=0.01, gt=0, le=1)
    """Drift mode: river's ``halflife``, the fraction of the way a centre moves toward a user."""

    drift_max_distance: float = Field(default=1.0, gt=0)
    """Drift mode: farthest a centre may drift from its trained position (PCA-space units)."""

    # --- runtime faults: start-up waits, the progress watchdog, client timeouts -------------

    startup_timeout_s: float = Field(default=180.0, gt=0, le=86_400)
    """How long a starting worker waits for Redis and the broker to answer, in seconds.

    It logs what it waits for, then exits with status 2 naming the unreachable service."""

    batch_deadline_s: float = Field(default=60.0, gt=0, le=3600)
    """Longest a batch may run (Redis, model, publishing, retries included), in seconds.

    A batch still running after this is a stall: ``/readyz`` turns not ready and
    ``segstream_stalls_total{kind="batch"}`` counts it."""

    commit_deadline_s: float = Field(default=30.0, gt=0, le=3600)
    """Longest an offset commit may take, in seconds; one that takes longer is abandoned.

    Until a commit succeeds again the worker counts a stall (``kind="commit"``) and is not
    ready."""

    stall_grace_s: float = Field(default=30.0, ge=0, le=3600)
    """How long a stall may last once reported before the worker exits (status 3), in seconds.

    A supervisor then restarts it; redelivery and the Redis fences make that safe."""

    shutdown_timeout_s: float = Field(default=30.0, gt=0, le=3600)
    """Longest a stopping worker (SIGTERM, SIGINT, a stall) may take to stop, in seconds.

    Past it the process exits at once (status 3 after a stall, else 1), committed offsets as
    they were: redelivery makes up for a commit cut short."""

    redis_socket_timeout_s: float = Field(default=10.0, gt=0, le=600)
    """The worker's Redis reads and writes fail after this many seconds without an answer.

    So a half-open connection (a server gone without a FIN) is dropped and retried instead of
    hanging a batch. A batch's largest script runs in milliseconds."""

    redis_connect_timeout_s: float = Field(default=5.0, gt=0, le=600)
    """The worker's Redis connection attempts fail after this many seconds."""

    # ------------------------------------------------------------------------------------------

    log_level: Literal["debug", "info", "warning", "error"] = "info"
    """Log level of segstream's own loggers."""

    data_dir: Path = Path(".segstream")
    """Where ``segstream services`` keeps broker and Redis data, logs and pid files."""

    kafka_port: int = Field(default=9092, ge=1, le=65535)
    """Port of the broker ``segstream services up`` starts."""

    kafka_controller_port: int = Field(default=0, ge=0, le=65535)
    """KRaft controller port of that broker; 0 means kafka_port + 1."""

    redis_port: int = Field(default=6379, ge=1, le=65535)
    """Port of the Redis server ``segstream services up`` starts."""

    kafka_jars_dir: Path = Path.home() / ".cache" / "segstream" / "kafka"
    """Cache of the broker's jars resolved from Maven Central, shared by every data_dir."""

    kafka_heap_mb: int = Field(default=512, ge=128, le=8192)
    """Java heap of the local broker, in MiB."""

    @field_validator("kafka_bootstrap_servers")
    @classmethod
    def _check_bootstrap(cls, value: str) -> str:
        for server in value.split(","):
            host, sep, port = server.strip().rpartition(":")
            if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(f"expected host:port[,host:port...], got {value!r}")
        return value

    @field_validator("redis_url")
    @classmethod
    def _check_redis_url(cls, value: str) -> str:
        if urlparse(value).scheme not in {"redis", "rediss", "unix"}:
            raise ValueError(f"expected a redis://, rediss:// or unix:// URL, got {value!r}")
        return value

    @model_validator(mode="after")
    def _check_topics_distinct(self) -> Settings:
        topics = [
            self.topic_users,
            self.topic_orders,
            self.topic_segment_changes,
            self.topic_user_segments,
            self.topic_dead_letters,
        ]
        if len(set(topics)) != len(topics):
            raise ValueError(f"topic names must be distinct, got {topics}")
        return self

    @property
    def controller_port(self) -> int:
        """The local broker's KRaft controller port."""
        return self.kafka_controller_port or self.kafka_port + 1


def load_settings(**overrides: object) -> Settings:
    """Read settings from the environment; ``overrides`` win over it.

    Raises:
        ConfigError: naming every variable that is invalid, with pydantic's reason.
    """
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            field = ".".join(str(p) for p in err["loc"]) or "settings"
            name = f"{ENV_PREFIX}{field.upper()}" if err["loc"] else field
            problems.append(f"  {name}: {err['msg']}")
        raise ConfigError("invalid configuration:\n" + "\n".join(problems)) from exc


def settings_table() -> list[tuple[str, str, str]]:
    """``(variable, default, description)`` for every setting, in declaration order."""
    rows = []
    for name, field in Settings.model_fields.items():
        default = field.default
        if name == "kafka_jars_dir":
            default = "~/.cache/segstream/kafka"
        rows.append((f"{ENV_PREFIX}{name.upper()}", str(default), field.description or ""))
    return rows


def as_environment(settings: Settings, base: Mapping[str, str]) -> dict[str, str]:
    """``base`` (e.g. ``os.environ``) with its ``SEGSTREAM_*`` variables replaced by
    ``settings``: the environment that makes a child process load exactly ``settings``."""
    env = {k: v for k, v in base.items() if not k.upper().startswith(ENV_PREFIX)}
    for name, value in settings.model_dump().items():
        env[f"{ENV_PREFIX}{name.upper()}"] = str(value)
    return env
