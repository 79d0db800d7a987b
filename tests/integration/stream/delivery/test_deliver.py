"""``segstream deliver`` end to end: a worker assigning the replayed dataset, deliver processes
POSTing to a real HTTP server that fails on purpose, the batch pipeline as the reference."""

from __future__ import annotations

import asyncio
import json
import signal
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import redis

from segstream.settings import Settings
from segstream.stream.delivery.floors import floor_key
from segstream.stream.kafka.forget import request_leaves
from segstream.stream.kafka.topics import read_all
from tests.integration.stream.conftest import (
    Dataset,
    WorkerProcess,
    replay,
    wait_until_consumed,
)
from tests.integration.stream.delivery.conftest import (
    changes_by_key,
    check_received,
    deliver_settings,
    run_deliver,
    wait_for,
    write_config,
)
from tests.integration.stream.delivery.receiver import Receiver
from tests.integration.stream.parity import check_parity

pytestmark = pytest.mark.slow

FAST = {"batch_size": 500, "linger_ms": 20, "rate_per_s": 1000}
RETRYING = {"backoff_first_s": 0.05, "backoff_max_s": 2.0}


def _keys(receiver: Receiver, path: str) -> set[str]:
    return {e["idempotency_key"] for e in receiver.events(path)}


def _letters(settings: Settings) -> list[dict]:
    records = asyncio.run(read_all(settings, settings.topic_delivery_dead_letters))
    return [json.loads(r.value) for r in records]


def test_each_destination_gets_every_change_in_order_through_failures_a_kill_and_a_redrive(
    stream_settings: Settings, dataset: Dataset, start_worker, start_deliver, tmp_path: Path
) -> None:
    with Receiver(
        {"fast": "fast", "flaky": "flaky", "down": "down", "reject": "reject"}, timeout_s=1.0
    ) as receiver:
        config = write_config(
            tmp_path / "delivery.toml",
            receiver,
            {
                "fast": FAST,
                "flaky": {**FAST, "timeout_s": 1.0, "max_attempts": 20, **RETRYING},
                "down": {
                    **FAST,
                    "max_attempts": 100,
                    "backoff_first_s": 0.5,
                    "backoff_max_s": 10.0,
                },
                "reject": {**FAST, "max_attempts": 3, **RETRYING},
            },
        )
        settings = deliver_settings(stream_settings, config, tmp_path)
        worker = start_worker(settings)
        first = start_deliver(settings)
        replay(settings, dataset.plan)
        wait_for(lambda: len(receiver.events("fast")) >= 3_000, "some deliveries", [first])
        assert first.stop(signal.SIGKILL) == -signal.SIGKILL
        second = start_deliver(settings)
        wait_until_consumed(settings, [worker])
        changes = changes_by_key(settings)

        # The fast and flaky destinations get everything while "down" still answers 503.
        wait_for(lambda: _keys(receiver, "fast") == set(changes), "fast", [second])
        wait_for(lambda: _keys(receiver, "flaky") == set(changes), "flaky", [second])
        assert receiver.events("down") == []
        assert set(receiver.statuses["down"]) == {503}
        # "reject" answered 400, which no retry cures: every change is dead-lettered with it.
        wait_for(
            lambda: (
                {
                    letter["event"]["idempotency_key"]
                    for letter in _letters(settings)
                    if letter["destination"] == "reject"
                }
                == set(changes)
            ),
            "reject's dead letters",
            [second],
        )
        letters = _letters(settings)
        assert {(x["destination"], x["last_status"]) for x in letters} == {("reject", 400)}
        assert all(
            json.loads(x["change"])["event_id"] == x["event"]["idempotency_key"] for x in letters
        )

        receiver.bring_up("down")
        wait_for(lambda: _keys(receiver, "down") == set(changes), "down, once up", [second])
        receiver.bring_up("reject")
        code, report, stderr = run_deliver(settings, "--redrive")
        assert code == 0, stderr
        assert report["read"] == len(letters)
        assert report["delivered"] == len(letters)
        assert report["dead_lettered"] == report["kept"] == 0
        assert second.stop(signal.SIGTERM) == 0, second.log_tail()
        assert worker.stop(signal.SIGTERM) == 0, worker.log_tail()

    final = check_parity(settings, dataset, tmp_path)
    for path in ("fast", "flaky", "down", "reject"):
        check_received(receiver.events(path), changes, final)
    assert receiver.bad_signatures == 0
    # The timed-out POSTs reached the receiver before the client gave up: re-sent, same keys.
    assert len(receiver.events("flaky")) > len(changes)


def test_backfill_sends_current_segments_then_hands_over_to_the_live_stream_and_leaves(
    stream_settings: Settings, dataset: Dataset, start_worker, start_deliver, tmp_path: Path
) -> None:
    half = len(dataset.plan.events) // 2
    first_half = type(dataset.plan)(dataset.plan.events[:half], 0)
    second_half = type(dataset.plan)(dataset.plan.events[half:], 0)
    with Receiver({"late": "fast"}) as receiver:
        config = write_config(tmp_path / "delivery.toml", receiver, {"late": FAST})
        settings = deliver_settings(stream_settings, config, tmp_path)
        worker = start_worker(settings)
        replay(settings, first_half)
        wait_until_consumed(settings, [worker])
        code, report, stderr = run_deliver(settings, "--backfill", "late")
        assert code == 0, stderr
        snapshot = receiver.events("late")
        assert report["sent"] == len(snapshot) > 0
        assert {e["kind"] for e in snapshot} == {"snapshot"}

        deliver = start_deliver(settings)
        # A second backfill while a deliver process serves "late" is refused before it sends
        # anything, with the operator's steps; the floors it would have rewritten stay.
        floors_before = _floors(settings, "late")
        wait_for(lambda: _served(worker, "late"), "the deliver process in late's group", [deliver])
        code, report, stderr = run_deliver(settings, "--backfill", "late")
        assert code == 2 and report is None
        assert "cannot backfill late: 1 running `segstream deliver` process(es)" in stderr
        assert "--backfill late` with a config that has it" in stderr
        assert "Traceback" not in stderr
        assert len(receiver.events("late")) == len(snapshot)
        assert _floors(settings, "late") == floors_before
        replay(settings, second_half)  # the worker assigns while the backfill hands over
        wait_until_consumed(settings, [worker])
        changes = changes_by_key(settings)
        last = {}
        for change in changes.values():
            if change["sequence"] > last.get(change["user_id"], (0, 0))[0]:
                last[change["user_id"]] = (change["sequence"], change["event_id"])

        def caught_up() -> bool:
            keys = _keys(receiver, "late")
            return all(key in keys or f"snapshot-{u}-{s}" in keys for u, (s, key) in last.items())

        wait_for(caught_up, "the live changes after the backfill", [deliver])
        final = check_parity(settings, dataset, tmp_path)
        handed_over = receiver.events("late")[len(snapshot) :]
        check_handover(snapshot, handed_over, final)

        # Users who leave reach the destination as user_left, and lose their backfill floor.
        leaving = sorted(e["user_id"] for e in snapshot)[:3]
        asyncio.run(request_leaves(settings, leaving))

        def left() -> list[dict]:
            return [e for e in receiver.events("late") if e["kind"] == "user_left"]

        wait_for(lambda: {e["user_id"] for e in left()} == set(leaving), "leaves", [deliver])
        for event in left():
            assert event["segment"] is None
            assert event["previous_segment"] == final[event["user_id"]]
            assert event["sequence"] == last[event["user_id"]][0] + 1
        floors = redis.Redis.from_url(settings.redis_url)
        try:
            kept = floors.hmget(floor_key(settings, "late"), leaving)
        finally:
            floors.close()
        assert kept == [None] * len(leaving)
        assert deliver.stop(signal.SIGTERM) == 0, deliver.log_tail()
        assert worker.stop(signal.SIGTERM) == 0, worker.log_tail()


def _served(worker: WorkerProcess, destination: str) -> bool:
    """Whether the worker's status page counts a deliver process in ``destination``'s group."""
    url = f"http://127.0.0.1:{worker.http_port}/status.json"
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            delivery = json.loads(response.read())["delivery"]
    except urllib.error.URLError:
        return False  # its HTTP side is not up yet
    return any(d["name"] == destination and d["members"] for d in delivery["destinations"])


def _floors(settings: Settings, destination: str) -> dict[bytes, bytes]:
    client = redis.Redis.from_url(settings.redis_url)
    try:
        return client.hgetall(floor_key(settings, destination))
    finally:
        client.close()


def check_handover(snapshot: list[dict], live: list[dict], final: dict[int, int]) -> None:
    """Live changes continue each user's snapshot exactly (no gap, nothing older), and the
    snapshot followed by them ends at the batch's segment for every user."""
    snapshots = {e["user_id"]: e["sequence"] for e in snapshot}
    seen: dict[int, list[int]] = {}
    for event in live:
        assert event["kind"] == "segment_change"
        seen.setdefault(event["user_id"], []).append(event["sequence"])
    problems = []
    for user_id, numbers in seen.items():
        start = snapshots.get(user_id, 0)
        if sorted(set(numbers)) != list(range(start + 1, start + len(set(numbers)) + 1)):
            problems.append((user_id, start, numbers))
    assert not problems, f"{len(problems)} users' handover is wrong, e.g. {problems[:5]}"
    current: dict[int, int] = {e["user_id"]: e["segment"] for e in snapshot}
    for event in live:
        current[event["user_id"]] = event["segment"]
    assert current == final


def test_a_bad_config_is_a_clear_error_at_start_naming_file_destination_and_field(
    stream_settings: Settings, tmp_path: Path
) -> None:
    config = tmp_path / "bad.toml"
    config.write_text(
        '[[destination]]\nname = "crm"\nurl = "ftp//crm.example.com"\nsecret = "short-but-secret"\n'
    )
    settings = deliver_settings(stream_settings, config, tmp_path)
    code, _, stderr = run_deliver(settings)
    assert code == 2
    assert str(config) in stderr and "'crm'" in stderr and "`url`" in stderr
    config.write_text(
        '[[destination]]\nname = "crm"\nurl = "https://crm.example.com/x"\nsecret = "tiny"\n'
    )
    code, _, stderr = run_deliver(settings)
    assert code == 2
    assert "`secret`" in stderr and "16 characters" in stderr and "tiny" not in stderr
    assert "Traceback" not in stderr
