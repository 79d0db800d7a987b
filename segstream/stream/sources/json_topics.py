"""Segstream's own JSON events on the ``users`` and ``orders`` topics: the default source.

Decoding is :func:`~segstream.stream.domain.batch.parse_batch`'s, unchanged; this source has
no I/O of its own.
"""

from __future__ import annotations

from collections.abc import Sequence

from segstream.stream.domain.batch import ParsedBatch, RawRecord, parse_batch
from segstream.stream.domain.events import UnknownFields
from segstream.stream.domain.topics import Output, Topics

__all__ = ["JsonTopics"]


class JsonTopics:
    """The JSON events of ``topics.users`` and ``topics.orders`` (docs/stream.md)."""

    name = "json"

    def __init__(self, topics: Topics) -> None:
        self.topics = topics

    @property
    def inputs(self) -> tuple[str, ...]:
        return (self.topics.users, self.topics.orders)

    @property
    def user_keyed(self) -> tuple[str, ...]:
        return self.inputs

    def parse(
        self,
        records: Sequence[RawRecord],
        unknown_fields: UnknownFields = "ignore",
        *,
        max_bytes: int | None = None,
    ) -> ParsedBatch:
        return parse_batch(records, self.topics, unknown_fields, max_bytes=max_bytes)

    async def prepare(self, parsed: ParsedBatch) -> list[Output]:
        return []

    async def after_apply(self, parsed: ParsedBatch) -> list[Output]:
        return []
