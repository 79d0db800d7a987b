"""The local stack as one unit: Kafka and Redis started, checked and stopped together."""

from __future__ import annotations

import time
from dataclasses import dataclass

from segstream.services.kafka import KafkaBroker, kafka_version
from segstream.services.redis import RedisServer
from segstream.settings import Settings

__all__ = ["ServiceStatus", "Stack"]


@dataclass(frozen=True)
class ServiceStatus:
    """What one service is doing: its name, address, pid (None when stopped)."""

    name: str
    address: str
    pid: int | None
    detail: str = ""


class Stack:
    """Kafka + Redis for ``settings``; every method is safe to call in any state.

    ``secure``: SASL_SSL Kafka and TLS-only Redis with an ACL user (``services up --secure``);
    :attr:`client` is then the settings a client of the stack needs.
    """

    def __init__(self, settings: Settings, *, secure: bool = False) -> None:
        self.settings = settings
        self.secure = secure
        self.kafka = KafkaBroker(settings, secure=secure)
        self.redis = RedisServer(settings, secure=secure)

    @property
    def client(self) -> Settings:
        """``settings`` as a client of this stack (its servers, credentials and CA)."""
        return self.kafka.client.model_copy(
            update={
                name: getattr(self.redis.client, name)
                for name in ("redis_url", "redis_username", "redis_password", "redis_ssl_cafile")
            }
        )

    def up(self) -> dict[str, float | None]:
        """Start whatever is not running; return seconds each start took (None: was running).

        If Kafka fails to start, a Redis this call started is stopped again, so a failed
        ``up`` leaves nothing behind.
        """
        timings: dict[str, float | None] = {}
        t0 = time.monotonic()
        started_redis = self.redis.start()
        timings["redis"] = time.monotonic() - t0 if started_redis else None
        t0 = time.monotonic()
        try:
            started_kafka = self.kafka.start()
        except BaseException:
            if started_redis:
                self.redis.stop()
            raise
        timings["kafka"] = time.monotonic() - t0 if started_kafka else None
        return timings

    def down(self) -> dict[str, bool]:
        """Stop what we started; True per service that was running."""
        return {"kafka": self.kafka.stop(), "redis": self.redis.stop()}

    def status(self) -> list[ServiceStatus]:
        """One line of truth per service (secured or not as its data directory says)."""
        secure = self.secure or self.kafka.formatted_secure()
        redis = RedisServer(self.settings, secure=secure)
        return [
            ServiceStatus(
                "kafka",
                f"SASL_SSL://{self.kafka.bootstrap}" if secure else self.kafka.bootstrap,
                self.kafka.process.pid(),
                f"Apache Kafka {kafka_version()}",
            ),
            ServiceStatus("redis", redis.url, self.redis.process.pid()),
        ]
