"""Debezium change events -> row changes, on real connector output (``samples/``, recorded by
cdcinfra from Debezium 3.6.1.Final), with and without the schema envelope; and every way an
event can be unusable, dead-lettered with its reason."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from segstream.errors import EventError
from segstream.stream.domain.dead_letters import read_headers
from segstream.stream.domain.events import UserEvent, UserLeft
from segstream.stream.domain.rows import (
    ItemRow,
    OrderRow,
    ProductRefresh,
    ProductRow,
    TableTruncated,
)
from segstream.stream.sources.change_capture import (
    ChangeBatch,
    ChangeCapture,
    decode_routed,
    encode_routed,
)
from segstream.stream.sources.debezium import ChangeTopics, decode_change, user_change_key

SAMPLES = Path(__file__).parent / "samples"
TOPICS = ChangeTopics(
    "shop.public.users",
    "shop.public.orders",
    "shop.public.order_items",
    "shop.public.products",
    "segstream-rederive",
)
TABLE_OF = {
    TOPICS.users: "users",
    TOPICS.orders: "orders",
    TOPICS.order_items: "order_items",
    TOPICS.products: "products",
}


@dataclass
class Record:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Any = ()


def recorded(case: str, envelope: bool) -> list[Record]:
    """The case's records as the connector wrote them (the envelope copy's topics renamed)."""
    name = f"{case}.envelope.jsonl" if envelope else f"{case}.jsonl"
    records = []
    for line in (SAMPLES / name).read_text().splitlines():
        raw = json.loads(line)
        topic = raw["topic"].replace("shopenv.", "shop.", 1)
        key = raw["key"].encode() if raw["key"] is not None else None
        value = raw["value"].encode() if raw["value"] is not None else None
        records.append(Record(topic, raw["partition"], raw["offset"], key, value))
    return records


def parse(records: list[Record]) -> ChangeBatch:
    return ChangeCapture(TOPICS, "dead", None).parse(records)


def changes(batch: ChangeBatch) -> list[Any]:
    return [change for events in batch.by_user.values() for _, change in events]


ENVELOPES = pytest.mark.parametrize("envelope", [False, True], ids=["plain", "envelope"])


@ENVELOPES
class TestEachChangeKind:
    def test_a_snapshot_reads_every_table(self, envelope: bool) -> None:
        batch = parse(recorded("snapshot", envelope))
        kinds = {type(change) for change in changes(batch)}
        assert kinds == {UserEvent, OrderRow, ItemRow}
        assert all(change.present for change in changes(batch) if not isinstance(change, UserEvent))
        assert batch.products and all(row.present for _, row in batch.products)
        assert batch.dead_letters == []

    def test_an_insert_is_a_profile_an_order_and_a_line_of_one_user(self, envelope: bool) -> None:
        batch = parse(recorded("insert", envelope))
        assert list(batch.by_user) == [900001]
        found = {type(c): c for c in changes(batch)}
        assert found[OrderRow] == OrderRow(
            900001, 900001, True, found[OrderRow].created_at, found[OrderRow].lsn
        )
        assert (found[ItemRow].item_id, found[ItemRow].order_id, found[ItemRow].product_id) == (
            900001,
            900001,
            1,
        )
        assert (found[UserEvent].age, found[UserEvent].country) == (31, "Japan")

    def test_a_profile_update_replaces_the_profile(self, envelope: bool) -> None:
        (change,) = changes(parse(recorded("update_profile", envelope)))
        assert isinstance(change, UserEvent)
        assert (change.age, change.country, change.traffic_source) == (32, "Brasil", "Facebook")

    def test_a_profile_with_a_null_or_empty_value_has_it_missing(self, envelope: bool) -> None:
        (record,) = recorded("update_profile", envelope)
        assert record.value is not None
        document = json.loads(record.value)
        payload = document.get("payload", document)
        payload["after"]["country"], payload["after"]["age"] = "", None
        value = json.dumps(document).encode()
        (change,) = changes(parse([Record(record.topic, 0, 0, record.key, value)]))
        assert (change.age, change.country, change.gender) == (None, None, "F")

    def test_a_deleted_line_is_the_row_gone_and_its_tombstone_is_skipped(
        self, envelope: bool
    ) -> None:
        records = recorded("delete_line", envelope)
        assert records[-1].value is None
        batch = parse(records)
        (change,) = changes(batch)
        assert isinstance(change, ItemRow) and not change.present
        assert (change.item_id, change.order_id, change.user_id) == (900002, 900001, 900001)
        assert batch.dead_letters == []

    def test_a_moved_order_is_a_create_for_one_user_and_a_delete_for_the_other(
        self, envelope: bool
    ) -> None:
        batch = parse(recorded("move_order", envelope))
        assert sorted(batch.by_user) == [1, 900001]
        new = [c for _, c in batch.by_user[1]]
        old = [c for _, c in batch.by_user[900001]]
        assert all(c.present for c in new) and not any(c.present for c in old)
        assert {type(c) for c in new} == {type(c) for c in old} == {OrderRow, ItemRow}

    def test_a_deleted_user_leaves_after_their_rows_go(self, envelope: bool) -> None:
        batch = parse(recorded("delete_user", envelope))
        found = changes(batch)
        assert [type(c) for c in found] == [ItemRow, OrderRow, UserLeft]
        assert found[-1].user_id == 2
        assert not any(c.present for c in found[:2])

    def test_a_product_correction_is_a_product_row_of_no_user(self, envelope: bool) -> None:
        batch = parse(recorded("update_product", envelope))
        assert batch.by_user == {}
        ((_, row),) = batch.products
        assert row == ProductRow(2, True, "Corrected Brand", "Jeans", row.created_at, row.lsn)

    def test_a_truncate_is_one_change_of_no_user_at_its_log_position(self, envelope: bool) -> None:
        batch = parse(recorded("truncate", envelope))
        assert batch.by_user == {} and batch.dead_letters == []
        (truncate,) = batch.truncates
        assert (truncate.table, truncate.lsn) == ("order_items", 26787144)

    def test_every_row_change_carries_its_log_position(self, envelope: bool) -> None:
        rows = [c for c in changes(parse(recorded("insert", envelope))) if hasattr(c, "lsn")]
        assert rows and all(row.lsn > 0 for row in rows)


def _insert_value() -> dict[str, Any]:
    """The recorded insert of an order line, as a document to break."""
    (record,) = recorded("insert_line", False)
    assert record.value is not None
    return json.loads(record.value)


def _refusal(document: Any, topic: str = TOPICS.order_items, key: bytes | None = None) -> str:
    raw = document if isinstance(document, bytes) else json.dumps(document).encode()
    with pytest.raises(EventError) as caught:
        decode_change(TABLE_OF, topic, key or b'{"user_id":900001}', raw)
    return caught.value.reason


class TestUnusableEvents:
    def test_bytes_that_are_not_json(self) -> None:
        assert _refusal(b"{not json") == "not_json"
        assert _refusal(b'"\xff"') == "not_utf8"

    def test_a_malformed_envelope(self) -> None:
        assert _refusal([1, 2]) == "bad_envelope"
        document = _insert_value()
        del document["op"]
        assert _refusal(document) == "bad_envelope"
        document = _insert_value()
        document["after"] = None
        assert _refusal(document) == "bad_envelope"
        assert _refusal({**_insert_value(), "op": "x"}) == "bad_envelope"

    def test_an_unknown_table(self) -> None:
        document = _insert_value()
        document["source"]["table"] = "returns"
        assert _refusal(document) == "unknown_table"
        assert _refusal(_insert_value(), topic=TOPICS.orders) == "unknown_table"

    def test_a_delete_without_the_columns_it_needs(self) -> None:
        document = _insert_value()
        document["op"], document["before"], document["after"] = "d", {"id": 900002}, None
        reason = _refusal(document)
        assert reason == "missing_field"
        with pytest.raises(EventError, match="REPLICA IDENTITY FULL"):
            decode_change(
                TABLE_OF, TOPICS.order_items, b'{"user_id":1}', json.dumps(document).encode()
            )

    def test_a_value_outside_the_input_table(self) -> None:
        document = _insert_value()
        document["after"]["product_id"] = -3
        assert _refusal(document) == "out_of_range"
        document["after"]["product_id"] = "three"
        assert _refusal(document) == "wrong_type"

    def test_a_key_that_names_another_user(self) -> None:
        assert _refusal(_insert_value(), key=b'{"user_id":7}') == "key_mismatch"
        assert _refusal(_insert_value(), key=b"900001") == "key_mismatch"

    def test_every_refusal_is_a_dead_letter_and_the_rest_of_the_batch_goes_on(self) -> None:
        good = recorded("insert_line", False)[0]
        bad = Record(good.topic, good.partition, good.offset + 1, good.key, b"{oops")
        batch = parse([bad, good])
        assert batch.reasons == ["not_json"]
        assert batch.dead_letters[0].value == b"{oops"
        assert [type(c) for c in changes(batch)] == [ItemRow]


def test_a_truncate_of_users_is_dead_lettered_saying_what_to_do() -> None:
    (record,) = recorded("truncate", False)
    assert record.value is not None
    document = json.loads(record.value)
    document["source"]["table"] = "users"
    value = json.dumps(document).encode()
    batch = parse([Record(TOPICS.users, 0, 0, None, value)])
    assert batch.reasons == ["unsupported_change"]
    detail = read_headers(batch.dead_letters[0].headers)["segstream-detail"]
    assert "TRUNCATE of users" in detail


class TestRoutedChanges:
    def test_an_update_that_moves_a_row_routes_the_retraction_to_the_old_user(self) -> None:
        document = _insert_value()
        document["op"] = "u"
        document["before"] = {**document["after"], "user_id": 5}
        decoded = decode_change(
            TABLE_OF, TOPICS.order_items, b'{"user_id":900001}', json.dumps(document).encode()
        )
        (moved_in,) = decoded.changes
        (moved_out,) = decoded.routed
        assert (moved_in.user_id, moved_in.present) == (900001, True)
        assert (moved_out.user_id, moved_out.present) == (5, False)

    @pytest.mark.parametrize(
        "change",
        [
            OrderRow(1, 2, False, "2026-01-01T00:00:00Z"),
            ItemRow(3, 1, 2, 9, False, "2026-01-01T00:00:00Z"),
            ProductRefresh(2, 9, "2026-01-01T00:00:00Z"),
            TableTruncated(2, "orders", 77, "2026-01-01T00:00:00Z"),
        ],
    )
    def test_a_routed_change_round_trips_keyed_by_its_user(self, change: Any) -> None:
        record = encode_routed(change)
        assert record.key == user_change_key(2)
        assert decode_routed(record.value, record.key) == change

    def test_a_routed_record_under_the_wrong_key_is_refused(self) -> None:
        record = encode_routed(ProductRefresh(2, 9, "2026-01-01T00:00:00Z"))
        with pytest.raises(EventError, match="user_id 2"):
            decode_routed(record.value, user_change_key(3))
        with pytest.raises(EventError):
            decode_routed(b'{"type":"Nope"}', record.key)


def test_every_input_but_products_is_checked_for_misplaced_records() -> None:
    source = ChangeCapture(TOPICS, "dead", None)
    assert source.inputs == (*source.user_keyed[:3], TOPICS.products, TOPICS.routed)
    assert TOPICS.products not in source.user_keyed and TOPICS.routed in source.user_keyed
