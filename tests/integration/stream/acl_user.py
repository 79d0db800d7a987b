"""A Redis ACL user confined by :func:`segstream.stream.state.acl.worker_acl_rules`, on one
server or on every node of a cluster, and what those servers refused it (``ACL LOG``).

Redis keeps ACL users per server (a cluster does not share them), so a cluster's user is
created on every node, replicas included: one of them becomes a primary on failover.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import pytest
import redis
from pydantic import SecretStr

from segstream.settings import Settings
from segstream.stream.state.acl import worker_acl_rules


@dataclass(frozen=True)
class ConfinedUser:
    """The user's name and password, and the servers (client ports) that know it."""

    name: str
    password: str
    app_id: str
    ports: tuple[int, ...]

    def settings(self, settings: Settings) -> Settings:
        """``settings`` connecting as this user."""
        return settings.model_copy(
            update={"redis_username": self.name, "redis_password": SecretStr(self.password)}
        )

    def create_on(self, port: int) -> None:
        """(Re)create the user on the server at ``port`` (a restarted node forgot it)."""
        with redis.Redis(port=port, socket_timeout=10) as admin:
            admin.execute_command(
                "ACL", "SETUSER", self.name, "reset", "on", f">{self.password}",
                *worker_acl_rules(self.app_id),
            )  # fmt: skip

    def refusals(self) -> list[str]:
        """Every ``ACL LOG`` entry of this user on every server that answers, as text:
        ``<port>: <reason> <object>`` (the command or key refused)."""
        found = []
        for port in self.ports:
            try:
                with redis.Redis(port=port, socket_timeout=10) as admin:
                    entries = admin.execute_command("ACL", "LOG")
            except (redis.ConnectionError, redis.TimeoutError):
                continue  # a node killed by the test and not back
            for entry in entries:
                fields = dict(zip(entry[::2], entry[1::2], strict=True))
                if fields.get(b"username") == self.name.encode():
                    found.append(
                        f"{port}: {fields[b'reason'].decode()} {fields[b'object'].decode()} "
                        f"({fields[b'context'].decode()})"
                    )
        return found


@contextmanager
def confined_user(app_id: str, ports: Iterable[int]) -> Iterator[ConfinedUser]:
    """A fresh user confined to ``app_id`` on the servers at ``ports``, their ACL logs
    cleared; deleted from every server still up on the way out."""
    user = ConfinedUser(f"acl-{app_id}", uuid.uuid4().hex, app_id, tuple(ports))
    for port in user.ports:
        user.create_on(port)
        with redis.Redis(port=port, socket_timeout=10) as admin:
            admin.execute_command("ACL", "LOG", "RESET")
    try:
        yield user
    finally:
        for port in user.ports:
            try:
                with redis.Redis(port=port, socket_timeout=10) as admin:
                    admin.execute_command("ACL", "DELUSER", user.name)
            except (redis.ConnectionError, redis.TimeoutError):
                continue


def confine(request: pytest.FixtureRequest, app_id: str, ports: Iterable[int]) -> ConfinedUser:
    """:func:`confined_user` for the rest of the test ``request`` belongs to."""
    context = confined_user(app_id, ports)
    user = context.__enter__()
    request.addfinalizer(lambda: context.__exit__(None, None, None))
    return user
