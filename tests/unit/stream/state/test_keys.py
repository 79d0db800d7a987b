"""Key names: one hash tag per user, glob characters of a prefix escaped."""

from __future__ import annotations

from segstream.stream.state.keys import outbox_key, state_key, user_pattern


def test_keys_share_the_user_hash_tag() -> None:
    assert state_key("app:", 42) == "app:{u:42}"
    assert outbox_key("app:", 42) == "app:{u:42}:ob"


def test_user_pattern_escapes_glob_characters_of_the_prefix() -> None:
    assert user_pattern("app:") == "app:{u:*}"
    assert user_pattern("a*b?[c]:") == "a\\*b\\?\\[c\\]:{u:*}"
