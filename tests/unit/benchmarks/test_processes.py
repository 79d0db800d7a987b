"""The process counts ``segstream bench stream --processes LIST`` measures."""

from __future__ import annotations

import pytest

from benchmarks.processes import parse_counts
from segstream.errors import ConfigError


def test_counts_in_order_with_all_as_the_cores_and_no_repeats() -> None:
    assert parse_counts("1,2,all", cores=8) == [1, 2, 8]
    assert parse_counts("1, 2, ALL", cores=2) == [1, 2]


@pytest.mark.parametrize("text", ["0", "1,x", "-2", "1,,2", "2000"])
def test_a_bad_entry_is_named_with_an_example(text: str) -> None:
    with pytest.raises(ConfigError, match="is not a count from 1 to 1024 or 'all'"):
        parse_counts(text, cores=4)
