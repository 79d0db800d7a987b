"""Key names: one hash tag per user, glob characters of a prefix escaped."""

from __future__ import annotations

from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot

from segstream.stream.state.keys import (
    call_groups,
    outbox_key,
    population_key,
    population_keys,
    population_pattern,
    slot_groups,
    slot_tag,
    slot_tags,
    state_key,
    user_pattern,
    user_slot,
    wait_key,
)


def test_keys_share_the_user_hash_tag() -> None:
    assert state_key("app:", 42) == "app:{u:42}"
    assert outbox_key("app:", 42) == "app:{u:42}:ob"


def test_user_pattern_escapes_glob_characters_of_the_prefix() -> None:
    assert user_pattern("app:") == "app:{u:*}"
    assert user_pattern("a*b?[c]:") == "a\\*b\\?\\[c\\]:{u:*}"


def test_every_slot_has_a_tag_that_hashes_to_it() -> None:
    tags = slot_tags()
    assert len(tags) == REDIS_CLUSTER_HASH_SLOTS
    assert [key_slot(tag.encode()) for tag in tags] == list(range(REDIS_CLUSTER_HASH_SLOTS))


def test_on_a_cluster_a_users_population_key_shares_its_slot() -> None:
    for uid in (1, 42, 99_999, 2**53 - 1):
        counter = population_key("app:", uid, cluster=True)
        assert key_slot(counter.encode()) == key_slot(state_key("app:", uid).encode())
        assert counter.startswith("app:pop:{")


def test_a_single_server_has_one_population_key_for_every_user() -> None:
    assert {population_key("app:", uid, cluster=False) for uid in range(1, 500)} == {
        *population_keys("app:", cluster=False)
    }
    assert len(population_keys("app:", cluster=True)) == REDIS_CLUSTER_HASH_SLOTS


def test_population_keys_match_their_pattern_and_not_the_users() -> None:
    assert population_pattern("a*:") == "a\\*:pop:{*}"
    assert not population_key("app:", 1, cluster=True).startswith("app:{u:")


def test_the_wait_marker_shares_the_slot_of_the_key_it_stands_for() -> None:
    for key in (state_key("app:", 42), outbox_key("app:", 42)):
        assert wait_key(key) == "app:{u:42}:wait"
        assert key_slot(wait_key(key).encode()) == key_slot(key.encode())


def test_a_single_slots_tag_is_found_without_building_the_table() -> None:
    slot_tags.cache_clear()
    slot_tag.cache_clear()
    found = {slot: slot_tag(slot) for slot in (0, 1, 9_000, REDIS_CLUSTER_HASH_SLOTS - 1)}
    assert slot_tags.cache_info().currsize == 0  # a single server never pays for the table
    tags = slot_tags()
    assert found == {slot: tags[slot] for slot in found}


def test_a_user_slot_is_the_slot_of_every_key_of_the_user() -> None:
    for uid in (1, 42, 2**53 - 1):
        slot = user_slot("app:", uid)
        assert slot == key_slot(state_key("app:", uid).encode())
        assert slot == key_slot(outbox_key("app:", uid).encode())
        assert key_slot(population_key("app:", uid, cluster=True).encode()) == slot


def test_a_single_server_takes_every_user_in_one_call_in_order() -> None:
    assert call_groups("app:", [5, 3, 9], cluster=False) == [[5, 3, 9]]


def test_on_a_cluster_each_call_takes_the_users_of_one_slot_in_order() -> None:
    users = list(range(200))
    groups = call_groups("app:", users, cluster=True)

    slots = [{key_slot(state_key("app:", uid).encode()) for uid in group} for group in groups]
    assert all(len(group_slots) == 1 for group_slots in slots), "one slot per call"
    assert len({next(iter(s)) for s in slots}) == len(groups), "one call per slot"
    assert sorted(uid for group in groups for uid in group) == users, "nobody lost or doubled"
    assert all(group == sorted(group) for group in groups), "each user's order kept"
    firsts = [group[0] for group in groups]
    assert firsts == sorted(firsts), "calls in the order of their first user"


def test_slot_groups_name_each_groups_slot_and_match_call_groups() -> None:
    users = list(range(200))
    slotted = slot_groups("app:", users, cluster=True)
    assert [group for _, group in slotted] == call_groups("app:", users, cluster=True)
    for slot, group in slotted:
        assert {key_slot(state_key("app:", uid).encode()) for uid in group} == {slot}
    assert slot_groups("app:", [5, 3], cluster=False) == [(0, [5, 3])]
