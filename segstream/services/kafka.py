"""A single-node Apache Kafka 4.x broker in KRaft mode, run from jars on Maven Central.

There is no Docker engine or Apache mirror to rely on, so the broker is assembled from
``org.apache.kafka:kafka_2.13`` and its dependencies, resolved once by Maven from
``kafka-pom.xml`` into ``Settings.kafka_jars_dir/<version>/``. The node is a combined
broker + controller; its storage is formatted once with ``StorageTool format --standalone``.

Secured (``services up --secure``), its client listener is SASL_SSL: TLS with the stack's
throwaway CA (:mod:`segstream.services.tls`) and SCRAM-SHA-512 for the stack's user, created at
format time (``--add-scram``) with the password of ``<data_dir>/secrets/kafka-password``; the
broker talks to itself on that listener too. The KRaft controller listener stays PLAINTEXT on
127.0.0.1 (KRaft does not take SCRAM there; only this machine reaches it).
"""

from __future__ import annotations

import asyncio
import base64
import os
import shutil
import subprocess
import uuid
from pathlib import Path

from segstream.errors import ServiceError
from segstream.net import port_is_open
from segstream.services.class_archive import archive_options, archive_path
from segstream.services.credentials import USER, client_settings, password, stack_certificates
from segstream.services.maven import bundled_pom, pom_property, resolve_jars
from segstream.services.process import LocalServer, log_tail, wait_until
from segstream.settings import Settings, StackSettings

__all__ = ["KafkaBroker", "kafka_version"]

_POM = bundled_pom("kafka-pom.xml")
LONE_NODE_SESSION_TIMEOUT_MS = 4_000
"""The single node's broker session (Kafka's default 9 s): how long a restart after a crash
waits for the crashed incarnation's registration to expire. Above 2 heartbeats (1 s) with room
for a loaded machine's pauses, since missing it fences the node from its own partitions."""
_LOG4J2 = """\
status = warn
appender.file.type = File
appender.file.name = FILE
appender.file.fileName = {log}
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = info
rootLogger.appenderRef.file.ref = FILE
logger.kafka.name = kafka
logger.kafka.level = info
logger.state.name = state.change.logger
logger.state.level = warn
logger.request.name = kafka.request.logger
logger.request.level = warn
"""


def kafka_version() -> str:
    """The Kafka version the bundled pom resolves, e.g. ``"4.1.1"``."""
    return pom_property(_POM, "kafka.version")


class KafkaBroker(LocalServer):
    """The local broker described by ``settings``: resolve, format, start, wait, stop.

    ``secure``: a SASL_SSL client listener (see the module docstring).
    """

    name = "kafka"
    config_name = "server.properties"
    log_name = "stdout.log"
    port_settings = "other ports with SEGSTREAM_KAFKA_PORT / SEGSTREAM_KAFKA_CONTROLLER_PORT"
    start_timeout_s = 90.0
    stop_timeout_s = 60.0

    def __init__(self, settings: Settings, stack: StackSettings, *, secure: bool = False) -> None:
        super().__init__(settings, stack)
        self.secure = secure

    @property
    def client(self) -> Settings:
        """Settings of a client of this broker (SASL_SSL ones when it is secured)."""
        plain = self.settings.model_copy(update={"kafka_bootstrap_servers": self.bootstrap})
        return client_settings(self.settings, self.stack) if self.secure else plain

    def formatted_secure(self) -> bool:
        """Whether the data directory was formatted for a secured broker (for ``status``)."""
        mode_file = self.home / "data" / "security"
        return mode_file.exists() and mode_file.read_text().strip() == "sasl_ssl"

    def ports(self) -> tuple[int, ...]:
        """The client port and the KRaft controller port."""
        return (self.stack.kafka_port, self.stack.controller_port)

    @property
    def bootstrap(self) -> str:
        """The ``host:port`` clients connect to."""
        return f"127.0.0.1:{self.stack.kafka_port}"

    @property
    def server_log(self) -> Path:
        """The broker's own log (log4j2), which names the Kafka version at start-up."""
        return self.home / "server.log"

    @property
    def jars_dir(self) -> Path:
        return self.stack.kafka_jars_dir.expanduser().resolve() / kafka_version()

    def ensure_jars(self) -> Path:
        """Resolve the broker's jars from Maven Central into the cache, once.

        Raises:
            ServiceError: Maven is missing or the resolution failed (with Maven's output).
        """
        return resolve_jars(_POM, self.jars_dir, f"the Kafka {kafka_version()} jars")

    def _java(self) -> str:
        java = shutil.which("java")
        if java is None:
            raise ServiceError(
                "Java 17+ is needed to run Kafka: apt-get install openjdk-17-jre-headless"
            )
        return java

    def _properties(self) -> dict[str, str]:
        """The broker's ``server.properties``, as a dict a subclass (a cluster node) amends."""
        s, ports = self.settings, self.stack
        listener = "SASL_SSL" if self.secure else "PLAINTEXT"
        listeners = f"{listener}://127.0.0.1:{ports.kafka_port},CONTROLLER://127.0.0.1:{ports.controller_port}"
        props = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "listeners": listeners,
            "advertised.listeners": f"{listener}://127.0.0.1:{ports.kafka_port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": listener,
            "listener.security.protocol.map": f"{listener}:{listener},CONTROLLER:PLAINTEXT",
            **(self._security_properties() if self.secure else {}),
            "controller.quorum.bootstrap.servers": f"127.0.0.1:{ports.controller_port}",
            "log.dirs": str(self.home / "data"),
            "num.partitions": str(s.topic_partitions),
            # One node: every internal topic gets one partition and one replica.
            "offsets.topic.num.partitions": "1",
            "offsets.topic.replication.factor": "1",
            "transaction.state.log.num.partitions": "1",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "share.coordinator.state.topic.num.partitions": "1",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            # A lone consumer must not wait 3 s for peers that will never join.
            "group.initial.rebalance.delay.ms": "0",
            # After a crash the node's new incarnation is refused registration until the old
            # one's session expires (Kafka's default 9 s): every unclean restart waited that
            # long. Its controller is in the same process, so a short session costs nothing.
            "broker.session.timeout.ms": str(LONE_NODE_SESSION_TIMEOUT_MS),
            "broker.heartbeat.interval.ms": "1000",
            # The active controller appends a no-op record to the metadata log every 500 ms
            # by default, only so that quorum-health metrics advance: ~40% of an idle
            # broker's CPU (docs/testing.md), paid by every broker of a developer's stack.
            # Leadership and fencing go by fetches and heartbeats, not by these records.
            "metadata.max.idle.interval.ms": "0",
            "auto.create.topics.enable": "true",
            "log.retention.hours": "168",
            "log.segment.bytes": str(256 * 1024 * 1024),
        }
        return props

    def _write_config(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        props = self._properties()
        # Owner-only before a password goes in: the JAAS line of a secured broker holds one.
        self.config_file.touch(mode=0o600)
        os.chmod(self.config_file, 0o600)
        self.config_file.write_text("".join(f"{k}={v}\n" for k, v in props.items()))
        (self.home / "log4j2.properties").write_text(_LOG4J2.format(log=self.server_log))

    def _classpath(self) -> str:
        return str(self.jars_dir / "*")

    def _jvm_args(self) -> list[str]:
        heap = self.stack.kafka_heap_mb
        return [
            f"-Xmx{heap}m",
            f"-Xms{min(heap, 256)}m",
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self.home / 'log4j2.properties'}",
            f"-Dkafka.logs.dir={self.home}",
            *self.stack.jvm_option_list,
            "-cp",
            self._classpath(),
        ]

    def _security_properties(self) -> dict[str, str]:
        """SASL_SSL with SCRAM-SHA-512 and the stack's PEM certificate (module docstring)."""
        certificates = stack_certificates(self.settings)
        secret = password(self.settings, "kafka")
        jaas = (
            "org.apache.kafka.common.security.scram.ScramLoginModule required "
            f'username="{USER}" password="{secret}";'
        )
        return {
            "sasl.enabled.mechanisms": "SCRAM-SHA-512",
            "sasl.mechanism.inter.broker.protocol": "SCRAM-SHA-512",
            "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config": jaas,
            "ssl.keystore.type": "PEM",
            "ssl.keystore.location": str(certificates.server_bundle),
            "ssl.truststore.type": "PEM",
            "ssl.truststore.location": str(certificates.ca),
            # A client certificate is verified when one is offered (mutual TLS), not required.
            "ssl.client.auth": "requested",
        }

    def _format_options(self) -> list[str]:
        """StorageTool options naming the cluster id and the quorum: new, this node alone."""
        return ["--standalone", f"--cluster-id={_cluster_id()}"]

    def _format_storage(self, java: str) -> None:
        mode_file = self.home / "data" / "security"
        if (self.home / "data" / "meta.properties").exists():
            formatted = mode_file.read_text().strip() if mode_file.exists() else "plaintext"
            wanted = "sasl_ssl" if self.secure else "plaintext"
            if formatted == "plaintext" and wanted == "sasl_ssl":
                raise ServiceError(
                    f"the Kafka data in {self.home / 'data'} was formatted without the SCRAM "
                    "user a secured broker needs: remove that directory (`segstream services "
                    "down` first) or choose another SEGSTREAM_DATA_DIR"
                )
            return
        scram = (
            [
                "--add-scram",
                f"SCRAM-SHA-512=[name={USER},password={password(self.settings, 'kafka')}]",
            ]
            if self.secure
            else []
        )
        result = subprocess.run(
            [
                java,
                *self._jvm_args(),
                *archive_options(archive_path(self.jars_dir, java), create=False),
                "kafka.tools.StorageTool",
                "format",
                *self._format_options(),
                "-c",
                str(self.config_file),
                *scram,
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise ServiceError(f"formatting Kafka storage failed:\n{result.stdout}{result.stderr}")
        mode_file.write_text("sasl_ssl\n" if self.secure else "plaintext\n")

    def _launch(self) -> None:
        """Check Java, resolve the jars, write the config, format storage once, start.

        Raises:
            ServiceError: Java or Maven is missing, or resolving or formatting failed.
        """
        java = self._java()
        self.ensure_jars()
        self._write_config()
        self._format_storage(java)
        env = {**os.environ, "LOG_DIR": str(self.home)}
        classes = archive_options(archive_path(self.jars_dir, java), create=True)
        argv = [java, *self._jvm_args(), *classes, "kafka.Kafka", str(self.config_file)]
        self.process.start(argv, env)

    def wait_ready(self, timeout_s: float) -> None:
        """Block until a real client gets cluster metadata from the broker."""
        if not wait_until(lambda: port_is_open(self.stack.kafka_port) or self._died(), 60):
            raise ServiceError(f"Kafka did not open port {self.stack.kafka_port}")
        if self._died():
            raise ServiceError(f"Kafka exited during start-up; its log ends:\n{self._tail()}")
        try:
            asyncio.run(_metadata_ready(self.client, timeout_s))
        except TimeoutError as exc:
            raise ServiceError(
                f"Kafka at {self.bootstrap} gave no cluster metadata within {timeout_s:.0f} s; "
                f"its log ends:\n{self._tail()}"
            ) from exc

    def _died(self) -> bool:
        return not self.process.is_running()

    def _tail(self) -> str:
        return self.process.log_tail() + "\n" + log_tail(self.server_log)


def _cluster_id() -> str:
    """A random KRaft cluster id: 16 bytes, URL-safe base64 without padding.

    Like Kafka's own ``Uuid.randomUuid``, never one starting with "-", which command-line
    parsers would take for an option.
    """
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


async def _metadata_ready(client: Settings, timeout_s: float) -> None:
    """Return once a client has fetched metadata naming at least one broker.

    Raises:
        TimeoutError: none did within ``timeout_s`` seconds.
    """
    from aiokafka.errors import KafkaError

    from segstream.stream.clients.kafka import admin_client

    async with asyncio.timeout(timeout_s):
        while True:
            admin = admin_client(client, request_timeout_ms=5000)
            try:
                await admin.start()
                cluster = await admin.describe_cluster()
                if cluster.get("brokers"):
                    return
            except (KafkaError, OSError):
                pass
            finally:
                await admin.close()
            await asyncio.sleep(0.2)
