"""Per-user state in Redis: key names, codec, the batched Lua-script store, lookups, populations.

``lua/apply.lua`` and ``lua/settle.lua`` are the scripts :class:`RedisState` runs; their headers
document the hash fields.
"""

from __future__ import annotations

from segstream.stream.state.codec import decode_state, describe_user, encode_events
from segstream.stream.state.keys import outbox_key, state_key, state_prefix, user_pattern
from segstream.stream.state.lookup import StoredUser, read_stored_user, stored_user
from segstream.stream.state.populations import (
    PopulationCache,
    Populations,
    count_populations,
    merge_counts,
    read_populations,
    recount_populations,
)
from segstream.stream.state.store import RedisState

__all__ = [
    "PopulationCache",
    "Populations",
    "RedisState",
    "StoredUser",
    "count_populations",
    "decode_state",
    "describe_user",
    "encode_events",
    "merge_counts",
    "outbox_key",
    "read_populations",
    "read_stored_user",
    "recount_populations",
    "state_key",
    "state_prefix",
    "stored_user",
    "user_pattern",
]
