"""segstream: customer segments that follow behaviour live.

The offline half (:mod:`segstream.training`) trains k-means segments over thelook-shaped tables;
the online half (:mod:`segstream.stream`) keeps every customer's segment current from Kafka
events. Both read one :class:`Settings` (``SEGSTREAM_*`` environment variables) and raise
:class:`SegstreamError` subclasses on purpose.
"""

from __future__ import annotations

from segstream.errors import SegstreamError
from segstream.settings import Settings, load_settings

__all__ = ["SegstreamError", "Settings", "load_settings"]
