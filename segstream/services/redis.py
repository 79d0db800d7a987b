"""The machine's ``redis-server`` (Debian package ``redis-server``), run on loopback."""

from __future__ import annotations

import shutil
import time

from segstream.errors import ServiceError
from segstream.services.process import ManagedProcess, port_is_open
from segstream.settings import Settings

__all__ = ["RedisServer"]


class RedisServer:
    """The local Redis described by ``settings``: start, wait for PING, stop."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.home = settings.data_dir.resolve() / "redis"
        self.config_file = self.home / "redis.conf"
        self.process = ManagedProcess(
            name="redis",
            pid_file=self.home / "redis.pid",
            log_file=self.home / "redis.log",
            marker=str(self.config_file),
        )

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

    def start(self, timeout_s: float = 20.0) -> bool:
        """Start redis-server unless ours already runs, then wait for PING.

        Returns True when this call started it.

        Raises:
            ServiceError: redis-server is missing, the port is taken by another process, or
                it did not answer PING within ``timeout_s``.
        """
        if self.process.is_running():
            self.wait_ready(timeout_s)
            return False
        binary = shutil.which("redis-server")
        if binary is None:
            raise ServiceError("redis-server not found: apt-get install redis-server")
        if port_is_open(self.settings.redis_port):
            raise ServiceError(
                f"port {self.settings.redis_port} is already in use by another process; stop "
                "it or choose another port with SEGSTREAM_REDIS_PORT"
            )
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
        try:
            self.wait_ready(timeout_s)
        except BaseException:
            self.stop()
            raise
        return True

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

    def stop(self) -> bool:
        """Stop redis-server if we started it; True when one was stopped."""
        return self.process.stop(timeout_s=20.0)
