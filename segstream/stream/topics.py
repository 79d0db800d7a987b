"""Creating the stream's topics, before any producer or consumer touches them.

Creating them up front (instead of letting the broker auto-create them on first use) gives the
input topics the configured partition count, the same for both, which their co-partitioning
needs, and ``user-segments`` its ``cleanup.policy=compact``. It also lets a worker's first
group join see its topics at once rather than after a metadata refresh.
"""

from __future__ import annotations

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from segstream.errors import ServiceError
from segstream.settings import Settings
from segstream.stream.retry import KAFKA_TRANSIENT, retry

__all__ = ["ensure_topics", "topic_specs"]


def topic_specs(settings: Settings) -> dict[str, dict[str, str]]:
    """Every topic the stream uses -> its topic configuration."""
    return {
        settings.topic_users: {},
        settings.topic_orders: {},
        settings.topic_segment_changes: {},
        settings.topic_user_segments: {"cleanup.policy": "compact"},
        settings.topic_dead_letters: {},
    }


async def ensure_topics(settings: Settings, attempts: int = 5) -> list[str]:
    """Create the stream's missing topics with ``settings.topic_partitions``; returns the new.

    Existing topics are left as they are (their partition count is not changed).

    Raises:
        ServiceError: the broker cannot be reached or refuses, after ``attempts`` tries.
    """

    async def create() -> list[str]:
        admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers)
        await admin.start()
        try:
            existing = set(await admin.list_topics())
            wanted = [
                NewTopic(name, settings.topic_partitions, 1, topic_configs=config)
                for name, config in topic_specs(settings).items()
                if name not in existing
            ]
            if not wanted:
                return []
            response = await admin.create_topics(wanted)
            for name, code, *_ in response.topic_errors:
                # 36: TOPIC_ALREADY_EXISTS, another process created it between list and create.
                if code not in (0, TopicAlreadyExistsError.errno):
                    raise ServiceError(f"the broker refused to create topic {name}: error {code}")
            return [topic.name for topic in wanted]
        finally:
            await admin.close()

    return await retry(
        create,
        what=f"creating topics on {settings.kafka_bootstrap_servers}",
        transient=KAFKA_TRANSIENT,
        attempts=attempts,
        first_delay_s=0.5,
    )
