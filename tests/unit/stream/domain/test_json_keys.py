"""One guard refuses a JSON object that names a key twice, for events and request bodies."""

from __future__ import annotations

import json

import pytest

from segstream.stream.domain.json_keys import RepeatedKeyError, unique_keys


def test_an_object_with_distinct_keys_keeps_them_in_order() -> None:
    document = json.loads('{"b": 1, "a": {"c": 2, "d": 3}}', object_pairs_hook=unique_keys)
    assert list(document) == ["b", "a"]
    assert list(document["a"]) == ["c", "d"]


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ('{"age": 30, "age": -1}', "age"),
        ('{"x": [{"a": 1, "a": 2}]}', "a"),  # nested in an array
        ('{"\\u0061ge": 30, "age": 31}', "age"),  # the same key, escaped once
    ],
)
def test_a_repeated_key_is_refused_naming_it(text: str, key: str) -> None:
    with pytest.raises(RepeatedKeyError) as caught:
        json.loads(text, object_pairs_hook=unique_keys)
    assert caught.value.name == key
    assert str(caught.value) == f"key {key!r} appears more than once in one object"


def test_a_long_key_is_named_by_its_first_40_characters() -> None:
    key = "k" * 100
    with pytest.raises(RepeatedKeyError) as caught:
        unique_keys([(key, 1), (key, 2)])
    assert caught.value.name == key
    assert str(caught.value) == f"key {'k' * 40!r} appears more than once in one object"
