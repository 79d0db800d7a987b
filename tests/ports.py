"""Free TCP ports on loopback, so test servers never collide with a running demo, nor with
another pytest-xdist worker of the same run.

Two kinds of port:

- :func:`free_port` / :func:`free_ports`: one port at a time from this worker's slice of
  :data:`SINGLE_FLOOR`'s range, below the kernel's ephemeral range. Not the OS's ephemeral
  pick: a port handed out so is one a client connection of this busy machine can take as its
  own local port before the test's server binds it (seen once: a worker's HTTP port "already
  in use");
- :func:`free_port_block`: a run of consecutive ports searched upwards from a fixed floor (a
  local cluster derives its nodes' ports from one base). Searched from the same floor, two
  workers would find the same lowest block at the same moment, so under xdist each worker
  searches only its own slice of the floor's range (:func:`worker_slice`).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping

BLOCK_RANGE = 4_000
"""Ports above a :func:`free_port_block` floor that its searches share out among the workers
of one run; the floors below are at least this far apart."""

# The floors, all below the kernel's ephemeral range (32768-60999), Redis Cluster bus ports
# (+10,000) included, so no client connection of this busy machine takes a port of a block
# between the check and the bind; their ranges are disjoint (a unit test holds them so).
DEFAULT_FLOOR = 12_000
"""Blocks of tests that need one (a three-broker ``services up``)."""
REDIS_CLUSTER_FLOOR = 16_000
"""The session's Redis Cluster: nodes from here, their bus ports from 26,000."""
KAFKA_CLUSTER_FLOOR = 20_000
"""The session's three KRaft brokers (client and controller ports)."""
SINGLE_FLOOR = 30_000
"""Single ports (:func:`free_port`): ``SINGLE_FLOOR .. SINGLE_FLOOR+SINGLE_RANGE-1``."""
SINGLE_RANGE = 2_700
"""Up to 32,699: the ports between the Redis bus ports and the ephemeral range."""

_next_single: dict[int, int] = {}
"""Slice start -> the port this process tries next, so successive calls differ."""


def free_port() -> int:
    """A port nothing listens on right now, from this worker's slice of the single ports
    (:data:`SINGLE_FLOOR`), each call the next bindable one after the last, round the slice.

    Raises:
        RuntimeError: no port of the slice can be bound.
    """
    first, end = worker_slice(SINGLE_FLOOR, size=SINGLE_RANGE)
    span = end - first
    start = _next_single.get(first, first) - first
    for step in range(span):
        port = first + (start + step) % span
        if _bindable(port):
            _next_single[first] = first + (port - first + 1) % span
            return port
    raise RuntimeError(f"no free port in {first}..{end - 1}")


def free_ports(count: int) -> list[int]:
    """``count`` distinct ports nothing listens on right now."""
    ports: set[int] = set()
    while len(ports) < count:
        ports.add(free_port())
    return sorted(ports)


def worker_slice(
    lowest: int, environ: Mapping[str, str] = os.environ, size: int = BLOCK_RANGE
) -> tuple[int, int]:
    """``(first, end)``: the ports ``first .. end-1`` above ``lowest`` that this process may
    search.

    Outside xdist, all of ``lowest .. lowest+size-1``; in worker ``gwI`` of ``N``
    (``PYTEST_XDIST_WORKER``, ``PYTEST_XDIST_WORKER_COUNT``), the I-th of N equal slices of
    it, so no two workers of a run ever search the same ports.

    Raises:
        ValueError: more workers than the range has room for (fewer than 100 ports each).
    """
    name = environ.get("PYTEST_XDIST_WORKER", "")
    if not name.startswith("gw"):
        return lowest, lowest + size
    index, count = int(name[2:]), int(environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    span = size // max(count, index + 1)
    if span < 100:
        raise ValueError(
            f"{count} xdist workers leave {span} ports each above {lowest} (tests/ports.py, "
            f"a range of {size}); run with fewer workers (-n)"
        )
    first = lowest + index * span
    return first, first + span


def free_port_block(size: int, offset: int = 0, lowest: int = DEFAULT_FLOOR) -> int:
    """A base port such that ``base .. base+size-1`` (and each plus ``offset``) are all free.

    For services that derive their ports from one setting (a local cluster's nodes). The base
    is searched in this worker's slice of ``lowest .. lowest+BLOCK_RANGE-1``
    (:func:`worker_slice`).

    Raises:
        RuntimeError: no such block in the slice.
    """
    first, end = worker_slice(lowest)
    for base in range(first, end - size + 1, size):
        wanted = [base + i for i in range(size)] + [base + offset + i for i in range(size)]
        if all(_bindable(port) for port in wanted):
            return base
    raise RuntimeError(f"no block of {size} free ports in {first}..{end - 1}")


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True
