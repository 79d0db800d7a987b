"""A user as the stream sees it (:class:`UserState`), and the writes planned for one.

:class:`Settle` is one user's row of a ``settle`` call; :class:`SettleOutcome` what it left.

Plain records, no I/O: :mod:`segstream.stream.state` decodes them from Redis and writes them back,
:mod:`segstream.stream.domain.changes` plans a :class:`Settle` from a :class:`UserState`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["Settle", "SettleOutcome", "UserState"]


@dataclass(frozen=True, slots=True)
class UserState:
    """A user's state as ``apply`` left it; ``None`` where not known yet.

    ``segment``/``model_version`` are those of the last change queued for publication.
    """

    user_id: int
    applied: int
    """How many of the events just sent were fresh (the rest were redeliveries)."""
    age: int | None
    gender: str | None
    country: str | None
    traffic_source: str | None
    total_orders: int
    most_frequent_brand: str | None
    most_frequent_category: str | None
    segment: int | None
    model_version: str | None
    pending: int
    """Change events in the outbox, not yet acknowledged by the broker."""
    changes: int = 0
    """Changes queued for this user so far: the sequence number of the last one."""
    feature_version: int = 0
    """How many ``apply`` calls changed the features so far (hash field ``fv``): what a segment
    assigned from these features is checked against when it is written."""

    @property
    def assignable(self) -> bool:
        """True when every feature is known: a profile, an order, a brand and a category.

        The same rule as the SQL, which drops users without orders or with a missing feature.
        """
        return (
            self.age is not None
            and self.gender is not None
            and self.country is not None
            and self.traffic_source is not None
            and self.total_orders > 0
            and self.most_frequent_brand is not None
            and self.most_frequent_category is not None
        )

    def features(self) -> dict[str, Any]:
        """The feature row, by ``training.features.FEATURE_COLUMNS`` name (assignable users)."""
        return {
            "age": self.age,
            "gender": self.gender,
            "country": self.country,
            "traffic_source": self.traffic_source,
            "total_orders": self.total_orders,
            "most_frequent_brand": self.most_frequent_brand,
            "most_frequent_category": self.most_frequent_category,
        }


@dataclass(frozen=True, slots=True)
class Settle:
    """One user's row of a ``settle`` call: store a new segment with its change event, or only
    a new model version, or nothing; and read the user's outbox.

    Built by :func:`segstream.stream.domain.changes.plan_settle`. Every ``seen_*`` value is what
    ``apply`` returned: the write happens only if all are still stored (compare-and-set).
    """

    user_id: int
    seen_segment: int | None
    seen_model_version: str | None
    segment: int | None
    """The new segment: differs from ``seen_segment`` exactly when ``change`` is given.
    ``None`` with a ``change``: the user is no longer assignable and is unassigned (segment,
    model version and drift epoch removed, moved to the unassigned population)."""
    model_version: str | None
    """The new model version; when it differs from the seen one without a ``change``, only it
    is stored (no event: the segment is the same). ``None`` when no segment is stored."""
    change: bytes | None
    """The serialised change event to queue, or ``None``."""
    updated_at: str = ""
    """The change's occurred_at, stored with the segment (hash field ``ua``)."""
    seen_changes: int = 0
    """Changes queued so far; ``change`` is the next one."""
    seen_feature_version: int = 0
    """The features version the new segment was computed from."""
    drift_epoch: int | None = None
    """Drift mode: the epoch of the shared centres the segment was assigned with, stored with
    it (hash field ``de``) by every write of the row, a row that changes nothing else included;
    ``None`` without drift (the field is then removed by a write)."""

    @property
    def writes(self) -> bool:
        """True when the row stores something (a change, a model version or a drift epoch)."""
        return (
            self.change is not None
            or self.model_version != self.seen_model_version
            or self.drift_epoch is not None
        )


@dataclass(frozen=True, slots=True)
class SettleOutcome:
    """What a ``settle`` call left: the pending changes, and the writes it refused."""

    pending: dict[int, list[bytes]]
    """user -> every pending change, oldest first, those queued just now included; users
    without pending changes are left out."""
    refused: frozenset[int]
    """Users whose row had something to write (:attr:`Settle.writes`) but whose stored state
    was no longer the one seen: another writer updated them in between, and its write stands."""
