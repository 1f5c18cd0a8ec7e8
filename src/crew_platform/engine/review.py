"""Human review of a task's answer (`human_input` tasks: CrewAI's human in the loop).

The agent's answer to such a task is a draft. Its task run waits (`waiting_for_input`, the draft
in `output`), the execution moves to `waiting_for_input` and `input_required` is published; the
step stops and the runner ends, so nothing is held (no connection, no model slot, no coroutine)
while a person takes hours or days. The person answers through the API (`answer_draft`):

- approve: the run completes with the draft as the task's output;
- feedback: the run is closed as `changes_requested` with the feedback, and the task's next
  attempt sends the model the conversation so far (the task, each earlier draft followed by the
  feedback on it) to revise, then asks again with the new draft.

Either way the execution goes back to `pending` for a runner. Every draft and every feedback is
a task run row, so a restart at any point loses nothing and redoes nothing: a runner that finds
a task's draft still waiting asks for input again without calling the model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from crew_platform.engine.journal import Journal
from crew_platform.engine.lane import StoreLane
from crew_platform.engine.loading import RunState
from crew_platform.engine.rules import Intent, Kind, Writer, move, refusal
from crew_platform.engine.states import ExecutionStatus as ES
from crew_platform.engine.states import TaskRunStatus as TS
from crew_platform.events.bus import EventBus
from crew_platform.events.types import Event, EventType
from crew_platform.models import Execution, TaskRun

if TYPE_CHECKING:
    from crew_platform.engine.executor import Executor

FEEDBACK_PROMPT = (
    "Feedback on your answer: {feedback}\n\n"
    "Revise your answer with this feedback in mind. Give your complete revised final answer "
    "only, without remarks about the feedback."
)
"""The user message that follows a draft in a revision (CrewAI sends the feedback the same way:
after the agent's own answer, in the same conversation)."""


@dataclass(frozen=True)
class Draft:
    """A task run whose answer waits for a person."""

    run_id: int
    attempt: int
    text: str


@dataclass
class Review:
    """Where a task's review stands in one execution."""

    waiting: Draft | None = None
    rounds: list[tuple[str, str]] = field(default_factory=list)
    """Earlier drafts with the feedback each got, oldest first."""

    def conversation(self) -> list[dict[str, Any]]:
        """The messages that follow the task prompt when the agent revises."""
        messages: list[dict[str, Any]] = []
        for draft, feedback in self.rounds:
            messages.append({"role": "assistant", "content": draft})
            messages.append({"role": "user", "content": FEEDBACK_PROMPT.format(feedback=feedback)})
        return messages


async def review_of(reader: Writer, execution_id: int, task_id: int) -> Review:
    """The task's drafts in this execution: the one waiting, and those that got feedback (also
    across a retry: feedback given before a failure is not lost)."""
    rows = await reader.execute(
        select(TaskRun.id, TaskRun.attempt, TaskRun.status, TaskRun.output, TaskRun.feedback)
        .where(
            TaskRun.execution_id == execution_id,
            TaskRun.task_id == task_id,
            TaskRun.status.in_([TS.WAITING_FOR_INPUT, TS.CHANGES_REQUESTED]),
        )
        .order_by(TaskRun.id)
    )
    review = Review()
    for run_id, attempt, status, output, feedback in rows:
        if status == TS.WAITING_FOR_INPUT:
            review.waiting = Draft(run_id, attempt, output or "")
        else:
            review.rounds.append((output or "", feedback or ""))
    return review


def _event(
    state: RunState,
    kind: EventType,
    task_id: int,
    agent_id: int | None,
    status: str,
    data: dict[str, Any],
) -> Event:
    return Event(
        type=kind,
        workflow_id=state.workflow_id,
        execution_id=state.execution_id,
        task_id=task_id,
        agent_id=agent_id,
        status=status,
        data=data,
    )


class Reviews:
    """The step's side of a review: load it, park a new draft, ask again for a waiting one."""

    def __init__(self, lane: StoreLane, bus: EventBus, *, owner: str) -> None:
        """`owner`: the process whose runner this is; its writes need the execution's lease."""
        self._lane = lane
        self._bus = bus
        self._owner = owner

    async def load(self, state: RunState, task_id: int) -> Review:
        async with self._lane.connect() as conn:
            return await review_of(conn, state.execution_id, task_id)

    async def park(
        self,
        state: RunState,
        *,
        run_id: int,
        task_id: int,
        agent_id: int | None,
        attempt: int,
        draft: str,
        data: dict[str, Any] | None,
        model: str | None,
        tokens_used: int,
        elapsed: float,
    ) -> bool:
        """Store the agent's answer as a draft and let the execution wait for input, in one
        commit; False (nothing written) when the run was closed meanwhile (a cancel). `draft` is
        the answer's text (JSON text for a task with an output schema, whose object is `data`).

        An execution that is no longer running (paused while the model answered) keeps its
        status and the draft waits all the same: the runner that resumes it asks again."""
        event = _event(
            state,
            EventType.INPUT_REQUIRED,
            task_id,
            agent_id,
            TS.WAITING_FOR_INPUT,
            {
                "draft": draft if data is None else data,
                "attempt": attempt,
                "tokens_used": tokens_used,
                "execution_time": round(elapsed, 6),
            },
        )
        async with self._lane.connect() as conn:
            journal = Journal(conn, self._bus, owner=self._owner)
            # The execution's row first (numbering the event), then the run's: the order a
            # cancel takes them in, so the two never wait on each other.
            await journal.record(
                event,
                f"Task {task_id} answered in {elapsed:.3f}s; its draft waits for input",
                add_tokens=tokens_used,
            )
            values: dict[str, Any] = {
                "output": draft,
                "output_json": data,
                "model": model,
                "tokens_used": tokens_used,
                "execution_time": elapsed,
            }
            if not await move(conn, Kind.TASK_RUN, run_id, Intent.AWAIT_INPUT, **values):
                await journal.rollback()
                return False
            await move(conn, Kind.EXECUTION, state.execution_id, Intent.AWAIT_INPUT)
            await journal.commit()
        return True

    async def ask_again(self, state: RunState, task_id: int, draft: Draft) -> None:
        """A task's draft still waits (the execution resumed for another reason: a restart, a
        resume, input on another task): the execution waits again, without a model call. At the
        task boundary like any step: nothing happens unless the execution runs."""
        spec = state.tasks.get(task_id)
        agent_id = spec.agent.agent_id if spec and spec.agent else None
        event = _event(
            state,
            EventType.INPUT_REQUIRED,
            task_id,
            agent_id,
            ES.WAITING_FOR_INPUT,
            {"draft": draft.text, "attempt": draft.attempt},
        )
        async with self._lane.connect() as conn:
            journal = Journal(conn, self._bus, owner=self._owner)
            await journal.record_move(
                event, f"Task {task_id} still waits for input on its draft", Intent.AWAIT_INPUT
            )
            await journal.commit()


async def answer_draft(
    session: AsyncSession,
    bus: EventBus,
    dispatcher: Executor,
    execution: Execution,
    draft: TaskRun | None,
    *,
    feedback: str | None,
) -> None:
    """A person's answer to the waiting `draft` (approve when `feedback` is None): the run
    completes or is closed with the feedback, and the execution goes back to `pending` for a
    runner; `execution` is refreshed to that. 409 when the execution is not waiting (naming its
    status). `draft` is None when the waiting run's task was deleted meanwhile: the execution
    resumes and its runner fails it as for any task deleted during a run."""
    intent = Intent.APPROVE if feedback is None else Intent.REQUEST_CHANGES
    if not await move(session, Kind.EXECUTION, execution.id, intent):
        await session.refresh(execution, ["status"])
        raise refusal(Kind.EXECUTION, execution.id, execution.status, intent)
    journal = Journal(session, bus)
    if draft is not None:
        values = {} if feedback is None else {"feedback": feedback}
        status = TS.COMPLETED if feedback is None else TS.CHANGES_REQUESTED
        # The execution waited, so nothing else moved the run: only a step (before the
        # execution waited) and a cancel (which moves the execution first) do.
        await move(session, Kind.TASK_RUN, draft.id, intent, **values)
        await journal.record(
            Event(
                type=EventType.INPUT_RECEIVED,
                workflow_id=execution.workflow_id,
                execution_id=execution.id,
                task_id=draft.task_id,
                agent_id=draft.agent_id,
                status=status,
                data={"approved": feedback is None, "feedback": feedback, "attempt": draft.attempt},
            ),
            f"Task {draft.task_id}: draft of attempt {draft.attempt} "
            + ("approved" if feedback is None else "returned with feedback"),
        )
        if feedback is None:
            await journal.record(
                Event(
                    type=EventType.TASK_COMPLETED,
                    workflow_id=execution.workflow_id,
                    execution_id=execution.id,
                    task_id=draft.task_id,
                    agent_id=draft.agent_id,
                    status=TS.COMPLETED,
                    data={
                        "output": draft.output if draft.output_json is None else draft.output_json,
                        "tokens_used": draft.tokens_used,
                        "execution_time": draft.execution_time,
                        "attempt": draft.attempt,
                        "approved": True,
                    },
                ),
                f"Task {draft.task_id} completed: its draft was approved",
            )
    await journal.record(
        Event(
            type=EventType.WORKFLOW_RESUMED,
            workflow_id=execution.workflow_id,
            execution_id=execution.id,
            status=ES.PENDING,
            data={"reason": "input"},
        ),
        f"Execution {execution.id} resumes after input",
    )
    await journal.commit()
    await session.refresh(execution)  # as answered: before a runner can change it
    dispatcher.submit(execution.id)  # it stays pending if its workflow is paused
