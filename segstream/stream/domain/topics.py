"""Where the worker's records go: the topic names it reads and writes, and one record to publish."""

from __future__ import annotations

from dataclasses import dataclass

from segstream.settings import Settings

__all__ = ["Output", "Topics"]


@dataclass(frozen=True, slots=True)
class Topics:
    """The topic names the worker reads and writes."""

    users: str
    orders: str
    segment_changes: str
    user_segments: str
    dead_letters: str

    @classmethod
    def from_settings(cls, settings: Settings) -> Topics:
        """The topics named by ``settings``."""
        return cls(
            users=settings.topic_users,
            orders=settings.topic_orders,
            segment_changes=settings.topic_segment_changes,
            user_segments=settings.topic_user_segments,
            dead_letters=settings.topic_dead_letters,
        )


@dataclass(frozen=True, slots=True)
class Output:
    """One record to publish: topic, key, value, headers."""

    topic: str
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...] = ()
