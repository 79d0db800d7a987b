"""The guard against a JSON object that names a key twice, for every JSON input we judge.

Python's ``json`` (like most parsers) keeps the last of two values of one key silently, so a
document ``{"age": 30, "age": -1}`` would be judged by a value its sender may not have meant.
Inputs judged by field (an event's exact path in :mod:`segstream.stream.domain.events`, a
``POST /predict`` body) are parsed with :func:`unique_keys` as ``object_pairs_hook`` instead.
"""

from __future__ import annotations

from typing import Any

__all__ = ["RepeatedKeyError", "unique_keys"]


class RepeatedKeyError(ValueError):
    """An object of a JSON document names a key twice; the message names it (40 characters
    at most) and is the same wherever the document came from."""

    def __init__(self, name: str) -> None:
        super().__init__(f"key {name[:40]!r} appears more than once in one object")
        self.name = name
        """The repeated key, whole."""


def unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object's ``(key, value)`` pairs as a dict, in order; ``json.loads``'s
    ``object_pairs_hook``.

    Raises:
        RepeatedKeyError: a key appears twice (the first repeat found).
    """
    document: dict[str, Any] = {}
    for name, value in pairs:
        if name in document:
            raise RepeatedKeyError(name)
        document[name] = value
    return document
