"""tests/ports.py: free ports, and port blocks that parallel workers never share."""

from __future__ import annotations

import itertools
import socket

import pytest

from segstream.services.redis_cluster import BUS_OFFSET
from tests.ports import (
    BLOCK_RANGE,
    DEFAULT_FLOOR,
    KAFKA_CLUSTER_FLOOR,
    REDIS_CLUSTER_FLOOR,
    SINGLE_FLOOR,
    SINGLE_RANGE,
    free_port,
    free_port_block,
    free_ports,
    worker_slice,
)


def _workers(count: int) -> list[dict[str, str]]:
    return [
        {"PYTEST_XDIST_WORKER": f"gw{i}", "PYTEST_XDIST_WORKER_COUNT": str(count)}
        for i in range(count)
    ]


def test_outside_xdist_the_whole_range_is_searched() -> None:
    assert worker_slice(12_000, {}) == (12_000, 12_000 + BLOCK_RANGE)


@pytest.mark.parametrize("count", [1, 2, 3, 4, 8])
def test_each_worker_gets_a_slice_of_its_own_within_the_range(count: int) -> None:
    slices = [worker_slice(20_000, env) for env in _workers(count)]
    ports = [set(range(first, end)) for first, end in slices]
    assert all(a.isdisjoint(b) for i, a in enumerate(ports) for b in ports[i + 1 :])
    assert min(first for first, _ in slices) == 20_000
    assert max(end for _, end in slices) <= 20_000 + BLOCK_RANGE
    assert all(len(p) >= BLOCK_RANGE // count - 1 for p in ports)


def test_too_many_workers_is_refused_naming_the_option() -> None:
    env = {"PYTEST_XDIST_WORKER": "gw0", "PYTEST_XDIST_WORKER_COUNT": "100"}
    with pytest.raises(ValueError, match=r"fewer workers \(-n\)"):
        worker_slice(12_000, env)


def test_the_floors_ranges_never_overlap_bus_ports_included() -> None:
    """The default floor, the clusters' Kafka and Redis floors and the Redis bus ports."""
    floors = [
        DEFAULT_FLOOR,
        KAFKA_CLUSTER_FLOOR,
        REDIS_CLUSTER_FLOOR,
        REDIS_CLUSTER_FLOOR + BUS_OFFSET,
    ]
    ranges = sorted(
        [*((f, f + BLOCK_RANGE) for f in floors), (SINGLE_FLOOR, SINGLE_FLOOR + SINGLE_RANGE)]
    )
    assert all(end <= start for (_, end), (start, _) in itertools.pairwise(ranges))
    assert ranges[-1][1] <= 32_768  # below the kernel's ephemeral range


def test_a_block_skips_a_port_in_use(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PYTEST_XDIST_WORKER", raising=False)
    base = free_port_block(3)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", base + 1))
        again = free_port_block(3)
    assert again != base and not {base + 1} & set(range(again, again + 3))


def test_free_ports_are_distinct() -> None:
    assert len(set(free_ports(20))) == 20


def test_single_ports_come_from_the_workers_slice_below_the_ephemeral_range(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PYTEST_XDIST_WORKER", "gw1")
    monkeypatch.setenv("PYTEST_XDIST_WORKER_COUNT", "3")
    first, end = worker_slice(SINGLE_FLOOR, size=SINGLE_RANGE)
    ports = free_ports(30)
    assert all(first <= port < end for port in ports) and end <= 32_768


def test_a_single_port_in_use_is_skipped_and_the_next_call_moves_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("PYTEST_XDIST_WORKER", raising=False)
    port = free_port()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port + 1))
        after = free_port()
    assert after not in (port, port + 1)
