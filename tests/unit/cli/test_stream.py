"""``segstream segment``'s readable form of a user's stored state."""

from __future__ import annotations

from typing import Any

from segstream.cli.stream import user_text


def described(**changes: Any) -> dict[str, Any]:
    """A ``describe_user`` document of an assigned user with two orders."""
    user: dict[str, Any] = {
        "user_id": 42,
        "segment": 3,
        "model_version": "20250101T000000Z-abc",
        "updated_at": "2025-01-02T03:04:05Z",
        "changes": 1,
        "feature_version": 3,
        "assignable": True,
        "features": {
            "age": 34,
            "gender": "F",
            "country": "Brasil",
            "traffic_source": "Search",
            "total_orders": 2,
            "most_frequent_brand": "Zara",
            "most_frequent_category": "Jeans",
        },
        "orders": [5323, 7001],
        "brand_counts": {"Zara": 2},
        "category_counts": {"Jeans": 2},
        "fences": {"orders:1": 17},
        "pending": [],
    }
    return user | changes


def test_orders_counted_is_a_count_with_the_ids_after_it() -> None:
    text = user_text(described())
    assert "  orders counted 2 (ids 5323, 7001)" in text.splitlines()
    assert "  segment        3  (model 20250101T000000Z-abc, since 2025-01-02T03:04:05Z)" in text


def test_a_user_without_a_segment_says_why_and_prints_no_none() -> None:
    features = dict.fromkeys(described()["features"], None) | {"total_orders": 1}
    user = described(
        segment=None,
        model_version=None,
        updated_at=None,
        changes=0,
        assignable=False,
        features=features | {"most_frequent_brand": "Zara", "most_frequent_category": "Jeans"},
        orders=[5323],
    )
    text = user_text(user)
    assert "None" not in text
    assert "segment        none yet (missing age, gender, country, traffic_source)" in text
    assert "  orders counted 1 (ids 5323)" in text.splitlines()
    assert "  assignable     no" in text.splitlines()


def test_a_user_with_no_order_counts_zero() -> None:
    features = described()["features"] | {"total_orders": 0, "most_frequent_brand": None}
    text = user_text(described(segment=None, features=features, orders=[], assignable=False))
    assert "  orders counted 0" in text.splitlines()
    assert "missing total_orders, most_frequent_brand" in text


def test_a_drift_mode_user_shows_the_epoch_of_their_last_assignment() -> None:
    text = user_text(described(drift_epoch=118))
    expected = "  segment        3  (model 20250101T000000Z-abc, drift epoch 118, since "
    assert expected + "2025-01-02T03:04:05Z)" in text.splitlines()
    assert "drift epoch" not in user_text(described(drift_epoch=None))


def test_a_user_unassigned_after_losing_a_feature_says_so() -> None:
    features = described()["features"] | {"most_frequent_brand": None}
    user = described(segment=None, model_version=None, updated_at=None, changes=2)
    text = user_text(user | {"assignable": False, "features": features})
    assert "None" not in text
    assert "segment        none (missing most_frequent_brand; unassigned)" in text
