"""The CDC bench's pure measuring logic: commit times read from recorded Debezium output, and
segment changes matched to the change rows that caused them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgspec

from benchmarks.cdc import commit_latencies, commit_millis
from benchmarks.stream import percentile

SAMPLES = Path(__file__).parents[1] / "stream" / "sources" / "samples"


def _records(case: str) -> list[dict[str, Any]]:
    lines = (SAMPLES / f"{case}.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def _value(record: dict[str, Any]) -> bytes | None:
    return None if record["value"] is None else record["value"].encode()


def test_commit_time_is_debeziums_source_ts_ms_with_or_without_the_envelope() -> None:
    plain, wrapped = _records("insert")[0], _records("insert.envelope")[0]
    assert commit_millis(_value(plain)) == 1796591382294
    assert commit_millis(_value(wrapped)) == 1796591382294
    # The event's own ts_ms (when Connect handled it) is later: it must not be the one read.
    assert json.loads(plain["value"])["ts_ms"] > 1796591382294


def test_tombstones_and_foreign_values_have_no_commit_time() -> None:
    tombstones = [r for r in _records("delete_line") if r["value"] is None]
    assert tombstones, "the recorded delete has its tombstone"
    assert commit_millis(None) is None
    assert commit_millis(b"not json") is None
    assert commit_millis(b'{"user_id": 3}') is None


def _change(topic: str, partition: int, offset: int) -> bytes:
    source = {"topic": topic, "partition": partition, "offset": offset}
    return msgspec.json.encode({"user_id": 1, "segment": 2, "source": source})


def test_each_change_is_matched_to_the_commit_of_the_row_that_caused_it() -> None:
    rows = [r for r in _records("insert") if r["value"] is not None]
    commits = {(r["topic"], r["partition"], r["offset"]): commit_millis(_value(r)) for r in rows}
    first = rows[0]
    committed = commits[(first["topic"], first["partition"], first["offset"])]
    assert committed is not None
    changes = [
        (_change(first["topic"], first["partition"], first["offset"]), committed + 40),
        # a product correction: one row, two buyers re-derived, each change counted
        (_change(first["topic"], first["partition"], first["offset"]), committed + 95),
        # caused by a snapshot row (not in commits): not a live change, not counted
        (_change(first["topic"], first["partition"], first["offset"] + 10_000), committed + 1),
        (_change("other.topic", first["partition"], first["offset"]), committed + 1),
    ]
    latencies = commit_latencies(commits, changes)  # type: ignore[arg-type]
    assert latencies == [40.0, 95.0]
    assert percentile(latencies, 50) == 67.5
    assert percentile([], 99) != percentile([], 99)  # NaN: nothing measured says so
