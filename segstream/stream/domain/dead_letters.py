"""Dead letters: rejected inputs, kept byte for byte with why and where they came from.

A record on the dead-letter topic has the original key and value bytes, unchanged (so it can
be fixed and replayed), and these headers, all UTF-8:

==================  ===========================================================
``reason``          a short code from :data:`segstream.stream.domain.events.REASONS`
``detail``          a human-readable explanation (at most 200 characters)
``source_topic``    the input topic
``source_partition``  the input partition, decimal
``source_offset``   the input offset, decimal
==================  ===========================================================

The original headers follow, unchanged, after these.
"""

from __future__ import annotations

from collections.abc import Sequence

from segstream.errors import EventError
from segstream.stream.domain.topics import Output

__all__ = ["HEADER_NAMES", "dead_letter", "read_headers"]

HEADER_NAMES = ("reason", "detail", "source_topic", "source_partition", "source_offset")
"""Headers every dead letter carries, first and in this order."""


def dead_letter(
    topic: str,
    error: EventError,
    *,
    source_topic: str,
    partition: int,
    offset: int,
    key: bytes | None,
    value: bytes | None,
    headers: Sequence[tuple[str, bytes]] | None = None,
) -> Output:
    """The dead-letter record for an input rejected with ``error``."""
    ours = (
        ("reason", error.reason.encode()),
        ("detail", error.detail.encode()),
        ("source_topic", source_topic.encode()),
        ("source_partition", str(partition).encode()),
        ("source_offset", str(offset).encode()),
    )
    return Output(topic, key, value, ours + tuple(headers or ()))


def read_headers(headers: Sequence[tuple[str, bytes]]) -> dict[str, str]:
    """Our headers of a dead letter as text, by name (the first of each name wins)."""
    found: dict[str, str] = {}
    for name, value in headers:
        if name in HEADER_NAMES and name not in found:
            found[name] = value.decode()
    return found
