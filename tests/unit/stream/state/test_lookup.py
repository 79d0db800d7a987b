"""One stored user decoded, with the time of their current segment."""

from __future__ import annotations

import json

from segstream.stream.state.lookup import stored_user

FULL = {
    b"age": b"31",
    b"gen": b"F",
    b"cty": b"Brasil",
    b"src": b"Search",
    b"n": b"3",
    b"tb": b"Levi's",
    b"tc": b"Jeans",
    b"seg": b"2",
    b"mv": b"v1",
    b"f:orders:0": b"17",
    b"o:991": b"1",
}


def change(occurred_at: str) -> bytes:
    return json.dumps({"user_id": 7, "segment": 2, "occurred_at": occurred_at}).encode()


def test_unknown_user_has_no_hash_and_decodes_to_none() -> None:
    assert stored_user(7, {}, []) is None


def test_stored_hash_decodes_to_the_features_and_segment() -> None:
    user = stored_user(7, {**FULL, b"ua": b"2024-03-01T10:00:00Z"}, [])
    assert user is not None
    assert user.state.features() == {
        "age": 31,
        "gender": "F",
        "country": "Brasil",
        "traffic_source": "Search",
        "total_orders": 3,
        "most_frequent_brand": "Levi's",
        "most_frequent_category": "Jeans",
    }
    assert (user.state.segment, user.state.model_version) == (2, "v1")
    assert user.state.assignable
    assert user.updated_at == "2024-03-01T10:00:00Z"


def test_updated_at_falls_back_to_the_newest_pending_change() -> None:
    pending = [change("2024-01-01T00:00:00Z"), change("2024-02-02T00:00:00Z")]
    user = stored_user(7, FULL, pending)
    assert user is not None
    assert user.updated_at == "2024-02-02T00:00:00Z"
    assert user.state.pending == 2


def test_updated_at_is_unknown_without_stamp_or_pending_change() -> None:
    user = stored_user(7, FULL, [])
    assert user is not None and user.updated_at is None


def test_user_without_orders_is_not_assignable_and_has_no_segment() -> None:
    profile_only = {k: v for k, v in FULL.items() if k in (b"age", b"gen", b"cty", b"src")}
    user = stored_user(7, profile_only, [])
    assert user is not None
    assert not user.state.assignable
    assert (user.state.segment, user.state.total_orders, user.updated_at) == (None, 0, None)


def test_the_drift_epoch_of_the_last_assignment_is_read_only_when_stored() -> None:
    user = stored_user(7, {**FULL, b"de": b"42"}, [])
    assert user is not None and user.drift_epoch == 42
    plain = stored_user(7, FULL, [])
    assert plain is not None and plain.drift_epoch is None
