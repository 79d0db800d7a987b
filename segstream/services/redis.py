"""The machine's ``redis-server`` (Debian package ``redis-server``), run on loopback."""

from __future__ import annotations

import shutil
import time

from segstream.errors import ServiceError
from segstream.services.process import LocalServer

__all__ = ["RedisServer"]


class RedisServer(LocalServer):
    """The local Redis described by ``settings``: start, wait for PING, stop."""

    name = "redis"
    config_name = "redis.conf"
    log_name = "redis.log"
    port_settings = "another port with SEGSTREAM_REDIS_PORT"
    start_timeout_s = 20.0
    stop_timeout_s = 20.0

    def ports(self) -> tuple[int, ...]:
        """The one client port."""
        return (self.settings.redis_port,)

    @property
    def url(self) -> str:
        """The ``redis://`` URL clients connect to."""
        return f"redis://127.0.0.1:{self.settings.redis_port}/0"

    def _write_config(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        lines = [
            "bind 127.0.0.1",
            f"port {self.settings.redis_port}",
            f"dir {self.home}",
            "daemonize no",
            # Append-only file: the per-user state survives a restart of the local stack.
            "appendonly yes",
            "appendfsync everysec",
            'save ""',
            "protected-mode yes",
            # Keep the config path in the process title: it is how our pid file is verified.
            'proc-title-template "{title} {listen-addr} {config-file}"',
        ]
        self.config_file.write_text("\n".join(lines) + "\n")

    def _launch(self) -> None:
        """Find redis-server, write its config and start it.

        Raises:
            ServiceError: redis-server is missing.
        """
        binary = shutil.which("redis-server")
        if binary is None:
            raise ServiceError("redis-server not found: apt-get install redis-server")
        self._write_config()
        self.process.start(
            [
                binary,
                str(self.config_file),
                "--bind",
                "127.0.0.1",
                "--port",
                str(self.settings.redis_port),
            ]
        )

    def wait_ready(self, timeout_s: float) -> None:
        """Block until the server answers PING."""
        import redis

        client = redis.Redis.from_url(self.url, socket_timeout=1.0)
        deadline = time.monotonic() + timeout_s
        try:
            while True:
                try:
                    if client.ping():
                        return
                except redis.RedisError:
                    pass
                if not self.process.is_running():
                    raise ServiceError(
                        f"redis-server exited; its log ends:\n{self.process.log_tail()}"
                    )
                if time.monotonic() > deadline:
                    raise ServiceError(f"Redis at {self.url} did not answer PING in {timeout_s} s")
                time.sleep(0.05)
        finally:
            client.close()
