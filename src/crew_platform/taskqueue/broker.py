"""The taskiq broker of a deployment, from BROKER_URL.

`redis://…`: taskiq-redis's `RedisStreamBroker` (a stream and a consumer group: each message
goes to one worker, stays pending until that worker acknowledges it, and is claimed by another
worker once it was left unacknowledged for BROKER_REDELIVERY_SECONDS). `amqp://…`:
taskiq-aio-pika's `AioPikaBroker` (a durable quorum queue: an unacknowledged message goes back
to the queue when its worker's connection closes).

The stream, queue and exchange are named after the deployment (`<EVENTS_CHANNEL_PREFIX>:
executions`, by default a hash of DATABASE_URL), so deployments sharing a Redis or a RabbitMQ
never take each other's executions.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from crew_platform.events.bus import deployment_prefix
from crew_platform.settings import Settings
from crew_platform.startup import broker_kind

if TYPE_CHECKING:
    from taskiq import AsyncBroker

TASK_NAME = "crew_platform.run_execution"
"""The one task: run execution `execution_id` (its only argument)."""

REDIS_STREAM_MAXLEN = 100_000
"""The stream is trimmed (approximately) to this many messages: acknowledged ones stay in a
stream until trimmed. A message trimmed before it was run is picked up all the same (workers
run accepted executions nobody took up, see `engine/heartbeat.py`)."""


def queue_name(settings: Settings) -> str:
    return f"{deployment_prefix(settings)}:executions"


def create_broker(
    settings: Settings, *, worker: str | None = None, concurrency: int = 1
) -> AsyncBroker:
    """The deployment's broker; with `worker` (the worker's process id, which names it in the
    consumer group), one that consumes, at most `concurrency` messages unacknowledged at once
    (the rest stay in the queue for the other workers)."""
    url = settings.broker_url or ""
    name = queue_name(settings)
    broker: AsyncBroker
    if broker_kind(url) == "amqp":
        from taskiq_aio_pika import AioPikaBroker, Exchange, Queue

        broker = AioPikaBroker(
            url,
            qos=concurrency,
            exchange=Exchange(name=name),
            task_queues=[Queue(name=name)],
            dead_letter_queue=Queue(name=f"{name}.dead"),
        )
    else:
        from taskiq_redis import RedisStreamBroker

        broker = RedisStreamBroker(
            url,
            queue_name=name,
            consumer_group_name=name,
            consumer_name=worker,
            # A group created now also gets what was enqueued before it existed.
            consumer_id="0",
            maxlen=REDIS_STREAM_MAXLEN,
            # One message per read: a worker takes a message only when it has room for it.
            xread_count=1,
            xread_block=1000,
            idle_timeout=int(settings.broker_redelivery_seconds * 1000),
            unacknowledged_batch_size=concurrency,
        )
    broker.is_worker_process = worker is not None
    return broker
