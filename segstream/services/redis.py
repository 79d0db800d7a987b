"""The machine's ``redis-server`` (Debian package ``redis-server``), run on loopback.

Secured (``services up --secure``), it listens with TLS only (``tls-port``, no plaintext
port), with the stack's throwaway certificate (:mod:`segstream.services.tls`; Debian builds
redis-server with TLS), the ``default`` user off and one ACL user confined to the app's keys
and segstream's commands (:mod:`segstream.stream.state.acl`), whose password is
``<data_dir>/secrets/redis-password``.
"""

from __future__ import annotations

import os
import shutil
import time

from segstream.errors import ServiceError
from segstream.services.credentials import USER, client_settings, password, stack_certificates
from segstream.services.process import LocalServer
from segstream.settings import Settings, StackSettings
from segstream.stream.state.acl import worker_acl_rules

__all__ = ["RedisServer"]


class RedisServer(LocalServer):
    """The local Redis described by ``settings``: start, wait for PING, stop.

    ``secure``: TLS only and an ACL user (see the module docstring).
    """

    name = "redis"
    config_name = "redis.conf"
    log_name = "redis.log"
    port_settings = "another port with SEGSTREAM_REDIS_PORT"
    start_timeout_s = 20.0
    stop_timeout_s = 20.0

    def __init__(self, settings: Settings, stack: StackSettings, *, secure: bool = False) -> None:
        super().__init__(settings, stack)
        self.secure = secure

    def ports(self) -> tuple[int, ...]:
        """The one client port."""
        return (self.stack.redis_port,)

    @property
    def url(self) -> str:
        """The URL clients connect to: ``redis://``, or ``rediss://`` when secured."""
        scheme = "rediss" if self.secure else "redis"
        return f"{scheme}://127.0.0.1:{self.stack.redis_port}/0"

    @property
    def client(self) -> Settings:
        """Settings of a client of this server (TLS and the ACL user when it is secured)."""
        plain = self.settings.model_copy(update={"redis_url": self.url})
        return client_settings(self.settings, self.stack) if self.secure else plain

    def _port_lines(self) -> list[str]:
        if not self.secure:
            return [f"port {self.stack.redis_port}"]
        certificates = stack_certificates(self.settings)
        rules = " ".join(worker_acl_rules(self.settings.app_id))
        return [
            "port 0",  # no plaintext listener at all
            f"tls-port {self.stack.redis_port}",
            f"tls-cert-file {certificates.server_cert}",
            f"tls-key-file {certificates.server_key}",
            f"tls-ca-cert-file {certificates.ca}",
            # A client certificate is verified when offered (mutual TLS), not required.
            "tls-auth-clients optional",
            "user default off",
            f"user {USER} on >{password(self.settings, 'redis')} {rules}",
        ]

    def _write_config(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        lines = [
            "bind 127.0.0.1",
            *self._port_lines(),
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
        # Owner-only before a password goes in (a secured server's user line holds one).
        self.config_file.touch(mode=0o600)
        os.chmod(self.config_file, 0o600)
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
        # Ports on the command line too (they show in `ps`); never the password.
        port = "--tls-port" if self.secure else "--port"
        self.process.start(
            [
                binary,
                str(self.config_file),
                "--bind",
                "127.0.0.1",
                port,
                str(self.stack.redis_port),
            ]
        )

    def wait_ready(self, timeout_s: float) -> None:
        """Block until the server answers PING."""
        import redis

        from segstream.stream.clients.redis import connection_problem, sync_redis_client

        client = sync_redis_client(self.client, socket_timeout=1.0)
        deadline = time.monotonic() + timeout_s
        try:
            while True:
                try:
                    if client.ping():
                        return
                except redis.RedisError as exc:
                    # Refused credentials or a certificate: waiting longer will not help.
                    if (problem := connection_problem(self.client, exc)) is not None:
                        raise ServiceError(problem) from exc
                if not self.process.is_running():
                    raise ServiceError(
                        f"redis-server exited; its log ends:\n{self.process.log_tail()}"
                    )
                if time.monotonic() > deadline:
                    raise ServiceError(f"Redis at {self.url} did not answer PING in {timeout_s} s")
                time.sleep(0.05)
        finally:
            client.close()
