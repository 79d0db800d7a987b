"""The local-state baseline counts each user's events in its own counters."""

from __future__ import annotations

import msgspec

from benchmarks.baselines import LocalCounters


def _order(user_id: int, prices: list[float]) -> bytes:
    items = [{"product_id": 1, "brand": "b", "category": "c", "sale_price": p} for p in prices]
    return msgspec.json.encode({"order_id": 9, "user_id": user_id, "items": items})


def test_counters_per_user_profiles_orders_items_spend() -> None:
    counters = LocalCounters()
    assert counters.count(b"7", b'{"user_id": 7, "age": 30}', order=False) == b"[1,0,0,0.0]"
    assert counters.count(b"7", _order(7, [2.5, 1.5]), order=True) == b"[1,1,2,4.0]"
    assert counters.count(b"8", _order(8, [10.0]), order=True) == b"[0,1,1,10.0]"
    assert counters.count(b"7", _order(7, [1.0]), order=True) == b"[1,2,3,5.0]"
    assert counters.users == {b"7": [1, 2, 3, 5.0], b"8": [0, 1, 1, 10.0]}
    assert counters.rejected == 0


def test_a_record_that_is_not_a_json_object_is_rejected_and_changes_no_user() -> None:
    counters = LocalCounters()
    assert counters.count(b"7", b"{not json", order=True) is None
    assert counters.count(b"7", b"[1, 2]", order=True) is None
    assert counters.count(b"7", None, order=False) is None
    assert counters.count(None, b"{}", order=False) is None
    assert counters.rejected == 4
    assert counters.users == {}
