"""The one scheduler: runs a task graph's steps as their dependencies finish.

Linear and parallel workflows differ only in their graph (a chain, or the dependencies) and in how
many steps may run at once; the step itself (open, call, store) is the same for both.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Collection, Coroutine, Mapping
from dataclasses import dataclass, field
from enum import Enum
from graphlib import TopologicalSorter
from typing import Any


@dataclass
class Control:
    """This process's requests for one running execution.

    The store holds the durable ones (an execution no longer `running` there stops at its next
    task boundary, whoever asked); these flags only make this process stop sooner.
    """

    pause_requested: bool = False
    cancel_requested: bool = False
    shutting_down: bool = False
    begun_at_seq: int | None = None
    """The execution's log position when this runner took it over: control events at or
    before it were meant for an earlier runner."""
    leased: bool = False
    """The runner holds the execution's lease (its begin committed)."""
    lease_lost: bool = False
    """Another process took the execution over: stop without writing anything."""
    run_again: bool = False
    """The runner let the execution go while it was pending again (resumed or retried
    meanwhile, perhaps through another process): this process runs it again."""

    @property
    def should_stop(self) -> bool:
        return (
            self.pause_requested or self.cancel_requested or self.shutting_down or self.lease_lost
        )


class Outcome(Enum):
    COMPLETED = "completed"
    FAILED = "failed"
    STOPPED = "stopped"


@dataclass
class StepResult:
    task_id: int
    error: str | None = None
    stopped: bool = False


@dataclass
class Schedule:
    outcome: Outcome
    failure: str | None = None
    not_run: list[int] = field(default_factory=list)
    """Tasks never started (a failure stopped the schedule): the runner records them skipped."""


async def run_graph(
    graph: Mapping[int, tuple[int, ...]],
    *,
    done: Collection[int],
    max_parallel: int,
    step: Callable[[int], Coroutine[Any, Any, StepResult]],
    control: Control,
) -> Schedule:
    """Run `step(task_id)` for every task of `graph` not in `done`, each once its dependencies
    are done, at most `max_parallel` at a time. After a failure or a stop no step starts; the
    ones in flight finish (their answers are stored) before this returns."""
    sorter = TopologicalSorter(graph)
    sorter.prepare()
    ready: list[int] = []
    started: set[int] = set()
    in_flight: dict[asyncio.Task[StepResult], int] = {}
    failure: str | None = None
    stopped = False

    def take_ready() -> None:
        while new := sorter.get_ready():
            for task_id in new:
                if task_id in done:
                    sorter.done(task_id)
                else:
                    ready.append(task_id)

    try:
        while True:
            take_ready()
            while ready and failure is None and not stopped and len(in_flight) < max_parallel:
                if control.should_stop:
                    stopped = True
                    break
                task_id = ready.pop(0)
                started.add(task_id)
                in_flight[asyncio.create_task(step(task_id), name=f"step-{task_id}")] = task_id
            if not in_flight:
                break
            finished, _ = await asyncio.wait(in_flight, return_when=asyncio.FIRST_COMPLETED)
            for job in finished:
                task_id = in_flight.pop(job)
                result = job.result()
                if result.stopped:
                    stopped = True
                elif result.error is not None:
                    failure = failure or result.error
                else:
                    sorter.done(task_id)
    finally:
        for job in in_flight:
            job.cancel()
        if in_flight:
            await asyncio.gather(*in_flight, return_exceptions=True)
    if stopped:
        return Schedule(Outcome.STOPPED)
    if failure is not None:
        never = [t for t in graph if t not in done and t not in started]
        return Schedule(Outcome.FAILED, failure, never)
    if sorter.is_active():
        return Schedule(Outcome.STOPPED)
    return Schedule(Outcome.COMPLETED)
