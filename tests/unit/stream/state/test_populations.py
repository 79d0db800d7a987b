"""Population tallies merged per model version and segment."""

from __future__ import annotations

from segstream.stream.state.populations import Populations, merge_page


def test_page_tallies_merge_per_model_version_and_segment() -> None:
    by_version: dict[str, dict[int, int]] = {}
    assert merge_page(by_version, [1, b"v2", b"0", 1, b"v2", b"1", 2, b"v1", b"3", 1]) == 1
    assert merge_page(by_version, [0, b"v2", b"1", 5]) == 0
    assert by_version == {"v2": {0: 1, 1: 7}, "v1": {3: 1}}


def test_populations_of_a_version_list_every_segment_and_the_rest() -> None:
    populations = Populations({"v2": {0: 1, 2: 5}, "v1": {1: 4}}, unassigned=3)
    assert populations.of("v2", 4) == [1, 0, 5, 0]
    assert populations.elsewhere("v2") == 4
    assert populations.users == 13
