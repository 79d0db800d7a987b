"""Apache Kafka's own Connect runtime in distributed mode, with Debezium's PostgreSQL connector.

Like the broker, it is assembled from Maven Central: ``connect-pom.xml`` resolves
``org.apache.kafka:connect-runtime`` (+ ``connect-json``, ``connect-transforms``) at the
broker's Kafka version onto the worker's classpath, and ``debezium-pom.xml`` resolves
``io.debezium:debezium-connector-postgres`` into one folder of the plugin path, where Connect
loads it in a class loader of its own. Both are cached under ``Settings.kafka_jars_dir``.

The worker is one member of the Connect group ``<app_id>-connect``: its connectors' configs,
source offsets and statuses live in three compacted topics on the broker
(``<app_id>-connect-configs`` / ``-offsets`` / ``-status``), so a restarted worker resumes
where it stopped. Its REST API listens on ``127.0.0.1:<connect_port>``.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import urllib.error
import urllib.request
from pathlib import Path

from segstream.errors import ServiceError
from segstream.services.class_archive import archive_options, archive_path
from segstream.services.kafka import kafka_version
from segstream.services.maven import bundled_pom, pom_property, resolve_jars
from segstream.services.process import LocalServer, log_tail
from segstream.settings import Settings

__all__ = ["POSTGRES_CONNECTOR", "ConnectWorker", "debezium_version"]

_CONNECT_POM = bundled_pom("connect-pom.xml")
_DEBEZIUM_POM = bundled_pom("debezium-pom.xml")
POSTGRES_CONNECTOR = "io.debezium.connector.postgresql.PostgresConnector"
"""The connector class the plugin path must offer."""

_LOG4J2 = """\
status = warn
appender.file.type = File
appender.file.name = FILE
appender.file.fileName = {log}
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = info
rootLogger.appenderRef.file.ref = FILE
logger.reflections.name = org.reflections
logger.reflections.level = error
"""


def debezium_version() -> str:
    """The Debezium version the bundled pom resolves, e.g. ``"3.6.1.Final"``."""
    return pom_property(_DEBEZIUM_POM, "debezium.version")


class ConnectWorker(LocalServer):
    """The local Connect worker described by ``settings``: resolve, configure, start, stop.

    It needs the broker at ``settings.kafka_bootstrap_servers`` running (the stack starts
    Kafka first).
    """

    name = "connect"
    config_name = "connect-distributed.properties"
    log_name = "stdout.log"
    port_settings = "another port with SEGSTREAM_CONNECT_PORT"
    start_timeout_s = 180.0
    stop_timeout_s = 60.0

    def ports(self) -> tuple[int, ...]:
        """The REST port."""
        return (self.stack.connect_port,)

    @property
    def url(self) -> str:
        """The REST API's base URL."""
        return f"http://127.0.0.1:{self.stack.connect_port}"

    @property
    def client(self) -> Settings:
        """``settings`` with ``connect_url`` naming this worker."""
        return self.settings.model_copy(update={"connect_url": self.url})

    @property
    def worker_log(self) -> Path:
        """The worker's own log (log4j2): connector and task errors show here."""
        return self.home / "connect.log"

    @property
    def runtime_dir(self) -> Path:
        return self.stack.kafka_jars_dir.expanduser().resolve() / f"connect-{kafka_version()}"

    @property
    def plugin_path(self) -> Path:
        """The plugin path: one folder per plugin beneath it."""
        root = self.stack.kafka_jars_dir.expanduser().resolve()
        return root / f"connect-plugins-debezium-{debezium_version()}"

    def ensure_jars(self) -> None:
        """Resolve the Connect runtime and the Debezium plugin from Maven Central, once.

        Raises:
            ServiceError: Maven is missing or a resolution failed.
        """
        resolve_jars(_CONNECT_POM, self.runtime_dir, f"Kafka Connect {kafka_version()}")
        resolve_jars(
            _DEBEZIUM_POM,
            self.plugin_path / "debezium-connector-postgres",
            f"the Debezium PostgreSQL connector {debezium_version()}",
            # The runtime provides Kafka's own classes; a copy inside the plugin would clash.
            exclude_groups=["org.apache.kafka"],
        )

    def _properties(self) -> dict[str, str]:
        group = f"{self.settings.app_id}-connect"
        return {
            "bootstrap.servers": self.settings.kafka_bootstrap_servers,
            "group.id": group,
            "config.storage.topic": f"{group}-configs",
            "offset.storage.topic": f"{group}-offsets",
            "status.storage.topic": f"{group}-status",
            # One broker locally; a production Connect cluster keeps 3 replicas of each.
            "config.storage.replication.factor": "1",
            "offset.storage.replication.factor": "1",
            "status.storage.replication.factor": "1",
            "offset.storage.partitions": "5",
            "status.storage.partitions": "1",
            # Defaults of the worker; the segstream connector sets its own (cdc/connector.py).
            "key.converter": "org.apache.kafka.connect.json.JsonConverter",
            "value.converter": "org.apache.kafka.connect.json.JsonConverter",
            # Source offsets are committed every 5 s: what a crash can make Debezium resend.
            "offset.flush.interval.ms": "5000",
            "listeners": f"http://127.0.0.1:{self.stack.connect_port}",
            "rest.advertised.host.name": "127.0.0.1",
            "rest.advertised.port": str(self.stack.connect_port),
            "plugin.path": str(self.plugin_path),
            # Connectors create their topics with the partition count they are given.
            "topic.creation.enable": "true",
        }

    def _write_config(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        props = self._properties()
        self.config_file.write_text("".join(f"{k}={v}\n" for k, v in props.items()))
        (self.home / "log4j2.properties").write_text(_LOG4J2.format(log=self.worker_log))

    def _launch(self) -> None:
        """Check Java, resolve the jars, write the config and start the worker.

        Raises:
            ServiceError: Java or Maven is missing, or resolving failed.
        """
        java = shutil.which("java")
        if java is None:
            raise ServiceError(
                "Java 17+ is needed to run Kafka Connect: apt-get install openjdk-17-jre-headless"
            )
        self.ensure_jars()
        self._write_config()
        heap = self.stack.connect_heap_mb
        argv = [
            java,
            f"-Xmx{heap}m",
            f"-Xms{min(heap, 256)}m",
            "-XX:+UseG1GC",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self.home / 'log4j2.properties'}",
            *self.stack.jvm_option_list,
            *archive_options(archive_path(self.runtime_dir, java), create=True),
            "-cp",
            str(self.runtime_dir / "*"),
            "org.apache.kafka.connect.cli.ConnectDistributed",
            str(self.config_file),
        ]
        self.process.start(argv, {**os.environ, "LOG_DIR": str(self.home)})

    def wait_ready(self, timeout_s: float) -> None:
        """Block until the REST API answers and lists Debezium's PostgreSQL connector."""
        deadline = time.monotonic() + timeout_s
        while True:
            plugins = self._plugins()
            if plugins is not None:
                if POSTGRES_CONNECTOR in plugins:
                    return
                raise ServiceError(
                    f"Kafka Connect at {self.url} runs without {POSTGRES_CONNECTOR} on its "
                    f"plugin path {self.plugin_path}; its log ends:\n{self._tail()}"
                )
            if not self.process.is_running():
                raise ServiceError(
                    f"Kafka Connect exited during start-up; its log ends:\n{self._tail()}"
                )
            if time.monotonic() > deadline:
                raise ServiceError(
                    f"Kafka Connect at {self.url} did not answer within {timeout_s:.0f} s; its "
                    f"log ends:\n{self._tail()}"
                )
            time.sleep(0.5)

    def _plugins(self) -> list[str] | None:
        """Connector classes the REST API lists, or None while it does not answer yet."""
        try:
            with urllib.request.urlopen(f"{self.url}/connector-plugins", timeout=5) as reply:
                return [p["class"] for p in json.loads(reply.read())]
        except (urllib.error.URLError, OSError, ValueError):
            return None

    def _tail(self) -> str:
        return self.process.log_tail() + "\n" + log_tail(self.worker_log)
