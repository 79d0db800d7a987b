"""The settings, read from ``SEGSTREAM_*`` environment variables: the product's and the
local stack's.

Every command builds a :class:`Settings` once at start-up with :func:`load_settings`;
``segstream services`` (and the tests' private stacks) also build a :class:`StackSettings`
with :func:`load_stack_settings`: the ports, heaps and caches of the Kafka, Redis, PostgreSQL,
Kafka Connect and Prometheus that it runs on loopback for a developer, which no deployment of
the product reads. Both share one prefix and one error style: each load turns pydantic's
validation errors into one :class:`~segstream.errors.ConfigError` that names each offending
variable. Every ``SEGSTREAM_*`` name belongs to exactly one of the two classes. The objects are
frozen: pass them down, never mutate them.
"""

from __future__ import annotations

import difflib
import logging
import os
import shlex
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, Self, TypeVar
from urllib.parse import quote, unquote, urlparse, urlsplit, urlunsplit

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from segstream.errors import ConfigError

__all__ = [
    "ENV_PREFIX",
    "LOOPBACK_HOSTS",
    "SETTINGS_CLASSES",
    "SegstreamSettings",
    "Settings",
    "StackSettings",
    "as_environment",
    "load_settings",
    "load_stack_settings",
    "settings_table",
    "unknown_variables",
]

log = logging.getLogger(__name__)

ENV_PREFIX = "SEGSTREAM_"

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "::1", "localhost"})
"""HTTP bind addresses reachable from this machine only (no token needed there)."""

_KAFKA_SSL = frozenset({"SSL", "SASL_SSL"})
_KAFKA_SASL = frozenset({"SASL_PLAINTEXT", "SASL_SSL"})
_OPTIONAL = (
    "kafka_sasl_username",
    "kafka_sasl_password",
    "kafka_ssl_cafile",
    "kafka_ssl_certfile",
    "kafka_ssl_keyfile",
    "redis_username",
    "redis_password",
    "redis_ssl_cafile",
    "redis_ssl_certfile",
    "redis_ssl_keyfile",
    "http_token",
    "cdc_database_password",
    "delivery_config",
    "worker_processes",
)
"""Fields whose empty value means unset (``SEGSTREAM_X=`` in a compose file, for one)."""


class SegstreamSettings(BaseSettings):
    """The base of the settings classes: the ``SEGSTREAM_`` prefix, frozen, each field's
    docstring as its description, and names checked where code gives them.

    Unknown *environment* variables are ignored (a deployment may set variables that this
    version lacks; :func:`load_settings` warns about them), but a field name given in code, as
    a keyword or in ``model_copy(update=...)``, must be one of the class's own: the other
    class's field would otherwise be dropped without a word (``extra="ignore"``).
    """

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        frozen=True,
        extra="ignore",
        case_sensitive=False,
        use_attribute_docstrings=True,
    )

    def __init__(self, **values: Any) -> None:
        # pydantic-settings' own keywords (``_env_file``, ...) start with an underscore.
        _check_names(type(self), [name for name in values if not name.startswith("_")])
        super().__init__(**values)

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> Self:
        """A copy with ``update``'s fields replaced (not validated, as pydantic's).

        Raises:
            TypeError: ``update`` names a field this class does not have.
        """
        if update:
            _check_names(type(self), list(update))
        return super().model_copy(update=update, deep=deep)


class Settings(SegstreamSettings):
    """segstream's configuration; each field is read from ``SEGSTREAM_<FIELD NAME>``."""

    kafka_bootstrap_servers: str = "127.0.0.1:9092"
    """Comma-separated ``host:port`` list of Kafka brokers."""

    redis_url: str = "redis://127.0.0.1:6379/0"
    """URL of the Redis server (``redis://`` or ``rediss://``) holding per-user state."""

    redis_cluster: bool = False
    """``redis_url`` names one node of a Redis Cluster: clients discover the others from it,
    and each state script call touches one hash slot."""

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

    topic_delivery_dead_letters: str = "segstream-delivery-dead-letters"
    """Topic of segment changes ``segstream deliver`` gave up on, with destination and last
    status; ``segstream deliver --redrive`` sends them again."""

    topic_partitions: int = Field(default=4, ge=1, le=1024)
    """Partitions given to the topics segstream creates."""

    topic_replication_factor: int | None = Field(default=None, ge=1, le=32)
    """Replicas of each topic segstream creates (min ISR: one less); unset: min(3, brokers)."""

    batch_size: int = Field(default=2000, ge=1, le=100_000)
    """Most events a worker handles in one batch (one Redis round trip, one model call)."""

    batch_timeout_s: float = Field(default=0.005, gt=0, le=10)
    """Longest a worker waits to fill a batch, in seconds.

    Short, because every event of a batch waits up to this long before its work starts; under
    load the worker still processes full batches, merging those that queued up while it was
    busy (up to batch_size). 0.005 measured p99 43-47 ms at 2,000 events/s against 52-54 ms
    at 0.02, the same rate at full load, and 6-13% less on a fresh backlog's first read
    (docs/performance.md)."""

    pipeline_depth: int = Field(default=1, ge=1, le=2)
    """Batches a worker has in hand at once: 1 runs each batch's steps strictly one after the
    other; 2 overlaps a batch's Redis steps (apply, assign, settle) with the previous batch's
    publishing and the broker's acknowledgements.

    Every guarantee holds at both (order of a user's changes, offsets committed only after
    what they cover is stored and acknowledged, the outbox's crash semantics): the argument is
    in segstream/stream/worker/batching.py. 2 pays where the waits are network round trips
    (Redis or the brokers on other hosts); with Redis on the worker's own cores it measured no
    gain (docs/performance.md), hence the default 1."""

    fetch_max_wait_ms: int = Field(default=100, ge=1, le=30_000)
    """Longest a worker's fetch request waits at a broker for new input, in milliseconds.

    A fetch returns as soon as any of its partitions has data; this bounds the wait for the
    others. It also bounds how late a partition can be read: the consumer leaves a partition
    whose records it still holds out of the next request to that partition's broker, and
    sends no other request to that broker until the one in flight returns. With several
    brokers that request may hold only idle partitions (Faust's fixed 1,500 ms put order
    latency p99 over a second on three brokers). An idle worker sends about
    1000 / this many requests a second to each broker."""

    order_dedupe_window: int = Field(default=64, ge=1, le=1000)
    """How many order ids each user remembers to count a re-sent order once (bounded state).

    A user keeps its highest this-many order ids; a re-sent order at or below the lowest of
    them is taken as counted. Exact for users with at most this many orders. Past ~100 a heavy
    buyer's hash leaves Redis's compact encoding (``hash-max-listpack-entries``, 128 fields)."""

    http_port: int = Field(default=6066, ge=0, le=65535)
    """Port of the worker's HTTP side (API, metrics, status page); 0 turns it off."""

    http_host: str = "127.0.0.1"
    """Address the HTTP side binds to; loopback unless you mean to expose it (containers)."""

    worker_processes: int | None = Field(default=None, ge=1, le=1024)
    """Worker processes ``segstream worker`` runs in one consumer group (``--processes``).

    Unset: the cores this process may run on, capped by the input topics' partition count
    (a process beyond it would own no partition). 1: the worker runs in the command's own
    process, with no supervisor. More: a supervisor starts that many, restarts one that dies
    and serves the one HTTP side on ``http_port`` (merged ``/metrics``); see docs/scaling.md."""

    source: Literal["json", "cdc"] = "json"
    """Where the worker's input comes from: ``json``, segstream's own events on
    ``topic_users`` and ``topic_orders``; or ``cdc``, Debezium's change events of the shop's
    PostgreSQL tables (``<cdc_topic_prefix>.<cdc_schema>.<table>``, see docs/cdc.md)."""

    topic_rederive: str = "segstream-rederive"
    """``source=cdc``: internal topic, co-partitioned with the change topics and keyed like
    them, carrying one record per buyer of a corrected product so that the worker owning the
    buyer re-derives their brand and category (docs/cdc.md)."""

    unknown_fields: Literal["ignore", "dead_letter"] = "ignore"
    """An input field no event has (``email`` in a profile): ``ignore`` it, counted
    (``segstream_unknown_fields_total``) and logged once per field, or ``dead_letter`` the
    event (reason ``unexpected_field``, naming the field). ``POST /predict`` follows it (400)."""

    drift: Literal["off", "river"] = "off"
    """Online centroid drift: ``off``, or ``river`` for river's streaming k-means."""

    drift_learning_rate: float = Field(default=0.01, gt=0, le=1)
    """Drift mode: river's ``halflife``, the fraction of the way a centre moves toward a user."""

    drift_max_distance: float = Field(default=1.0, gt=0)
    """Drift mode: farthest a centre may drift from its trained position (PCA-space units)."""

    drift_epoch_s: float = Field(default=1.0, gt=0, le=86_400)
    """Drift mode: a new drift epoch (numbered snapshot of the shared centres, which workers
    assign with and change events name as ``drift_epoch``) is published at most this often, in
    seconds, while workers learn. Longer epochs keep a longer history within the same
    ``drift_epochs_kept`` but let assignment lag the learning by as much."""

    drift_epochs_kept: int = Field(default=3_600, ge=1, le=1_000_000)
    """Drift mode: how many of the newest drift epochs Redis keeps per model version (about
    270 B each at k=5; 3,600 one-second epochs: an hour of continuous learning). Older ones are
    pruned, and ``segstream assign --with-drift --epoch`` can no longer reproduce them."""

    # --- runtime faults: start-up waits, the progress watchdog, client timeouts -------------

    startup_timeout_s: float = Field(default=180.0, gt=0, le=86_400)
    """How long a starting worker waits for Redis and the broker to answer, in seconds.

    It logs what it waits for, then exits with status 2 naming the unreachable service."""

    command_timeout_s: float = Field(default=30.0, gt=0, le=86_400)
    """Longest a ``segstream`` command waits on Kafka or Redis without progress, in seconds.

    ``lag``, ``segment``, ``populations``, ``drift``, ``assign --with-drift`` finish within it
    or exit with status 2 naming the dependency and this setting; ``reassign`` and ``replay``
    within it of their last batch. Long-running verbs (``worker``, ``api``, ``demo``) are not
    bounded by it."""

    batch_deadline_s: float = Field(default=60.0, gt=0, le=3600)
    """Longest a batch may run (Redis, model, publishing, retries included), in seconds.

    A batch still running after this is a stall: ``/readyz`` turns not ready and
    ``segstream_stalls_total{kind="batch"}`` counts it."""

    commit_deadline_s: float = Field(default=30.0, gt=0, le=3600)
    """Longest an offset commit may take, in seconds; one that takes longer is abandoned.

    Until a commit succeeds again the worker counts a stall (``kind="commit"``) and is not
    ready."""

    stall_grace_s: float = Field(default=30.0, ge=0, le=3600)
    """How long a stall may last once reported before the worker stops itself, in seconds.

    It exits non-zero (2 with the reason, 3 if the stop itself hangs), so a supervisor restarts
    it; redelivery and the Redis fences make that safe."""

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

    redis_min_replicas: int | None = Field(default=None, ge=0, le=16)
    """Replicas that must have a batch's Redis writes before its offsets are acknowledged.

    The worker ends each write step with a marker write and ``WAIT`` in the step's pipeline,
    per primary on a Redis Cluster. Unset: 0 on a single server, 1 on a cluster. A primary with
    fewer replicas in sync (one lost) is written degraded, without them, and named by
    ``/readyz`` and ``segstream_redis_degraded``; a worker refuses to start only when every
    primary has fewer (``docs/scaling.md``)."""

    redis_wait_timeout_ms: int = Field(default=1000, ge=1, le=60_000)
    """Longest one ``WAIT`` for those replicas may block, in milliseconds.

    On a timeout the step is sent again and waited for again (the batch stays unacknowledged),
    each timeout counted in ``segstream_redis_wait_timeouts_total``; must be shorter than
    ``redis_socket_timeout_s``."""

    # ------------------------------------------------------------------------------------------

    log_level: Literal["debug", "info", "warning", "error"] = "info"
    """Log level of segstream's own loggers, in any case (``DEBUG`` or ``debug``)."""

    data_dir: Path = Path(".segstream")
    """Where ``segstream services`` keeps broker and Redis data, logs and pid files; where
    commands find the local stack's secrets (passwords, the CA)."""

    # --- change data capture (issue 20) ---------------------------------------------------------
    connect_url: str = "http://127.0.0.1:8083"
    """Kafka Connect's REST API, where ``segstream cdc connector --register`` puts the
    connector's configuration."""

    cdc_topic_prefix: str = Field(default="shop", pattern=r"^[A-Za-z0-9_.-]+$")
    """Debezium's ``topic.prefix``: change topics are ``<prefix>.<schema>.<table>``."""

    cdc_schema: str = Field(default="public", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    """The database schema that holds the users, orders, order_items and products tables."""

    cdc_database_url: str = "postgresql://segstream_cdc@127.0.0.1:5432/shop"
    """The database Debezium captures, as ``postgresql://user@host:port/dbname``: the user is
    the connector's replication role (REPLICATION, not a superuser). No password here: see
    ``cdc_database_password``."""

    cdc_database_password: SecretStr | None = None
    """Password of the ``cdc_database_url`` user; unset: the local stack's, read from
    ``<data_dir>/secrets/postgres-cdc-password``."""

    cdc_connector_name: str = Field(default="segstream-shop", pattern=r"^[A-Za-z0-9_.-]+$")
    """Name of the Debezium connector in Kafka Connect."""

    cdc_publication: str = Field(default="segstream", pattern=r"^[a-z_][a-z0-9_]*$")
    """PostgreSQL publication of the four tables that the connector reads (``pgoutput``)."""

    cdc_slot: str = Field(default="segstream", pattern=r"^[a-z_][a-z0-9_]*$")
    """PostgreSQL logical replication slot of the connector (one per connector)."""

    # --- security: Kafka, Redis and HTTP credentials (issue 12) -------------------------------
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    """How clients talk to the brokers: PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL."""

    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = "PLAIN"
    """SASL mechanism (protocol ``SASL_*``): PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512."""

    kafka_sasl_username: str | None = None
    """SASL user name; required when the protocol is ``SASL_*``."""

    kafka_sasl_password: SecretStr | None = None
    """SASL password; required when the protocol is ``SASL_*``; never printed or logged."""

    kafka_ssl_cafile: Path | None = None
    """PEM file of the CAs that signed the brokers' certificates; unset: the system's CAs."""

    kafka_ssl_certfile: Path | None = None
    """PEM client certificate for mutual TLS with the brokers; needs ``kafka_ssl_keyfile``."""

    kafka_ssl_keyfile: Path | None = None
    """PEM private key of ``kafka_ssl_certfile``."""

    redis_username: str | None = None
    """Redis ACL user; or put it in ``redis_url`` (``redis://user:password@host``)."""

    redis_password: SecretStr | None = None
    """Redis password; or put it in ``redis_url``; never printed or logged (URLs show ``***``)."""

    redis_ssl_cafile: Path | None = None
    """PEM file of the CAs that signed Redis's certificate (``rediss://``); unset: the system's."""

    redis_ssl_certfile: Path | None = None
    """PEM client certificate for mutual TLS with Redis; needs ``redis_ssl_keyfile``."""

    redis_ssl_keyfile: Path | None = None
    """PEM private key of ``redis_ssl_certfile``."""

    http_token: SecretStr | None = None
    """Bearer token the HTTP side requires (not on ``/healthz``, ``/readyz``); unset: no auth."""

    http_allow_anonymous: bool = False
    """Allow serving HTTP without ``http_token`` on an address other than loopback."""

    # --- webhook delivery (issue 23) -----------------------------------------------------------
    delivery_config: Path | None = None
    """TOML file of the destinations ``segstream deliver`` POSTs segment changes to
    (docs/delivery.md); required by that command only. Set where a worker (or ``segstream
    api``) runs, its status page shows each destination's delivery (names only are read)."""

    delivery_http_port: int = Field(default=8092, ge=0, le=65535)
    """Port of ``segstream deliver``'s ``/metrics``, ``/status`` and ``/`` (on ``http_host``);
    0: none."""

    @field_validator(*_OPTIONAL, mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return None if value == "" else value

    @model_validator(mode="before")
    @classmethod
    def _credentials_out_of_redis_url(cls, data: Any) -> Any:
        """Move a user and password in ``redis_url`` to ``redis_username``/``redis_password``.

        So the URL held by the settings never carries a secret: every message that names the
        Redis server can print ``redis_url`` as it is.
        """
        if not isinstance(data, dict) or not isinstance(data.get("redis_url"), str):
            return data
        parts = urlsplit(data["redis_url"])
        if parts.username is None and parts.password is None:
            return data
        data = dict(data)
        for name, given in (("username", parts.username), ("password", parts.password)):
            if not given:
                continue
            value = unquote(given)
            current = data.get(f"redis_{name}")
            if isinstance(current, SecretStr):
                current = current.get_secret_value()
            if current not in (None, "", value):
                raise ValueError(
                    f"{ENV_PREFIX}REDIS_URL and {ENV_PREFIX}REDIS_{name.upper()} give different "
                    f"{name}s; set it in one place"
                )
            data[f"redis_{name}"] = value
        netloc = parts.hostname or ""
        if ":" in netloc:  # an IPv6 address
            netloc = f"[{netloc}]"
        if parts.port is not None:
            netloc = f"{netloc}:{parts.port}"
        data["redis_url"] = urlunsplit(parts._replace(netloc=netloc))
        return data

    @model_validator(mode="after")
    def _check_security(self) -> Settings:
        problems = [*self._kafka_security_problems(), *self._redis_security_problems()]
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def _kafka_security_problems(self) -> list[str]:
        protocol = self.kafka_security_protocol
        where = f"{ENV_PREFIX}KAFKA_SECURITY_PROTOCOL is {protocol}"
        problems = []
        if protocol in _KAFKA_SASL:
            for name in ("kafka_sasl_username", "kafka_sasl_password"):
                if getattr(self, name) is None:
                    problems.append(f"{ENV_PREFIX}{name.upper()} is required ({where})")
        else:
            for name in ("kafka_sasl_username", "kafka_sasl_password"):
                if getattr(self, name) is not None:
                    problems.append(
                        f"{ENV_PREFIX}{name.upper()} is set but {where}: use SASL_SSL "
                        "or SASL_PLAINTEXT, or unset it"
                    )
        files = ("kafka_ssl_cafile", "kafka_ssl_certfile", "kafka_ssl_keyfile")
        if protocol in _KAFKA_SSL:
            problems += _file_problems(self, files)
        else:
            for name in files:
                if getattr(self, name) is not None:
                    problems.append(
                        f"{ENV_PREFIX}{name.upper()} is set but {where}: use SSL or SASL_SSL, "
                        "or unset it"
                    )
        return problems

    def _redis_security_problems(self) -> list[str]:
        files = ("redis_ssl_cafile", "redis_ssl_certfile", "redis_ssl_keyfile")
        if urlparse(self.redis_url).scheme == "rediss":
            return _file_problems(self, files)
        return [
            f"{ENV_PREFIX}{name.upper()} is set but {ENV_PREFIX}REDIS_URL is not a rediss:// URL"
            for name in files
            if getattr(self, name) is not None
        ]

    @property
    def redis_display(self) -> str:
        """``redis_url`` with its user and a masked password, for messages: ``redis://app:***@host``."""
        if self.redis_username is None and self.redis_password is None:
            return self.redis_url
        parts = urlsplit(self.redis_url)
        user = quote(self.redis_username or "", safe="")
        secret = ":***" if self.redis_password is not None else ""
        return urlunsplit(parts._replace(netloc=f"{user}{secret}@{parts.netloc}"))

    @field_validator("cdc_database_url")
    @classmethod
    def _check_cdc_database_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in {"postgresql", "postgres"}:
            raise ValueError(f"expected a postgresql://user@host:port/dbname URL, got {value!r}")
        if parts.password is not None:
            raise ValueError(
                f"put the password in {ENV_PREFIX}CDC_DATABASE_PASSWORD, not in the URL"
            )
        if not parts.username or not parts.hostname or not parts.path.strip("/"):
            raise ValueError(
                f"expected postgresql://user@host:port/dbname (user, host and database), "
                f"got {value!r}"
            )
        return value

    @field_validator("connect_url")
    @classmethod
    def _check_connect_url(cls, value: str) -> str:
        if urlparse(value).scheme not in {"http", "https"} or not urlparse(value).hostname:
            raise ValueError(f"expected an http:// or https:// URL, got {value!r}")
        return value.rstrip("/")

    @field_validator("kafka_bootstrap_servers")
    @classmethod
    def _check_bootstrap(cls, value: str) -> str:
        for server in value.split(","):
            host, sep, port = server.strip().rpartition(":")
            if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(f"expected host:port[,host:port...], got {value!r}")
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _lower_log_level(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value

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
            self.topic_delivery_dead_letters,
        ]
        if len(set(topics)) != len(topics):
            raise ValueError(f"topic names must be distinct, got {topics}")
        return self

    @model_validator(mode="after")
    def _check_wait_timeout(self) -> Settings:
        if self.redis_wait_timeout_ms >= self.redis_socket_timeout_s * 1000:
            raise ValueError(
                f"{ENV_PREFIX}REDIS_WAIT_TIMEOUT_MS ({self.redis_wait_timeout_ms}) must be shorter "
                f"than {ENV_PREFIX}REDIS_SOCKET_TIMEOUT_S ({self.redis_socket_timeout_s:g} s), or "
                "every WAIT that times out would be taken for a dead connection"
            )
        return self

    @property
    def min_replicas(self) -> int:
        """``redis_min_replicas``, or its default: 1 on a Redis Cluster, 0 on a single server."""
        if self.redis_min_replicas is not None:
            return self.redis_min_replicas
        return 1 if self.redis_cluster else 0


class StackSettings(SegstreamSettings):
    """The local stack's settings (``segstream services``, the tests' private stacks): ports,
    heaps and caches of the servers run on loopback. Each field is read from
    ``SEGSTREAM_<FIELD NAME>``; the product itself (workers, commands) never reads them."""

    kafka_port: int = Field(default=9092, ge=1, le=65535)
    """Port of the broker ``segstream services up`` starts."""

    kafka_controller_port: int = Field(default=0, ge=0, le=65535)
    """KRaft controller port of that broker; 0 means kafka_port + 1."""

    redis_port: int = Field(default=6379, ge=1, le=65535)
    """Port of the Redis server ``segstream services up`` starts."""

    prometheus_port: int = Field(default=9090, ge=1, le=65535)
    """Port of the Prometheus ``segstream services up --monitoring`` starts."""

    kafka_jars_dir: Path = Path.home() / ".cache" / "segstream" / "kafka"
    """Cache of the broker's jars resolved from Maven Central, shared by every data_dir."""

    kafka_heap_mb: int = Field(default=512, ge=128, le=8192)
    """Java heap of the local broker, in MiB."""

    postgres_port: int = Field(default=5432, ge=1, le=65535)
    """Port of the PostgreSQL server ``segstream services up --cdc`` starts."""

    connect_port: int = Field(default=8083, ge=1, le=65535)
    """REST port of the Kafka Connect worker ``segstream services up --cdc`` starts."""

    connect_heap_mb: int = Field(default=768, ge=256, le=8192)
    """Java heap of the local Kafka Connect worker, in MiB."""

    jvm_options: str = "-XX:TieredStopAtLevel=1"
    """More options of the local brokers' and Kafka Connect's JVMs, split as a shell would.
    The default JIT-compiles with C1 only, which nearly halves a broker's CPU for the short
    lives of a developer's stack (docs/testing.md); an empty value restores HotSpot's own."""

    @field_validator("jvm_options")
    @classmethod
    def _check_jvm_options(cls, value: str) -> str:
        try:
            words = shlex.split(value)
        except ValueError as exc:  # shlex's own words: "No closing quotation"
            raise ValueError(f"cannot split {value!r} as a shell would: {exc}") from exc
        if not_options := [w for w in words if not w.startswith("-")]:
            raise ValueError(f"every JVM option starts with '-', got {not_options}")
        return value

    @property
    def jvm_option_list(self) -> list[str]:
        """``jvm_options`` as the JVM's argv words."""
        return shlex.split(self.jvm_options)

    @property
    def controller_port(self) -> int:
        """The local broker's KRaft controller port."""
        return self.kafka_controller_port or self.kafka_port + 1


SETTINGS_CLASSES: tuple[type[SegstreamSettings], ...] = (Settings, StackSettings)
"""Every settings class; each ``SEGSTREAM_*`` name belongs to exactly one of them."""

_S = TypeVar("_S", bound=SegstreamSettings)


def _check_names(cls: type[SegstreamSettings], names: list[str]) -> None:
    """Refuse field names ``cls`` lacks, naming the class that has them (a programming error).

    Raises:
        TypeError: naming each unknown field and, where one declares it, the right class.
    """
    problems = []
    for name in names:
        if name in cls.model_fields:
            continue
        owner = next((c for c in SETTINGS_CLASSES if name in c.model_fields), None)
        where = f"it is a field of {owner.__name__}" if owner else "no settings class has it"
        problems.append(f"{name!r} ({where})")
    if problems:
        raise TypeError(f"{cls.__name__} has no field {', '.join(problems)}")


def _file_problems(settings: Settings, names: tuple[str, str, str]) -> list[str]:
    """What is wrong with a ``(cafile, certfile, keyfile)`` triple of settings: missing files,
    or a certificate without its key (or the reverse)."""
    problems = []
    for name in names:
        path = getattr(settings, name)
        if path is not None and not path.is_file():
            problems.append(f"{ENV_PREFIX}{name.upper()}: no such file {str(path)!r}")
    _, cert, key = names
    if (getattr(settings, cert) is None) != (getattr(settings, key) is None):
        given, missing = (cert, key) if getattr(settings, key) is None else (key, cert)
        problems.append(
            f"{ENV_PREFIX}{missing.upper()} is required with {ENV_PREFIX}{given.upper()} "
            "(mutual TLS needs the certificate and its key)"
        )
    return problems


def unknown_variables(environ: Mapping[str, str]) -> list[tuple[str, str | None]]:
    """Every ``SEGSTREAM_*`` variable of ``environ`` that names no setting, sorted, each with
    the closest setting's variable (None when nothing is close): likely typos."""
    known = [name.upper() for cls in SETTINGS_CLASSES for name in cls.model_fields]
    unknown = []
    for variable in sorted(environ):
        upper = variable.upper()
        if upper.startswith(ENV_PREFIX) and upper.removeprefix(ENV_PREFIX) not in known:
            # Compared without the prefix, which every name shares and would make all close.
            close = difflib.get_close_matches(upper.removeprefix(ENV_PREFIX), known, n=1)
            unknown.append((variable, f"{ENV_PREFIX}{close[0]}" if close else None))
    return unknown


_warned: set[str] = set()
"""Unknown variables already warned about in this process."""


def load_settings(**overrides: object) -> Settings:
    """Read the product's settings from the environment; ``overrides`` win over it.

    A ``SEGSTREAM_*`` variable that names no setting (of either class) is logged as a warning
    (with the closest known name), once per process, not an error: a deployment may set
    variables that this version lacks.

    Raises:
        ConfigError: naming every variable that is invalid, with pydantic's reason.
        TypeError: an override names no field of :class:`Settings` (a local stack's port,
            say: that goes to :func:`load_stack_settings`).
    """
    return _load(Settings, overrides)


def load_stack_settings(**overrides: object) -> StackSettings:
    """Read the local stack's settings from the environment; ``overrides`` win over it.

    Raises:
        ConfigError: naming every variable that is invalid, with pydantic's reason.
        TypeError: an override names no field of :class:`StackSettings`.
    """
    return _load(StackSettings, overrides)


def _load(cls: type[_S], overrides: Mapping[str, object]) -> _S:
    for variable, close in unknown_variables(os.environ):
        if variable in _warned:
            continue  # a command may load its settings more than once
        _warned.add(variable)
        hint = f"; did you mean {close}?" if close else ""
        log.warning("%s is not a segstream setting and is ignored%s", variable, hint)
    try:
        return cls(**overrides)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            if err["loc"]:
                field = ".".join(str(p) for p in err["loc"])
                problems.append(f"  {ENV_PREFIX}{field.upper()}: {err['msg']}")
            else:  # a check across settings: its message names the variables
                problems.append(f"  {err['msg'].removeprefix('Value error, ')}")
        raise ConfigError("invalid configuration:\n" + "\n".join(problems)) from exc


def settings_table(
    cls: type[SegstreamSettings] = Settings,
) -> list[tuple[str, str, str]]:
    """``(variable, default, description)`` for every setting of ``cls``, in declaration order.

    A description is the field's whole docstring on one line (a docstring's line breaks and
    paragraphs become single spaces), so that it fits a table row."""
    rows = []
    for name, field in cls.model_fields.items():
        default = field.default
        if name == "kafka_jars_dir":
            default = "~/.cache/segstream/kafka"
        elif default is None:
            default = ""
        description = " ".join((field.description or "").split())
        rows.append((f"{ENV_PREFIX}{name.upper()}", str(default), description))
    return rows


def as_environment(
    settings: Settings, base: Mapping[str, str], stack: StackSettings | None = None
) -> dict[str, str]:
    """``base`` (e.g. ``os.environ``) with its ``SEGSTREAM_*`` variables replaced by
    ``settings``: the environment that makes a child process load exactly ``settings``.

    Secrets are in it in clear (a child's environment is not its command line, which ``ps``
    shows); unset optional settings are left out. With ``stack`` (a child that runs
    ``segstream services``), its variables replace ``base``'s too; without, the local stack's
    variables of ``base`` pass through unchanged.
    """
    stack_names = {f"{ENV_PREFIX}{name.upper()}" for name in StackSettings.model_fields}
    env = {
        k: v
        for k, v in base.items()
        if not k.upper().startswith(ENV_PREFIX) or (stack is None and k.upper() in stack_names)
    }
    given: list[SegstreamSettings] = [settings] if stack is None else [settings, stack]
    for current in given:
        for name in type(current).model_fields:
            value = getattr(current, name)
            if value is None:
                continue  # an unset optional setting stays unset (str(None) is no int)
            if isinstance(value, SecretStr):
                value = value.get_secret_value()
            env[f"{ENV_PREFIX}{name.upper()}"] = str(value)
    return env
