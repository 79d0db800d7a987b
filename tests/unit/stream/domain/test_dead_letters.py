"""Dead letters keep the original bytes, say why and where, and always fit the topic."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
from aiokafka.record.default_records import DefaultRecordBatchBuilder

from segstream.errors import EventError
from segstream.stream.domain.dead_letters import (
    HEADER_NAMES,
    ORIGINAL_SIZE,
    REASON,
    TRUNCATED,
    dead_letter,
    fit_dead_letter,
    read_headers,
    record_size,
    reject_record,
)
from segstream.stream.domain.topics import Output


def _letter(
    value: bytes | None = b"\xff raw",
    key: bytes | None = b"42",
    headers: list[tuple[str, bytes]] | None = None,
) -> Output:
    return dead_letter(
        "dead",
        EventError("unknown_status", "status 'Lost'"),
        source_topic="orders",
        partition=3,
        offset=77,
        key=key,
        value=value,
        headers=[("trace", b"abc")] if headers is None else headers,
    )


def test_dead_letter_keeps_the_original_bytes_and_says_why_and_where() -> None:
    letter = _letter(key=None)
    assert (letter.topic, letter.key, letter.value) == ("dead", None, b"\xff raw")
    assert [name for name, _ in letter.headers] == [*HEADER_NAMES, "trace"]
    assert HEADER_NAMES == (
        "segstream-reason",
        "segstream-detail",
        "segstream-topic",
        "segstream-partition",
        "segstream-offset",
    )
    assert read_headers(letter.headers) == {
        "segstream-reason": "unknown_status",
        "segstream-detail": "status 'Lost'",
        "segstream-topic": "orders",
        "segstream-partition": "3",
        "segstream-offset": "77",
    }


def test_an_inputs_headers_named_like_ours_are_dropped_the_others_kept_in_order() -> None:
    theirs = [
        ("segstream-reason", b"forged"),
        ("trace", b"1"),
        ("segstream-truncated", b"value"),
        ("reason", b"their own"),  # the old, unprefixed name is no longer ours
        ("segstream-original-size", b"9"),
        ("trace", b"2"),
    ]
    letter = _letter(headers=theirs)
    assert letter.headers[5:] == (("trace", b"1"), ("reason", b"their own"), ("trace", b"2"))
    names = [name for name, _ in letter.headers]
    assert names.count(REASON) == 1
    # Whichever occurrence a reader takes (first, or the last like Java's lastHeader), it
    # gets ours.
    assert [v for n, v in letter.headers if n == REASON] == [b"unknown_status"]
    assert TRUNCATED not in read_headers(letter.headers)


@pytest.mark.parametrize(
    ("key", "value", "headers"),
    [
        (None, None, []),
        (b"42", b"", []),
        (b"42", b"x" * 63, [("a", b"")]),
        (b"42", b"x" * 64, [("a", None)]),
        (b"k" * 200, b"x" * 8191, [("h" * 70, b"v" * 300)] * 3),
        (b"42", b"x" * 1_048_576, [("segstream-reason", b"too_large")]),
        (b"42", b"x" * 3_000_000, []),
    ],
)
def test_record_size_is_the_producers_own_bound(
    key: bytes | None, value: bytes | None, headers: list[tuple[str, bytes | None]]
) -> None:
    """aiokafka refuses a record above max_request_size by exactly this estimate."""
    expected = DefaultRecordBatchBuilder.estimate_size_in_bytes(key, value, headers)
    assert record_size(key, value, headers) == expected  # type: ignore[arg-type]


def test_a_letter_that_fits_is_left_as_it_is() -> None:
    letter = _letter(value=b"v" * 1000)
    assert fit_dead_letter(letter, record_size(letter.key, letter.value, letter.headers)) is letter


@pytest.mark.parametrize("over", [1, 2, 127, 128, 129, 1000, 16_383, 16_384, 500_000])
def test_an_oversize_letter_keeps_the_longest_prefix_of_its_value_that_fits(over: int) -> None:
    letter = _letter(value=bytes(range(256)) * 4096)  # 1 MiB
    limit = record_size(letter.key, letter.value, letter.headers) - over
    fitted = fit_dead_letter(letter, limit)
    assert fitted.value is not None and letter.value is not None
    assert letter.value.startswith(fitted.value)
    assert record_size(fitted.key, fitted.value, fitted.headers) <= limit
    one_more = letter.value[: len(fitted.value) + 1]
    assert record_size(fitted.key, one_more, fitted.headers) > limit  # the longest that fits
    assert fitted.key == letter.key
    assert fitted.headers[:5] == letter.headers[:5]  # the reason is kept
    assert fitted.headers[5:] == (
        (TRUNCATED, b"value"),
        (ORIGINAL_SIZE, b"1048576"),
        ("trace", b"abc"),
    )
    assert read_headers(fitted.headers)[ORIGINAL_SIZE] == "1048576"


def test_input_headers_that_leave_no_room_are_dropped_next() -> None:
    letter = _letter(value=b"v" * 5000, headers=[("big", b"h" * 5000)])
    fitted = fit_dead_letter(letter, 3000)
    assert record_size(fitted.key, fitted.value, fitted.headers) <= 3000
    assert dict(fitted.headers)[TRUNCATED] == b"value,headers"
    assert "big" not in dict(fitted.headers)
    assert fitted.value and 2000 < len(fitted.value) < 3000


def test_a_key_that_leaves_no_room_is_cut_last() -> None:
    letter = _letter(value=b"v" * 5000, key=b"k" * 5000)
    fitted = fit_dead_letter(letter, 3000)
    assert record_size(fitted.key, fitted.value, fitted.headers) <= 3000
    assert dict(fitted.headers)[TRUNCATED] == b"value,headers,key"
    assert fitted.value == b""
    assert fitted.key and 2000 < len(fitted.key) < 3000
    assert read_headers(fitted.headers)[REASON] == "unknown_status"


def test_a_null_value_stays_null_when_headers_are_cut() -> None:
    letter = _letter(value=None, headers=[("big", b"h" * 5000)])
    fitted = fit_dead_letter(letter, 2000)
    assert fitted.value is None
    assert dict(fitted.headers)[TRUNCATED] == b"value,headers"
    assert dict(fitted.headers)[ORIGINAL_SIZE] == b"0"


@dataclass
class _Record:
    """An input record as a consumer delivers it (see RawRecord)."""

    headers: Any
    value: bytes | None = b"\xff raw"
    topic: str = "orders"
    partition: int = 3
    offset: int = 77
    key: bytes | None = b"42"


@pytest.mark.parametrize(
    "headers",
    [
        {"trace": b"abc"},  # Faust's Message
        [("trace", b"abc")],  # aiokafka's ConsumerRecord
        (("trace", b"abc"),),
    ],
)
def test_a_rejected_record_becomes_its_dead_letter_whatever_form_its_headers_take(
    headers: Any,
) -> None:
    error = EventError("unknown_status", "status 'Lost'")
    letter, cut = reject_record("dead", _Record(headers), error, None)
    assert cut is False
    assert letter == _letter()


@pytest.mark.parametrize("headers", [None, {}, []])
def test_a_rejected_record_without_headers_carries_only_ours(headers: Any) -> None:
    error = EventError("unknown_status", "status 'Lost'")
    letter, _ = reject_record("dead", _Record(headers), error, 10_000)
    assert [name for name, _ in letter.headers] == list(HEADER_NAMES)


def test_a_rejected_record_over_the_limit_is_fitted_and_said_to_be_cut() -> None:
    error = EventError("unknown_status", "status 'Lost'")
    big = _Record([("trace", b"abc")], value=b"x" * 5_000)
    limit = 2_000
    letter, cut = reject_record("dead", big, error, limit)
    assert cut is True
    assert letter == fit_dead_letter(reject_record("dead", big, error, None)[0], limit)
    assert record_size(letter.key, letter.value, letter.headers) <= limit
    fits, cut = reject_record("dead", _Record([]), error, limit)
    assert cut is False
    assert fits == reject_record("dead", _Record([]), error, None)[0]
