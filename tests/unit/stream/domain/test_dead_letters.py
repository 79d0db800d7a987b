"""Dead letters keep the original bytes and say why and where."""

from __future__ import annotations

from segstream.errors import EventError
from segstream.stream.domain.dead_letters import HEADER_NAMES, dead_letter, read_headers


def test_dead_letter_keeps_the_original_bytes_and_says_why_and_where() -> None:
    letter = dead_letter(
        "dead",
        EventError("unknown_status", "status 'Lost'"),
        source_topic="orders",
        partition=3,
        offset=77,
        key=None,
        value=b"\xff raw",
        headers=[("trace", b"abc")],
    )
    assert (letter.topic, letter.key, letter.value) == ("dead", None, b"\xff raw")
    assert [name for name, _ in letter.headers] == [*HEADER_NAMES, "trace"]
    assert read_headers(letter.headers) == {
        "reason": "unknown_status",
        "detail": "status 'Lost'",
        "source_topic": "orders",
        "source_partition": "3",
        "source_offset": "77",
    }
