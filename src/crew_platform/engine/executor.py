"""What the API's services hand executions to, whatever runs them.

With EXECUTOR=inprocess it is this process's `Dispatcher`; with EXECUTOR=queue it is the queue's
enqueuer (`crew_platform.taskqueue`), and the workers' dispatchers run the executions. The
services call it only after their transaction committed; the store stays the truth either way.
"""

from __future__ import annotations

from typing import Protocol


class Executor(Protocol):
    def submit(self, execution_id: int) -> None:
        """Run the execution (accepted, resumed, retried or answered): now or soon."""

    def pause(self, execution_id: int) -> None:
        """Its runner should stop at its next task boundary (the store already says paused or
        cancelled; this only makes it stop sooner)."""

    async def cancel(self, execution_id: int, *, wait: float = 10.0) -> None:
        """Abort its runner now (its model call in flight too), once the store says cancelled."""
