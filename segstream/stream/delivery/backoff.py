"""How long to wait before the next attempt at a destination (pure).

Exponential backoff comes from the project's one policy
(:func:`segstream.stream.clients.retry.backoff_delays`); a ``Retry-After`` header, in seconds or
as an HTTP date, wins over it, capped at the destination's ``backoff_max_s`` so that a
destination cannot park its deliveries for a day.
"""

from __future__ import annotations

from email.utils import parsedate_to_datetime

from segstream.stream.clients.retry import backoff_delays

__all__ = ["is_retriable", "next_delay", "retry_after_s"]


def retry_after_s(value: str | None, now: float) -> float | None:
    """Seconds a ``Retry-After`` value asks to wait (``now``: unix seconds), or None when it is
    absent or malformed. A date in the past is 0."""
    if not value:
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - now)


def next_delay(
    attempt: int, first_s: float, cap_s: float, retry_after: float | None = None
) -> float:
    """Seconds to wait after failed attempt ``attempt`` (1-based) before the next one."""
    if retry_after is not None:
        return min(cap_s, retry_after)
    return backoff_delays(first_s, cap_s)(attempt)


def is_retriable(status: int | None) -> bool:
    """Whether another attempt can succeed after HTTP ``status`` (None: no answer at all).

    Retried: no answer (refused, reset, timed out), 408, 425, 429 and every 5xx. Any other 4xx
    says the request itself is wrong: dead-lettered at once. A 2xx is success, not asked here.
    """
    return status is None or status in (408, 425, 429) or status >= 500
