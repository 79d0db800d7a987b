"""Key names: one hash tag per user, glob characters of a prefix escaped."""

from __future__ import annotations

from redis.crc import key_slot

from segstream.stream.state.keys import outbox_key, state_key, user_pattern, wait_key


def test_keys_share_the_user_hash_tag() -> None:
    assert state_key("app:", 42) == "app:{u:42}"
    assert outbox_key("app:", 42) == "app:{u:42}:ob"


def test_user_pattern_escapes_glob_characters_of_the_prefix() -> None:
    assert user_pattern("app:") == "app:{u:*}"
    assert user_pattern("a*b?[c]:") == "a\\*b\\?\\[c\\]:{u:*}"


def test_the_wait_marker_shares_the_slot_of_the_key_it_stands_for() -> None:
    for key in (state_key("app:", 42), outbox_key("app:", 42)):
        assert wait_key(key) == "app:{u:42}:wait"
        assert key_slot(wait_key(key).encode()) == key_slot(key.encode())
