"""The local broker's pure helpers."""

from __future__ import annotations

import base64

from segstream.services.kafka import _cluster_id, kafka_version


def test_kafka_cluster_ids_never_look_like_an_option() -> None:
    ids = {_cluster_id() for _ in range(2_000)}
    assert len(ids) == 2_000
    assert not any(i.startswith("-") for i in ids)
    assert all(len(base64.urlsafe_b64decode(i + "==")) == 16 for i in ids)


def test_bundled_pom_resolves_kafka_4() -> None:
    assert kafka_version().split(".")[0] == "4"
