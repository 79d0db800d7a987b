"""The profile's entries fold into a batch's steps, builtins by their callers."""

from __future__ import annotations

import asyncio
import cProfile
import pstats

import msgspec
import pytest

from benchmarks.profiling import GROUPS, ProfileWindow, breakdown, format_breakdown, group_of

SITE = "/x/.venv/lib/python3.11/site-packages"
EVENTS = ("/x/segstream/stream/domain/events.py", 341, "_decode")


@pytest.mark.parametrize(
    ("func", "group"),
    [
        (EVENTS, "decode"),
        (("/x/segstream/stream/domain/events.py", 462, "parse_event"), "validation"),
        (("/x/segstream/stream/sources/debezium.py", 1, "parse"), "decode"),
        (("/x/segstream/stream/state/store.py", 312, "apply"), "Redis scripts"),
        ((f"{SITE}/redis/asyncio/connection.py", 1, "send_packed_command"), "Redis scripts"),
        (("/x/segstream/stream/worker/assigner.py", 121, "assign"), "assignment"),
        ((f"{SITE}/numpy/core/fromnumeric.py", 1, "argmin"), "assignment"),
        (("/x/segstream/stream/kafka/publisher.py", 134, "publish"), "publishing"),
        ((f"{SITE}/aiokafka/producer/producer.py", 1, "send"), "publishing"),
        ((f"{SITE}/aiokafka/partitioner.py", 1, "murmur2"), "publishing"),
        ((f"{SITE}/faust/serializers/registry.py", 1, "loads_value"), "decode"),
        ((f"{SITE}/aiokafka/record/default_records.py", 1, "__iter__"), "decode"),
        (("/x/segstream/stream/worker/consumer.py", 108, "commit"), "commit"),
        (("/x/segstream/stream/worker/consumer.py", 120, "ack_all"), "commit"),
        (("/x/segstream/stream/worker/fetcher.py", 150, "_hand_over"), "Faust/asyncio overhead"),
        ((f"{SITE}/faust/transport/consumer.py", 1, "commit"), "commit"),
        (("/x/segstream/stream/worker/processor.py", 179, "process"), "batch bookkeeping"),
        ((f"{SITE}/faust/streams.py", 1, "take_events"), "Faust/asyncio overhead"),
        (("/usr/lib/python3.11/asyncio/events.py", 1, "_run"), "Faust/asyncio overhead"),
        ((f"{SITE}/mode/services.py", 1, "start"), "Faust/asyncio overhead"),
        (("/x/elsewhere.py", 1, "f"), "other"),
        (("~", 0, "<built-in method builtins.len>"), None),
    ],
)
def test_each_entry_goes_to_its_step(func: tuple[str, int, str], group: str | None) -> None:
    assert group_of(func) == group


def test_a_builtin_is_split_among_its_callers_by_their_time() -> None:
    store = ("/x/segstream/stream/state/store.py", 312, "apply")
    publish = ("/x/segstream/stream/kafka/publisher.py", 134, "publish")
    send = ("~", 0, "<method 'send' of '_socket.socket' objects>")
    orphan = ("~", 0, "<built-in method time.monotonic>")
    stats = {
        store: (1, 1, 0.5, 2.0, {}),
        publish: (1, 1, 0.25, 1.0, {}),
        send: (4, 4, 2.0, 2.0, {store: (3, 3, 1.5, 1.5), publish: (1, 1, 0.5, 0.5)}),
        orphan: (1, 1, 0.125, 0.125, {}),
    }
    totals = breakdown(stats)
    assert list(totals) == list(GROUPS)
    assert totals["Redis scripts"] == pytest.approx(0.5 + 1.5)
    assert totals["publishing"] == pytest.approx(0.25 + 0.5)
    assert totals["other"] == pytest.approx(0.125)
    assert sum(totals.values()) == pytest.approx(0.5 + 0.25 + 2.0 + 0.125)


def test_a_real_profile_adds_up_and_finds_the_decoder() -> None:
    decoder = msgspec.json.Decoder()
    payload = msgspec.json.encode({"user_id": 1, "items": list(range(50))})
    profile = cProfile.Profile()
    profile.enable()
    for _ in range(2_000):
        decoder.decode(payload)
    profile.disable()
    stats = pstats.Stats(profile).stats  # type: ignore[attr-defined]
    totals = breakdown(stats)
    own = sum(entry[2] for entry in stats.values())
    assert sum(totals.values()) == pytest.approx(own)
    assert totals["decode"] > 0.0


def test_rows_are_largest_first_with_shares_and_per_event_cost() -> None:
    totals = dict.fromkeys(GROUPS, 0.0) | {"Redis scripts": 3.0, "decode": 1.0}
    rows = format_breakdown(totals, events=10_000)
    assert rows[0] == ("Redis scripts", "3.00 s", "75%, 300.0 µs/event")
    assert rows[1] == ("decode", "1.00 s", "25%, 100.0 µs/event")
    assert format_breakdown(totals, events=0)[0] == ("Redis scripts", "3.00 s", "75%")


def test_the_window_opens_at_the_first_batch_and_closes_once_enough_were_handled() -> None:
    calls: list[str] = []
    window = ProfileWindow(5, lambda: calls.append("start"), lambda: calls.append("stop"))

    async def handler(owner: object, records: list[int]) -> None:
        calls.append(f"batch {len(records)}")

    handle = window.wrap(handler)
    assert window.state == "waiting"
    asyncio.run(handle(None, [1, 2]))
    assert (window.state, calls) == ("open", ["start", "batch 2"])
    asyncio.run(handle(None, [3, 4, 5]))
    asyncio.run(handle(None, [6]))
    assert calls == ["start", "batch 2", "batch 3", "stop", "batch 1"]
    assert (window.state, window.handled) == ("closed", 6)
    window.close()
    assert calls.count("stop") == 1


def test_a_window_that_never_filled_stops_at_close_and_one_never_opened_does_not() -> None:
    calls: list[str] = []
    window = ProfileWindow(100, lambda: calls.append("start"), lambda: calls.append("stop"))

    async def failing(owner: object, records: list[int]) -> None:
        raise RuntimeError("redis down")

    with pytest.raises(RuntimeError):
        asyncio.run(window.wrap(failing)(None, [1]))
    window.close()
    assert calls == ["start", "stop"] and window.handled == 1
    unused = ProfileWindow(1, lambda: calls.append("start"), lambda: calls.append("stop"))
    unused.close()
    assert calls == ["start", "stop"] and unused.state == "closed"
