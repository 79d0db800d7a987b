"""A model version's lineage: which version it follows, how its segments were numbered.

Values only (frozen dataclasses and their JSON form); the matching itself is
:mod:`segstream.training.align`. A version's ``model.json`` carries a ``lineage`` object
(``null`` in artifacts written before lineage existed), read back by :func:`lineage_from_json`::

    {"previous_version": "20240101T000000Z-1a2b3c4d" | null,
     "aligned": true,
     "reason": "segment ids follow 20240101T000000Z-1a2b3c4d: 4 of 4 segments matched ...",
     "matches": [{"segment": 0, "previous": 2, "distance": 0.0123}, ...],   # one per segment
     "absent_values": {"most_frequent_brand": 3},
     "transitions": [[812, 0, 3], [1, 990, 0]] | null}                    # k_previous x k
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from segstream.errors import ArtifactError

__all__ = ["Lineage", "SegmentMatch", "Transitions", "lineage_from_json", "lineage_to_json"]


@dataclass(frozen=True)
class SegmentMatch:
    """How one segment of this version was numbered.

    ``previous`` is the previous version's segment whose centre it was matched to (``None``:
    it had no partner, so it took the lowest id left free); ``distance`` is the distance
    between the two centres in this version's PCA space (``None`` without a partner).
    ``segment == previous`` means it kept the id; with fewer segments than before, a segment
    matched to a previous id >= k cannot keep it and takes the lowest id left free instead.
    """

    segment: int
    previous: int | None
    distance: float | None

    @property
    def kept_id(self) -> bool:
        """True when the segment carries its previous partner's id."""
        return self.previous == self.segment


@dataclass(frozen=True)
class Transitions:
    """Training users by segment under the previous model (rows) and this one (columns).

    ``counts[p][s]`` (a ``k_previous`` x ``k`` table) is how many of this version's training
    users the previous model assigns to segment ``p`` and this model to segment ``s``; both
    assignments are of the same users on the same (new) training data.
    """

    counts: tuple[tuple[int, ...], ...]

    @property
    def users(self) -> int:
        """Number of users compared."""
        return sum(map(sum, self.counts))

    @property
    def kept(self) -> int:
        """Users whose segment id is the same under both models (the diagonal)."""
        return sum(row[i] for i, row in enumerate(self.counts) if i < len(row))

    @property
    def moved(self) -> int:
        """Users whose segment id changed."""
        return self.users - self.kept

    @property
    def kept_share(self) -> float:
        """``kept / users`` in 0..1 (NaN when no user was compared)."""
        return self.kept / self.users if self.users else math.nan


@dataclass(frozen=True)
class Lineage:
    """Where a version comes from and whether its segment ids follow the previous version's.

    Attributes:
        previous_version: the version aligned to or compared with; ``None`` for a first model.
        aligned: True when the segments were renumbered to follow ``previous_version``.
        reason: one sentence for people: what was done, or why there was no alignment.
        matches: one :class:`SegmentMatch` per segment, in id order, when ``aligned``;
            empty otherwise (the ids are then k-means' own).
        absent_values: per categorical column, how many of the previous vocabulary's values
            are not in this version's (re-encoded by sort position, see align).
        transitions: the previous model's segments versus this one's over this version's
            training users; ``None`` when the previous model could not be loaded.
    """

    previous_version: str | None
    aligned: bool
    reason: str
    matches: tuple[SegmentMatch, ...] = ()
    absent_values: Mapping[str, int] = field(default_factory=dict)
    transitions: Transitions | None = None

    def check(self, k: int) -> None:
        """Raise ArtifactError unless the lineage fits a model of ``k`` segments."""
        if self.aligned and [m.segment for m in self.matches] != list(range(k)):
            raise ArtifactError(f"lineage matches must number segments 0..{k - 1} in order")
        if not self.aligned and self.matches:
            raise ArtifactError("lineage has matches but says the segments were not aligned")
        if self.transitions is not None and any(len(r) != k for r in self.transitions.counts):
            raise ArtifactError(f"lineage transitions must have {k} columns")


def lineage_to_json(lineage: Lineage) -> dict[str, object]:
    """The JSON object stored as ``model.json``'s ``lineage``."""
    return {
        "previous_version": lineage.previous_version,
        "aligned": lineage.aligned,
        "reason": lineage.reason,
        "matches": [
            {"segment": m.segment, "previous": m.previous, "distance": m.distance}
            for m in lineage.matches
        ],
        "absent_values": dict(lineage.absent_values),
        "transitions": (
            None if lineage.transitions is None else [list(r) for r in lineage.transitions.counts]
        ),
    }


def _int(value: object, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise ArtifactError(f"lineage: {what} must be an integer")
    return value


def _optional_int(value: object, what: str) -> int | None:
    return None if value is None else _int(value, what)


def _optional_float(value: object, what: str) -> float | None:
    if value is None:
        return None
    if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
        raise ArtifactError(f"lineage: {what} must be a finite number or null")
    return float(value)


def lineage_from_json(document: object) -> Lineage:
    """Parse :func:`lineage_to_json`'s object.

    Raises:
        ArtifactError: a field is missing or of the wrong type.
    """
    if not isinstance(document, dict):
        raise ArtifactError("lineage must be an object")
    previous = document.get("previous_version")
    aligned = document.get("aligned")
    reason = document.get("reason")
    if previous is not None and not isinstance(previous, str):
        raise ArtifactError("lineage: previous_version must be a string or null")
    if not isinstance(aligned, bool) or not isinstance(reason, str):
        raise ArtifactError("lineage: aligned (boolean) and reason (string) are required")
    matches_doc = document.get("matches")
    absent_doc = document.get("absent_values")
    transitions_doc = document.get("transitions")
    if not isinstance(matches_doc, list) or not all(isinstance(m, dict) for m in matches_doc):
        raise ArtifactError("lineage: matches must be a list of objects")
    if not isinstance(absent_doc, dict):
        raise ArtifactError("lineage: absent_values must be an object")
    matches = tuple(
        SegmentMatch(
            segment=_int(m.get("segment"), "matches.segment"),
            previous=_optional_int(m.get("previous"), "matches.previous"),
            distance=_optional_float(m.get("distance"), "matches.distance"),
        )
        for m in matches_doc
    )
    transitions = None
    if transitions_doc is not None:
        if not isinstance(transitions_doc, list) or not all(
            isinstance(r, list) for r in transitions_doc
        ):
            raise ArtifactError("lineage: transitions must be a list of lists or null")
        transitions = Transitions(
            tuple(tuple(_int(n, "transitions") for n in row) for row in transitions_doc)
        )
    return Lineage(
        previous_version=previous,
        aligned=aligned,
        reason=reason,
        matches=matches,
        absent_values={str(c): _int(n, "absent_values") for c, n in absent_doc.items()},
        transitions=transitions,
    )
