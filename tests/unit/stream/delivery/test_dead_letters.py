from __future__ import annotations

from datetime import UTC, datetime

import pytest

from segstream.stream.delivery.dead_letters import (
    decode_dead_letter,
    destination_of,
    encode_dead_letter,
    event_of,
)
from segstream.stream.delivery.payload import snapshot_event


def test_a_dead_letter_keeps_destination_status_and_the_event_to_resend() -> None:
    event = snapshot_event(7, 3, 2, "v1", "2024-01-01T00:00:00Z")
    key, value = encode_dead_letter(
        "crm",
        event,
        b"",
        last_status=503,
        error="HTTP 503",
        attempts=8,
        now=datetime(2024, 1, 1, tzinfo=UTC),
    )
    letter = decode_dead_letter(value)
    assert key == b"7"
    assert (letter.destination, letter.last_status, letter.attempts) == ("crm", 503, 8)
    assert letter.failed_at == "2024-01-01T00:00:00.000+00:00"
    assert event_of(letter) == event


def test_bytes_that_were_no_change_are_kept_without_an_event() -> None:
    key, value = encode_dead_letter(
        "crm", None, b"garbage", last_status=None, error="x", attempts=0
    )
    letter = decode_dead_letter(value)
    assert key is None and event_of(letter) is None and letter.change == "garbage"
    with pytest.raises(ValueError):
        decode_dead_letter(b"{}")


def test_the_destination_is_read_from_a_letter_alone() -> None:
    _, value = encode_dead_letter(
        "crm", None, b"not a change", last_status=None, error="x", attempts=1
    )
    assert destination_of(value) == "crm"
    assert destination_of(b"{}") is None
    assert destination_of(b"not json") is None
    assert destination_of(None) is None
