"""EXECUTOR=queue with RabbitMQ as the broker (BROKER_URL=amqp://…): 2 API processes and 2
workers on a fresh PostgreSQL database and Redis for events. The runs spread over both workers and
each completes exactly once; stopped with SIGTERM, the workers exit 0 and leave no message in the
queue (an unacknowledged one would have gone back to it when their connection closed)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from crew_platform.devtools.llm_stub import StubServer
from tests.conftest import fresh_postgres, run_coroutine
from tests.scale.procs import AMQP_URL, Deployment, deployment, require_broker
from tests.scale.scenarios import runs_spread_and_complete_once


@pytest.fixture(scope="module")
def rabbit_deployment(
    stub: StubServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Deployment]:
    require_broker(AMQP_URL)
    with (
        fresh_postgres() as url,
        deployment(url, stub, AMQP_URL, tmp_path_factory.mktemp("rabbit-deployment")) as running,
    ):
        yield running


def messages_in_queue(name: str) -> int:
    async def count() -> int:
        import aio_pika

        connection = await aio_pika.connect(AMQP_URL, timeout=5)
        async with connection:
            channel = await connection.channel()
            queue = await channel.declare_queue(name, passive=True)
            return int(queue.declaration_result.message_count or 0)

    result: int = run_coroutine(count)
    return result


async def test_runs_spread_over_both_workers_and_each_completes_exactly_once(
    rabbit_deployment: Deployment, stub: StubServer
) -> None:
    await runs_spread_and_complete_once(rabbit_deployment, stub)
    for worker in rabbit_deployment.workers:
        assert worker.terminate() == 0, worker.log()[-3000:]
    assert messages_in_queue(rabbit_deployment.queue) == 0
