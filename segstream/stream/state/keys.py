"""Names of the worker's Redis keys.

Each user has one hash, ``<app_id>:{u:<user_id>}``, and, while a change waits for the broker,
one outbox list ``<app_id>:{u:<user_id>}:ob``; the hash tag keeps both in one cluster slot.
"""

from __future__ import annotations

from segstream.settings import Settings

__all__ = ["outbox_key", "state_key", "state_prefix", "user_pattern", "wait_key"]


def state_prefix(settings: Settings) -> str:
    """Prefix of the worker's Redis keys: ``<app_id>:``, so apps (and tests) never share state."""
    return f"{settings.app_id}:"


def state_key(prefix: str, user_id: int) -> str:
    """Name of the user's hash: ``<prefix>{u:<user_id>}``."""
    return f"{prefix}{{u:{user_id}}}"


def outbox_key(prefix: str, user_id: int) -> str:
    """Name of the user's outbox list (same hash slot as the hash)."""
    return f"{prefix}{{u:{user_id}}}:ob"


def user_pattern(prefix: str) -> str:
    """SCAN MATCH pattern of every user hash (``prefix`` glob characters escaped)."""
    escaped = "".join("\\" + c if c in "*?[]\\" else c for c in prefix)
    return escaped + "{u:*}"


def wait_key(key: str) -> str:
    """A short-lived marker in ``key``'s hash slot: ``<prefix>{u:<user_id>}:wait``.

    Written just before a ``WAIT`` on the same connection (``RedisState``), so the WAIT
    covers every write the node made before it, whichever connection made them. Not a hash:
    the user scans (``SCAN ... TYPE hash``) never see it.
    """
    return key.split("}", 1)[0] + "}:wait"
