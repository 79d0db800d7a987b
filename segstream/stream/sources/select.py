"""Which source a worker is given (``SEGSTREAM_SOURCE``), and the topics it reads."""

from __future__ import annotations

import redis.asyncio as aioredis

from segstream.settings import Settings
from segstream.stream.domain.topics import Topics
from segstream.stream.sources.base import InputSource
from segstream.stream.sources.change_capture import ChangeCapture
from segstream.stream.sources.debezium import ChangeTopics
from segstream.stream.sources.json_topics import JsonTopics
from segstream.stream.state.keys import state_prefix
from segstream.stream.state.products import ProductCatalogue
from segstream.stream.state.truncations import Truncations

__all__ = ["build_source", "input_topics"]


def input_topics(settings: Settings) -> tuple[str, ...]:
    """The topics a worker of ``settings`` consumes, co-partitioned by user."""
    if settings.source == "cdc":
        return ChangeTopics.from_settings(settings).inputs
    return (settings.topic_users, settings.topic_orders)


def build_source(settings: Settings, client: aioredis.Redis) -> InputSource:
    """The source of ``settings``; the change data capture one keeps its catalogue in ``client``."""
    topics = Topics.from_settings(settings)
    if settings.source == "cdc":
        prefix = state_prefix(settings)
        return ChangeCapture(
            ChangeTopics.from_settings(settings),
            topics.dead_letters,
            ProductCatalogue(client, prefix),
            Truncations(client, prefix),
        )
    return JsonTopics(topics)
