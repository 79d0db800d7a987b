"""HMAC-SHA256 signatures of webhook bodies (pure).

The header is ``X-Segstream-Signature: t=<unix seconds>,v1=<64 hex digits>`` where the digest
is HMAC-SHA256, keyed with the destination's secret, of ``<t>.`` followed by the exact body
bytes. The timestamp is signed too, so a receiver that rejects old timestamps also rejects a
captured request replayed later.
"""

from __future__ import annotations

import hashlib
import hmac

__all__ = ["SIGNATURE_HEADER", "sign", "verify"]

SIGNATURE_HEADER = "X-Segstream-Signature"


def _digest(secret: bytes, timestamp: int, body: bytes) -> str:
    return hmac.new(secret, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def sign(secret: bytes, timestamp: int, body: bytes) -> str:
    """The signature header's value for ``body`` sent at ``timestamp`` (unix seconds)."""
    return f"t={timestamp},v1={_digest(secret, timestamp, body)}"


def verify(secret: bytes, header: str, body: bytes, now: int, tolerance_s: int = 300) -> bool:
    """What a receiver checks: ``header`` signs ``body`` with ``secret``, at most
    ``tolerance_s`` seconds from ``now`` (unix seconds). Constant-time comparison."""
    fields = dict(part.split("=", 1) for part in header.split(",") if "=" in part)
    try:
        timestamp = int(fields["t"])
    except (KeyError, ValueError):
        return False
    if abs(now - timestamp) > tolerance_s:
        return False
    return hmac.compare_digest(fields.get("v1", ""), _digest(secret, timestamp, body))
