"""`crew-platform worker`: runs the executions the API processes enqueue (EXECUTOR=queue).

A worker is an in-process server without HTTP: the same dispatcher, runner and heartbeat, on the
same database and Redis event bus; only the source of execution ids differs. taskiq's receiver
takes at most `concurrency` messages at once from the broker; each becomes
`Dispatcher.run_to_end(execution_id)`, and its message is acknowledged when that returns True:
the runner ended (the execution completed, failed, was cancelled, paused or waits for input, or
this worker lost its lease) or had nothing to do (another process holds it, or it is finished).
Delivery is therefore at least once, and a second delivery is harmless: the runner's begin takes
the execution's lease or finds that a live process holds it, and goes on from its last
checkpoint (no finished step, model call or tool call is made again).

The heartbeat registers the worker (kind `worker`, listed by `GET /api/v1/workers` with what it
holds), renews its lease, takes over the executions of processes whose lease lapsed, and picks up
accepted executions nobody took up for LEASE_SECONDS while it has room (their message was lost).

SIGTERM or SIGINT: stop taking messages, stop the runners without touching their state, leave
their messages unacknowledged, retire the leases (another worker takes those executions over at
its next heartbeat), exit 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Awaitable, Callable

from taskiq import AsyncBroker, Context, TaskiqDepends
from taskiq.acks import AcknowledgeType
from taskiq.receiver import Receiver

from crew_platform.db import create_engine, create_sessionmaker
from crew_platform.engine import Dispatcher, Heartbeat, Process
from crew_platform.events.bus import create_bus
from crew_platform.llm.gateway import LLMGateway
from crew_platform.settings import Settings
from crew_platform.startup import check_executor, startup_step
from crew_platform.taskqueue.broker import TASK_NAME, create_broker, queue_name
from crew_platform.tools.registry import Registry

log = logging.getLogger(__name__)

STOP_TIMEOUT_SECONDS = 10.0
RELISTEN_SECONDS = 1.0
"""After the broker connection failed, the worker listens again this much later."""


def execution_task(dispatcher: Dispatcher) -> Callable[..., Awaitable[None]]:
    """The taskiq task a worker registers under TASK_NAME."""

    async def run_execution(execution_id: int, context: Context = TaskiqDepends()) -> None:
        if await dispatcher.run_to_end(execution_id) and context.is_ackable:
            await context.ack()

    return run_execution


class Consumer:
    """taskiq's receiver on the broker, listening again after a lost connection."""

    def __init__(self, broker: AsyncBroker, concurrency: int) -> None:
        self._broker = broker
        self._concurrency = concurrency
        self._finish = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._listen(), name="queue-consumer")

    async def _listen(self) -> None:
        while not self._finish.is_set():
            receiver = Receiver(
                self._broker,
                max_async_tasks=self._concurrency,
                max_prefetch=0,
                run_startup=False,
                ack_type=AcknowledgeType.MANUAL,
                wait_tasks_timeout=STOP_TIMEOUT_SECONDS,
            )
            try:
                await receiver.listen(self._finish)
            except Exception as exc:
                log.warning(
                    "queue consumer lost the broker (%s: %s); listening again in %g s",
                    type(exc).__name__,
                    exc,
                    RELISTEN_SECONDS,
                )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._finish.wait(), RELISTEN_SECONDS)

    def stop_taking(self) -> None:
        self._finish.set()

    async def stopped(self) -> None:
        """Wait (a bounded time) for the receiver to end, once its tasks returned."""
        if self._task is None:
            return
        try:
            await asyncio.wait_for(asyncio.shield(self._task), STOP_TIMEOUT_SECONDS)
        except TimeoutError:
            log.warning("queue consumer did not stop within %g s", STOP_TIMEOUT_SECONDS)
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task


async def serve(settings: Settings, concurrency: int, stop: asyncio.Event) -> None:
    """Run a worker until `stop` is set. Raises `StartupFailed` (naming the setting) when it
    cannot start."""
    check_executor(settings, worker=True)
    # Whatever start-up opened is closed in reverse order, also when a later step fails.
    async with contextlib.AsyncExitStack() as stack:
        engine = create_engine(settings)
        stack.push_async_callback(engine.dispose)
        sessionmaker = create_sessionmaker(engine)
        heartbeat = Heartbeat(
            engine,
            Process.new("worker"),
            settings.lease_seconds,
            pickup_after=settings.lease_seconds,
        )
        stack.push_async_callback(heartbeat.retire)
        bus = create_bus(settings, control_only=True)  # it shows no client any event
        stack.push_async_callback(bus.stop)
        with startup_step("connecting to the event bus (REDIS_URL)"):
            await bus.start()
        gateway = LLMGateway(settings)
        stack.push_async_callback(gateway.aclose)
        dispatcher = Dispatcher.of_process(
            sessionmaker,
            bus,
            gateway,
            Registry(settings, sessionmaker),
            owner=heartbeat.process.id,
            tool_timeout=settings.tool_timeout_seconds,
            max_running=concurrency,
        )
        broker = create_broker(settings, worker=heartbeat.process.id, concurrency=concurrency)
        broker.register_task(execution_task(dispatcher), task_name=TASK_NAME)
        stack.push_async_callback(broker.shutdown)
        with startup_step("connecting to the queue broker (BROKER_URL)"):
            await broker.startup()
        with startup_step("registering the worker in the database (DATABASE_URL)"):
            await heartbeat.register()  # live before it takes anything
            await heartbeat.beat(dispatcher)  # what lapsed or was never taken up
        consumer = Consumer(broker, concurrency)
        # On the way out: stop taking messages, stop the runners (their tasks return without
        # acknowledging), let the receiver end; then the broker, the bus, the leases.
        stack.push_async_callback(consumer.stopped)
        stack.push_async_callback(dispatcher.shutdown)
        stack.callback(consumer.stop_taking)
        consumer.start()
        heartbeat.start(dispatcher)
        stack.push_async_callback(heartbeat.stop)
        log.info(
            "worker %s consuming %s with at most %d execution(s) at once",
            heartbeat.process.id,
            queue_name(settings),
            concurrency,
        )
        await stop.wait()
        log.info("worker %s stopping", heartbeat.process.id)


async def run(settings: Settings, concurrency: int) -> None:
    """`serve` until SIGTERM or SIGINT."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await serve(settings, concurrency, stop)
