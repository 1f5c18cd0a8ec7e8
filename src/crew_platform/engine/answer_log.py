"""A step's answers after the tool loop, kept in its task run (`task_runs.answer_log`).

`answer.py` keeps the answers a later model call follows (the answer a guardrail judges, each
verdict, each revision) and the events between them, in order. They are stored in the task
run's row, the way a `human_input` draft is (`review.py`), each write in one commit with the
event it goes with. When the process dies, the task's next attempt copies what the interrupted
one kept (`carry_answers`) and goes on from it: a finished model call is not made again.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from sqlalchemy import select, update

from crew_platform.engine.answer import Note
from crew_platform.engine.journal import Journal
from crew_platform.engine.lane import StoreLane
from crew_platform.engine.rules import Writer
from crew_platform.engine.tool_calls import interrupted_before
from crew_platform.events.bus import EventBus
from crew_platform.events.types import Event, EventType
from crew_platform.models import TaskRun


class StoredAnswers:
    """The `AnswerLog` of one task run."""

    def __init__(
        self,
        lane: StoreLane,
        bus: EventBus,
        *,
        task_run_id: int,
        owner: str,
        kept: Sequence[Mapping[str, Any]],
        event: Callable[[EventType, dict[str, Any]], Event],
        where: str,
    ) -> None:
        """`kept`: what the interrupted attempt before this run kept (`carry_answers`);
        `event(kind, data)` makes an event of this run; `where` begins its log lines."""
        self._lane = lane
        self._bus = bus
        self._run_id = task_run_id
        self._owner = owner
        self._kept = kept
        self._event = event
        self._where = where

    @property
    def kept(self) -> Sequence[Mapping[str, Any]]:
        return self._kept

    async def keep(self, entries: Sequence[Mapping[str, Any]], note: Note | None) -> None:
        async with self._lane.connect() as conn:
            journal = Journal(conn, self._bus, owner=self._owner)
            await conn.execute(
                update(TaskRun)
                .where(TaskRun.id == self._run_id)
                .values(answer_log=[dict(e) for e in entries])
            )
            if note is not None:
                kind, data, message = note
                await journal.record(self._event(kind, data), f"{self._where}: {message}")
            await journal.commit()


async def carry_answers(
    writer: Writer, *, execution_id: int, task_id: int, attempt: int, task_run_id: int
) -> list[dict[str, Any]]:
    """What the interrupted attempt before `attempt` kept, copied into run `task_run_id` (in
    the caller's transaction, so a second interruption keeps it too). Nothing when the previous
    attempt was not interrupted (a retry after a failure starts afresh)."""
    kept = await writer.scalar(
        select(TaskRun.answer_log).where(*interrupted_before(execution_id, task_id, attempt))
    )
    if not kept:
        return []
    await writer.execute(update(TaskRun).where(TaskRun.id == task_run_id).values(answer_log=kept))
    return list(kept)
