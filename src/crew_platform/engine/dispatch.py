"""In-process dispatcher: owns one asyncio task per running execution.

Nothing here is fire-and-forget: every task is tracked, its failure is logged, shutdown cancels
and awaits them all, and an execution submitted again while its task is still finishing (resume
right after pause) is run again as soon as that task ends.

Control requests reach a runner three ways: directly from the service in this process, through
the store (runners re-read their execution's status at every task boundary), and on the event
bus: a `workflow_cancelled` event, from whichever process took the request, aborts this
process's runner of that execution at once, and a `workflow_paused` one stops it at its next
task boundary without waiting to read the store (with the Redis bus, across processes).

The same dispatcher runs executions in a server (EXECUTOR=inprocess: the services submit) and in
a queue worker (EXECUTOR=queue: each message of the queue is `run_to_end`, and acknowledged when
that returns True).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Iterable

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from crew_platform.engine.lease import TO_RECOVER
from crew_platform.engine.runner import ExecutionRunner
from crew_platform.engine.scheduler import Control
from crew_platform.events.bus import EventBus
from crew_platform.events.types import Event, EventType
from crew_platform.llm.gateway import LLMGateway
from crew_platform.tools.base import Toolbox

log = logging.getLogger(__name__)


_CONTROL_EVENTS = (EventType.WORKFLOW_CANCELLED, EventType.WORKFLOW_PAUSED)

RETRY_LIMIT = 5
"""Times a runner that failed outside its own error handling (the store unreachable, a pool
time-out) is started again, with backoff, before the execution waits for the next start-up."""


class Dispatcher:
    @classmethod
    def of_process(
        cls,
        sessionmaker: async_sessionmaker[AsyncSession],
        bus: EventBus,
        gateway: LLMGateway,
        toolbox: Toolbox,
        *,
        owner: str,
        tool_timeout: float,
        max_running: int,
    ) -> Dispatcher:
        """The dispatcher a process that runs executions builds (an in-process server, a queue
        worker): one runner on the process's store, bus, gateway and tools."""
        runner = ExecutionRunner(
            sessionmaker, bus, gateway, toolbox, owner=owner, tool_timeout=tool_timeout
        )
        return cls(runner, sessionmaker, max_running=max_running)

    def __init__(
        self,
        runner: ExecutionRunner,
        sessionmaker: async_sessionmaker[AsyncSession],
        max_running: int = 128,
    ) -> None:
        self._runner = runner
        self._sessions = sessionmaker
        self._max_running = max_running
        self._waiting: dict[int, None] = {}
        """Executions waiting for a free slot, in arrival order (a dict: O(1) membership)."""
        self._failures: dict[int, int] = {}
        self._retry_timers: dict[int, asyncio.TimerHandle] = {}
        self._jobs: dict[int, asyncio.Task[None]] = {}
        self._controls: dict[int, Control] = {}
        self._again: set[int] = set()
        self._enders: dict[int, list[asyncio.Future[bool]]] = {}
        """Who waits for an execution's runner to end here (`run_to_end`)."""
        self._closing = False
        self._idle = asyncio.Event()
        self._idle.set()
        self._unsubscribe = runner.bus.subscribe(self._on_event)

    def submit(self, execution_id: int) -> None:
        """Run the execution now, or as soon as fewer than `max_running` run (it stays
        `pending` meanwhile: many more runners than model slots only contend for the store)."""
        if self._closing:
            return
        if execution_id in self._jobs:
            self._again.add(execution_id)
            return
        if execution_id in self._waiting:
            return
        if len(self._jobs) >= self._max_running:
            self._waiting[execution_id] = None
            self._idle.clear()
            return
        self._start(execution_id)

    async def run_to_end(self, execution_id: int) -> bool:
        """Submit the execution, then wait until this process neither runs it nor means to:
        its runner ended (the execution finished, paused, waits for input, was cancelled, or
        this process lost its lease) or found nothing to do (another process holds it, or it
        is no longer to run). False if this process stopped first (shutdown): the execution's
        state was left as it was, for another process to go on with."""
        if self._closing:
            return False
        ended = asyncio.get_running_loop().create_future()
        self._enders.setdefault(execution_id, []).append(ended)
        self.submit(execution_id)
        return bool(await ended)

    def room(self) -> int:
        """How many more executions this process would start now."""
        return max(0, self._max_running - len(self._jobs) - len(self._waiting))

    def _settle(self, execution_id: int) -> None:
        """Tell `run_to_end` callers the execution's runner ended here, unless it runs again."""
        if (
            execution_id in self._jobs
            or execution_id in self._waiting
            or execution_id in self._retry_timers
        ):
            return
        for ended in self._enders.pop(execution_id, ()):
            if not ended.done():
                ended.set_result(not self._closing)

    def _start(self, execution_id: int) -> None:
        control = Control()
        job = asyncio.create_task(
            self._runner.run(execution_id, control), name=f"execution-{execution_id}"
        )
        self._jobs[execution_id] = job
        self._controls[execution_id] = control
        self._idle.clear()
        job.add_done_callback(functools.partial(self._finished, execution_id))

    def _finished(self, execution_id: int, job: asyncio.Task[None]) -> None:
        self._jobs.pop(execution_id, None)
        control = self._controls.pop(execution_id, None)
        if not job.cancelled() and (exc := job.exception()) is not None:
            self._retry_later(execution_id, exc)
        else:
            self._failures.pop(execution_id, None)
        if control is not None and control.run_again:
            self._again.add(execution_id)
        if execution_id in self._again:
            self._again.discard(execution_id)
            self.submit(execution_id)
        while self._waiting and len(self._jobs) < self._max_running and not self._closing:
            next_id = next(iter(self._waiting))
            del self._waiting[next_id]
            self.submit(next_id)
        if not self._jobs and not self._waiting and not self._retry_timers:
            self._idle.set()
        self._settle(execution_id)

    def _retry_later(self, execution_id: int, exc: BaseException) -> None:
        failures = self._failures.get(execution_id, 0) + 1
        self._failures[execution_id] = failures
        if failures > RETRY_LIMIT or self._closing:
            log.error(
                "execution %s runner failed %d times; it resumes at the next start-up",
                execution_id,
                failures,
                exc_info=exc,
            )
            self._failures.pop(execution_id, None)
            return
        delay = min(0.5 * 2 ** (failures - 1), 10.0)
        log.warning(
            "execution %s runner failed (%s: %s); retrying in %.1f s",
            execution_id,
            type(exc).__name__,
            exc,
            delay,
        )

        def again() -> None:
            self._retry_timers.pop(execution_id, None)
            self.submit(execution_id)

        self._retry_timers[execution_id] = asyncio.get_running_loop().call_later(delay, again)

    def _on_event(self, event: Event) -> None:
        """Bus listener (must not block): a cancel taken by any process aborts our runner; a
        pause stops it at its next task boundary."""
        if event.type not in _CONTROL_EVENTS or event.execution_id is None:
            return
        job = self._jobs.get(event.execution_id)
        control = self._controls.get(event.execution_id)
        if job is None or control is None or control.begun_at_seq is None:
            return  # not ours, or not begun: the runner reads the store before it starts
        if event.seq is not None and event.seq <= control.begun_at_seq:
            return  # an old request, from before a resume or retry re-opened the execution
        if event.type == EventType.WORKFLOW_PAUSED:
            control.pause_requested = True
            return
        self._again.discard(event.execution_id)
        control.cancel_requested = True
        job.cancel()

    def is_running(self, execution_id: int) -> bool:
        return execution_id in self._jobs

    def running_ids(self) -> list[int]:
        return list(self._jobs)

    @property
    def owner(self) -> str:
        """The id of this process, which holds the leases of what it runs."""
        return self._runner.owner

    def leased(self) -> dict[int, Control]:
        """The runners holding their execution's lease, by execution."""
        return {i: c for i, c in self._controls.items() if c.leased and not c.lease_lost}

    def adopt(self, execution_ids: Iterable[int]) -> list[int]:
        """Run those of `execution_ids` this process does not run yet (their begin takes the
        lease, or finds that another process holds it); returns them."""
        adopted = [i for i in execution_ids if i not in self._jobs and i not in self._waiting]
        for execution_id in adopted:
            self.submit(execution_id)
        return adopted

    def abandon(self, execution_id: int, control: Control) -> None:
        """Another process took the execution over: stop its runner here, writing nothing."""
        if self._controls.get(execution_id) is not control:
            return  # that runner already ended
        log.warning(
            "process %s lost the lease of execution %s to another process: its runner here "
            "stops without writing",
            self.owner,
            execution_id,
        )
        self._again.discard(execution_id)
        control.lease_lost = True
        self._jobs[execution_id].cancel()

    def pause(self, execution_id: int) -> None:
        self._again.discard(execution_id)
        if control := self._controls.get(execution_id):
            control.pause_requested = True

    async def cancel(self, execution_id: int, *, wait: float = 10.0) -> None:
        """Abort the execution's in-flight model calls now and wait for its clean-up."""
        self._again.discard(execution_id)
        self._waiting.pop(execution_id, None)
        if timer := self._retry_timers.pop(execution_id, None):
            timer.cancel()
        job = self._jobs.get(execution_id)
        if job is None:
            self._settle(execution_id)
            return
        self._controls[execution_id].cancel_requested = True
        job.cancel()
        with contextlib.suppress(asyncio.CancelledError, TimeoutError):
            await asyncio.wait_for(asyncio.shield(job), timeout=wait)

    async def recover(self) -> list[int]:
        """On start-up: resume what was running and nobody holds a live lease on (its process
        stopped), start what was accepted; paused stays paused and so does what waits for input
        (only an answer resumes it)."""
        async with self._sessions() as session:
            ids = list(await session.scalars(TO_RECOVER))
        for execution_id in ids:
            self.submit(execution_id)
        if ids:
            log.info("recovered %d execution(s): %s", len(ids), ids)
        return ids

    async def shutdown(self) -> None:
        """Stop every runner without touching its state: the next start resumes them."""
        self._closing = True
        self._unsubscribe()
        self._waiting.clear()
        for timer in self._retry_timers.values():
            timer.cancel()
        self._retry_timers.clear()
        for execution_id, job in list(self._jobs.items()):
            self._controls[execution_id].shutting_down = True
            job.cancel()
        if self._jobs:
            await asyncio.gather(*self._jobs.values(), return_exceptions=True)
        for enders in self._enders.values():
            for ended in enders:
                if not ended.done():
                    ended.set_result(False)
        self._enders.clear()

    async def drain(self, within: float) -> bool:
        """Wait until no execution is running (tests and benchmarks); False after `within`
        seconds if some still are."""
        try:
            async with asyncio.timeout(within):
                await self._idle.wait()
        except TimeoutError:
            return False
        return True
