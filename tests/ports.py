"""Free TCP ports on loopback, so test servers never collide with a running demo."""

from __future__ import annotations

import socket


def free_port() -> int:
    """A port nothing listens on right now (the OS's pick for an ephemeral bind)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def free_ports(count: int) -> list[int]:
    """``count`` distinct ports nothing listens on right now."""
    ports: set[int] = set()
    while len(ports) < count:
        ports.add(free_port())
    return sorted(ports)


def free_port_block(size: int, offset: int = 0, lowest: int = 20_000) -> int:
    """A base port such that ``base .. base+size-1`` (and each plus ``offset``) are all free.

    For services that derive their ports from one setting (a local cluster's nodes).
    """
    for base in range(lowest, 65_535 - offset - size, size):
        wanted = [base + i for i in range(size)] + [base + offset + i for i in range(size)]
        if all(_bindable(port) for port in wanted):
            return base
    raise RuntimeError(f"no block of {size} free ports above {lowest}")


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True
