"""Population counter fields merged per model version and segment."""

from __future__ import annotations

from segstream.stream.state.populations import Populations, merge_counts


def test_counter_fields_merge_per_model_version_and_segment() -> None:
    by_version: dict[str, dict[int, int]] = {}
    reply = [b"u", 4, b"s:0:v2", 1, b"s:1:v2", 2, b"s:3:v1", 1]
    assert merge_counts(by_version, reply) == 4
    assert merge_counts(by_version, {"s:1:v2": 5}) == 0
    assert by_version == {"v2": {0: 1, 1: 7}, "v1": {3: 1}}


def test_a_model_version_may_contain_colons() -> None:
    by_version: dict[str, dict[int, int]] = {}
    merge_counts(by_version, [b"s:12:2024-05-01T10:00:00", 3])
    assert by_version == {"2024-05-01T10:00:00": {12: 3}}


def test_populations_of_a_version_list_every_segment_and_the_rest() -> None:
    populations = Populations({"v2": {0: 1, 2: 5}, "v1": {1: 4}}, unassigned=3)
    assert populations.of("v2", 4) == [1, 0, 5, 0]
    assert populations.elsewhere("v2") == 4
    assert populations.users == 13
