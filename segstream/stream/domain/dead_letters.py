"""Dead letters: rejected inputs, kept byte for byte with why and where they came from.

A record on the dead-letter topic has the original key and value bytes, unchanged (so it can
be fixed and replayed), and these headers, all UTF-8, first and in this order:

=======================  ==========================================================
``segstream-reason``     a short code from :data:`segstream.stream.domain.events.REASONS`
``segstream-detail``     a human-readable explanation (at most 200 characters)
``segstream-topic``      the input topic
``segstream-partition``  the input partition, decimal
``segstream-offset``     the input offset, decimal
=======================  ==========================================================

The input's own headers follow, in their order, except any named like one of ours
(:data:`RESERVED_HEADER_NAMES`, the two below included): those are dropped, so each of our
names appears exactly once and every reader finds ours, whichever occurrence it takes (Kafka's
Java ``Headers.lastHeader`` takes the last, most others the first). An input that is itself a
dead letter sent back to an input topic thus gets this rejection's headers, not its old ones.

A dead letter too large for the dead-letter topic (:func:`fit_dead_letter`, given the
broker's limit) keeps the first bytes of the value that fit, keeps its reason, and gets:

===========================  ======================================================
``segstream-truncated``      what was cut: ``value``, then if still too large
                             ``value,headers`` (the input's headers dropped), then
                             ``value,headers,key`` (the key cut too)
``segstream-original-size``  the original value's length in bytes, decimal
===========================  ======================================================

Letters written before these names had the ``segstream-`` prefix used ``reason``,
``detail``, ``source_topic``, ``source_partition`` and ``source_offset``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import TYPE_CHECKING, Final

from segstream.errors import EventError
from segstream.stream.domain.topics import Output

if TYPE_CHECKING:  # batch.py builds on this module; the protocol is only needed for types
    from segstream.stream.domain.batch import RawRecord

__all__ = [
    "HEADER_NAMES",
    "ORIGINAL_SIZE",
    "REASON",
    "RESERVED_HEADER_NAMES",
    "TRUNCATED",
    "dead_letter",
    "fit_dead_letter",
    "read_headers",
    "record_size",
    "reject_record",
]

REASON: Final = "segstream-reason"
DETAIL: Final = "segstream-detail"
TOPIC: Final = "segstream-topic"
PARTITION: Final = "segstream-partition"
OFFSET: Final = "segstream-offset"
TRUNCATED: Final = "segstream-truncated"
ORIGINAL_SIZE: Final = "segstream-original-size"

HEADER_NAMES: Final = (REASON, DETAIL, TOPIC, PARTITION, OFFSET)
"""Headers every dead letter carries, first and in this order."""
RESERVED_HEADER_NAMES: Final = frozenset((*HEADER_NAMES, TRUNCATED, ORIGINAL_SIZE))
"""Every header name a dead letter's own headers may use; an input's headers by these names
are dropped from its dead letter."""

# Kafka's record batch format (v2): a batch header of 61 bytes, then per record its length,
# attributes, timestamp delta and offset delta (at most 5 + 1 + 10 + 5 bytes as varints),
# then the key, value and headers with their varint lengths. The bound is the producer's
# own (aiokafka's and the Java client's estimate), so a record within it is never refused.
_BATCH_OVERHEAD: Final = 61
_RECORD_OVERHEAD: Final = 21


def _varint_size(value: int) -> int:
    """Bytes of ``value`` as a zigzag varint, as Kafka writes lengths (-1: null)."""
    encoded = (value << 1) ^ (value >> 63)
    size = 1
    while encoded >= 0x80:
        encoded >>= 7
        size += 1
    return size


def _bytes_size(data: bytes | None) -> int:
    return _varint_size(-1) if data is None else _varint_size(len(data)) + len(data)


def record_size(
    key: bytes | None, value: bytes | None, headers: Sequence[tuple[str, bytes]]
) -> int:
    """Upper bound, in bytes, of one record alone in a record batch (batch header included).

    The producer refuses a record above its ``max_request_size`` by this bound, and the broker
    one whose batch is above the topic's ``max.message.bytes``.
    """
    size = _BATCH_OVERHEAD + _RECORD_OVERHEAD + _bytes_size(key) + _bytes_size(value)
    size += _varint_size(len(headers))
    for name, data in headers:
        size += _bytes_size(name.encode()) + _bytes_size(data)
    return size


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
    """The dead-letter record for an input rejected with ``error`` (see the module docstring).

    ``headers`` are the input's own; those named like ours are dropped.
    """
    ours = (
        (REASON, error.reason.encode()),
        (DETAIL, error.detail.encode()),
        (TOPIC, source_topic.encode()),
        (PARTITION, str(partition).encode()),
        (OFFSET, str(offset).encode()),
    )
    theirs = tuple(
        (name, data) for name, data in headers or () if name not in RESERVED_HEADER_NAMES
    )
    return Output(topic, key, value, ours + theirs)


def _input_headers(record: RawRecord) -> list[tuple[str, bytes]]:
    """``record``'s own headers as (name, bytes) pairs: Faust gives a dict, aiokafka a list."""
    headers = record.headers
    if not headers:
        return []
    if isinstance(headers, dict):
        return list(headers.items())
    return list(headers)


def reject_record(
    topic: str, record: RawRecord, error: EventError, max_bytes: int | None
) -> tuple[Output, bool]:
    """The dead letter on ``topic`` of an input ``record`` rejected with ``error``.

    The letter carries the record's key, value and headers (see :func:`dead_letter`); with a
    ``max_bytes`` it is fitted to it (:func:`fit_dead_letter`). Returns the letter and whether
    it had to be cut to fit.
    """
    letter = dead_letter(
        topic,
        error,
        source_topic=record.topic,
        partition=record.partition,
        offset=record.offset,
        key=record.key,
        value=record.value,
        headers=_input_headers(record),
    )
    if max_bytes is None:
        return letter, False
    fitted = fit_dead_letter(letter, max_bytes)
    return fitted, fitted is not letter


def _cut(data: bytes | None, fixed: int, limit: int) -> bytes | None:
    """The longest prefix of ``data`` that keeps a record of ``fixed`` other bytes in ``limit``."""
    if data is None:
        return None
    length = min(len(data), max(limit - fixed - 1, 0))
    while length > 0 and fixed + _varint_size(length) + length > limit:
        length -= 1  # at most 4 steps: only the length's own varint is still unaccounted for
    return data[:length]


def fit_dead_letter(letter: Output, max_bytes: int) -> Output:
    """``letter`` (made by :func:`dead_letter`) if it fits ``max_bytes``, else a truncated copy.

    Fitting means a :func:`record_size` within ``max_bytes``.

    The copy keeps our headers (:data:`HEADER_NAMES`), adds :data:`TRUNCATED` and
    :data:`ORIGINAL_SIZE`, and cuts, in this order and only as far as needed: the value (to
    its longest prefix that fits), the input's headers (all dropped), the key (cut like the
    value). A letter whose own headers alone exceed ``max_bytes`` (a limit of a few hundred
    bytes) comes back with an empty value and key, still too large; the limits Kafka allows
    in practice are far above that.
    """
    if record_size(letter.key, letter.value, letter.headers) <= max_bytes:
        return letter
    ours = letter.headers[: len(HEADER_NAMES)]
    theirs = letter.headers[len(HEADER_NAMES) :]
    original = str(0 if letter.value is None else len(letter.value)).encode()
    for cut, kept in (("value", theirs), ("value,headers", ())):
        headers = (*ours, (TRUNCATED, cut.encode()), (ORIGINAL_SIZE, original), *kept)
        fixed = record_size(letter.key, b"", headers) - _varint_size(0)
        if fixed + _varint_size(0) <= max_bytes:
            value = _cut(letter.value, fixed, max_bytes)
            return dataclasses.replace(letter, value=value, headers=headers)
    headers = (*ours, (TRUNCATED, b"value,headers,key"), (ORIGINAL_SIZE, original))
    value = None if letter.value is None else b""
    fixed = record_size(b"", value, headers) - _varint_size(0)
    return dataclasses.replace(
        letter, key=_cut(letter.key, fixed, max_bytes), value=value, headers=headers
    )


def read_headers(headers: Sequence[tuple[str, bytes]]) -> dict[str, str]:
    """A dead letter's own headers (:data:`RESERVED_HEADER_NAMES`) as text, by name.

    Only ours carry these names (the input's are dropped), so each appears once.
    """
    return {name: data.decode() for name, data in headers if name in RESERVED_HEADER_NAMES}
