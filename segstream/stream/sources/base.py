"""What the worker is given as its input: a source, behind one small interface.

A source knows its input topics and how their records become domain changes
(:mod:`segstream.stream.domain.events`, :mod:`segstream.stream.domain.rows`), grouped by user
in arrival order, with a dead letter for each record it cannot use. Everything after that is
one path whatever the source (:class:`~segstream.stream.worker.processor.BatchProcessor`):
Redis state (``apply.lua``), assignment, the outbox and publishing.

Sources: :class:`~segstream.stream.sources.json_topics.JsonTopics` (segstream's own events,
the default) and :class:`~segstream.stream.sources.change_capture.ChangeCapture` (Debezium's
change events of the shop's database, ``SEGSTREAM_SOURCE=cdc``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from segstream.stream.domain.batch import ParsedBatch, RawRecord
from segstream.stream.domain.events import UnknownFields
from segstream.stream.domain.topics import Output

__all__ = ["InputSource"]


class InputSource(Protocol):
    """An input format: its topics, its decoding, and its I/O before the state is updated."""

    name: str
    """``json`` or ``cdc`` (``SEGSTREAM_SOURCE``)."""

    @property
    def inputs(self) -> tuple[str, ...]:
        """The topics the worker consumes, all co-partitioned by user."""
        ...

    @property
    def user_keyed(self) -> tuple[str, ...]:
        """The input topics keyed by user, whose records must sit on their key's partition
        (the misplaced-record check, ``segstream_misplaced_records_total``)."""
        ...

    def parse(
        self,
        records: Sequence[RawRecord],
        unknown_fields: UnknownFields = "ignore",
        *,
        max_bytes: int | None = None,
    ) -> ParsedBatch:
        """Records -> each user's changes in arrival order, and the rejects' dead letters
        (each within ``max_bytes``, see :func:`~segstream.stream.domain.batch.parse_batch`).
        Pure: never raises for a bad record."""
        ...

    async def prepare(self, parsed: ParsedBatch) -> list[Output]:
        """The source's own I/O before the batch's changes are applied (may fill them in);
        returns records to publish with the batch's dead letters, acknowledged before the
        batch's offsets are. Safe to repeat (the caller retries it on Redis failures)."""
        ...

    async def after_apply(self, parsed: ParsedBatch) -> list[Output]:
        """The source's I/O once the batch's changes are applied: more records to publish
        with the batch's changes. Safe to repeat."""
        ...
