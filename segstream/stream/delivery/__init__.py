"""Webhook delivery of segment changes (``segstream deliver``, docs/delivery.md).

Modules, one concept each: :mod:`.config` (the destinations file), :mod:`.payload` (what is
POSTed), :mod:`.signing` (HMAC-SHA256 header), :mod:`.backoff` and :mod:`.ratelimit` (when to
send), :mod:`.sender` (one POST with retries), :mod:`.ordering` and :mod:`.floors` (per-user
order, offsets, backfill floors), :mod:`.dead_letters`, :mod:`.loop` (one destination's
consume-send-commit loop), :mod:`.process` (all of them, /metrics), :mod:`.backfill`,
:mod:`.redrive`, :mod:`.metrics`.
"""

from segstream.stream.delivery.config import (
    DeliveryConfig,
    DeliveryConfigError,
    Destination,
    load_delivery_config,
)
from segstream.stream.delivery.signing import SIGNATURE_HEADER, sign, verify

__all__ = [
    "SIGNATURE_HEADER",
    "DeliveryConfig",
    "DeliveryConfigError",
    "Destination",
    "load_delivery_config",
    "sign",
    "verify",
]
