"""Delegation: how the manager of a hierarchical run hands work to its crew.

The manager's step offers two tools, `delegate_work` and `ask_question`. They are tool calls of
that step like any other (recorded before they run, their results stored, replayed on resume:
a delegation whose answer was stored is never asked again, one in flight is asked again), but
the engine answers them itself: a call runs the named coworker as a nested step through the same
tool loop, with the coworker's own tools and never the delegation tools (a coworker cannot
delegate back), and the coworker's final answer is the call's result.

A coworker's own tool calls are stored as a step's are (`tool_calls.StoredCallLog`), as rows of
the manager's task run marked with their delegation call, and their events carry the coworker's
agent id and `delegation_call_id`. A delegation interrupted by a crash runs again with them as
its replay: the coworker's finished tool calls are not made again, nor the model answers that
asked for them; its model call in flight is. Its streamed text is published, not stored.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from crew_platform.engine.journal import Journal, publish
from crew_platform.engine.lane import StoreLane
from crew_platform.engine.tool_calls import StoredCallLog, cut
from crew_platform.engine.tool_loop import CallRecord, LocalTool, ToolLoop
from crew_platform.errors import PlatformError
from crew_platform.events.bus import EventBus
from crew_platform.events.types import Event, EventType
from crew_platform.llm.fallback import Fallback, FallbackSink
from crew_platform.llm.prompts import AgentProfile, ContextItem, messages, task_prompt
from crew_platform.tools.base import ToolError, ToolSource, ToolSpec

DELEGATE_WORK = "delegate_work"
ASK_QUESTION = "ask_question"
DEFAULT_MAX_DELEGATIONS = 10
MAX_DELEGATIONS_CEILING = 100

_REQUEST_FIELD = {DELEGATE_WORK: "task", ASK_QUESTION: "question"}
_EXPECTED = {
    DELEGATE_WORK: "The finished work your manager asked for, complete enough to use as it is, "
    "taking the context they gave into account.",
    ASK_QUESTION: "A clear answer to your manager's question, taking the context they gave into "
    "account.",
}
_CONTEXT_TITLE = "Context from your manager"

EventMaker = Callable[..., Event]
"""`event(kind, agent_id=..., data=..., seq=None)`: an event of the manager's task run."""


@dataclass(frozen=True)
class Crew:
    """Who works on a hierarchical run: the manager, and the coworkers it may delegate to."""

    manager: AgentProfile | None
    """None when the workflow's manager agent was deleted since (see `problem`)."""
    coworkers: tuple[AgentProfile, ...]
    max_delegations: int
    problem: str | None = None
    """Why the run cannot go on, if it cannot."""

    def coworker(self, role: str) -> AgentProfile | None:
        """The coworker of that role (case and surrounding blanks and quotes ignored)."""
        wanted = role_key(role)
        return next((c for c in self.coworkers if role_key(c.role) == wanted), None)

    @property
    def roles(self) -> list[str]:
        return [c.role for c in self.coworkers]


def role_key(role: str) -> str:
    """What identifies a coworker's role: case and surrounding blanks and quotes ignored."""
    return role.strip().strip("\"'").strip().casefold()


def delegation_specs(crew: Crew) -> list[ToolSpec]:
    """The manager's two tools; their descriptions name the coworkers and what each is for."""
    if crew.coworkers:
        team = "\n".join(f"- {c.role}: {c.goal}" for c in crew.coworkers)
    else:
        team = "(nobody: answer every task yourself)"

    def spec(name: str, does: str, request: str, request_doc: str) -> ToolSpec:
        return ToolSpec(
            name=name,
            description=f"{does} Your coworkers (give one of these roles as `coworker`):\n{team}"
            "\nThey know nothing of your task but what you send: put everything they need "
            "in `context`.",
            parameters={
                "type": "object",
                "properties": {
                    "coworker": {"type": "string", "description": "The coworker's role."},
                    request: {"type": "string", "description": request_doc},
                    "context": {
                        "type": "string",
                        "description": "Everything the coworker needs to know to answer.",
                    },
                },
                "required": ["coworker", request, "context"],
                "additionalProperties": False,
            },
            source=ToolSource.BUILTIN,
        )

    return [
        spec(
            DELEGATE_WORK,
            "Give a piece of work to a coworker; their answer comes back as this tool's result.",
            "task",
            "The work to do, said completely.",
        ),
        spec(
            ASK_QUESTION,
            "Ask a coworker a question; their answer comes back as this tool's result.",
            "question",
            "The question to answer.",
        ),
    ]


@dataclass(frozen=True)
class _Request:
    coworker: AgentProfile
    text: str
    context: str


class Delegations:
    """The delegation tools of one manager step (one attempt of one task)."""

    def __init__(
        self,
        loop: ToolLoop,
        lane: StoreLane,
        bus: EventBus,
        crew: Crew,
        *,
        execution_id: int,
        task_run_id: int,
        task_id: int,
        owner: str,
        chunk_seq: int | None,
        event: EventMaker,
        replay: Sequence[CallRecord] = (),
    ) -> None:
        """`chunk_seq`: the seq the coworkers' `task_output_chunk` events carry (that of the
        task's `task_started`). `replay`: the calls an interrupted attempt recorded, the
        manager's and its coworkers'. `owner`: the process that must hold the execution's
        lease for a coworker's tool call to be recorded."""
        self._loop = loop
        self._lane = lane
        self._bus = bus
        self._crew = crew
        self._execution_id = execution_id
        self._task_run_id = task_run_id
        self._task_id = task_id
        self._owner = owner
        self._chunk_seq = chunk_seq
        self._event = event
        self._admitted: dict[tuple[int, int], bool] = {}
        self._used = 0
        self.prompt_tokens = 0
        self.completion_tokens = 0
        """The coworkers' token counts (the task's tokens include its delegations)."""
        self._nested: dict[tuple[int, int], list[CallRecord]] = {}
        """The coworkers' recorded calls, by the delegation call they belong to."""
        for call in replay:
            if call.delegation is not None:
                self._nested.setdefault(call.delegation, []).append(call)
            elif call.tool in _REQUEST_FIELD:
                self._admit_replayed(call)

    @property
    def specs(self) -> list[ToolSpec]:
        return delegation_specs(self._crew)

    @property
    def handlers(self) -> Mapping[str, LocalTool]:
        return dict.fromkeys(_REQUEST_FIELD, self._answer)

    async def _answer(self, call: CallRecord, arguments: dict[str, Any]) -> str:
        return await self._run(call, self._request(call, arguments))

    def _request(self, call: CallRecord, arguments: Mapping[str, Any]) -> _Request:
        """The call's coworker and request, or a `ToolError` telling the manager what is wrong
        (an unknown role lists the valid ones; over `max_delegations`, it must answer itself)."""
        field = _REQUEST_FIELD[call.tool]
        role = arguments.get("coworker")
        text = arguments.get(field)
        if not isinstance(role, str) or not role.strip():
            raise ToolError(f"`coworker` must be a coworker's role; {self._valid_roles()}")
        if not isinstance(text, str) or not text.strip():
            raise ToolError(f"`{field}` must be a non-empty string")
        coworker = self._crew.coworker(role)
        if coworker is None:
            raise ToolError(f"unknown coworker {role!r}; {self._valid_roles()}")
        if not self._admit(call):
            limit = self._crew.max_delegations
            done = f"you have already delegated {limit} times for this task, the most allowed"
            raise ToolError(
                (done if limit else "delegating is off in this workflow")
                + " (config.max_delegations): do not delegate or ask any more, give your final "
                "answer yourself from what you have"
            )
        context = arguments.get("context")
        if context is not None and not isinstance(context, str):
            context = json.dumps(context, ensure_ascii=False)
        return _Request(coworker, text, context or "")

    def _valid_roles(self) -> str:
        if not self._crew.coworkers:
            return "this crew has no coworkers: answer the task yourself"
        return "the coworkers are: " + ", ".join(repr(r) for r in self._crew.roles)

    def _admit(self, call: CallRecord) -> bool:
        """Whether this call may still delegate. Decided once per call, in the order the model
        asked for them, so a resumed step decides as the interrupted one did."""
        key = (call.iteration, call.position)
        if key not in self._admitted:
            self._admitted[key] = self._used < self._crew.max_delegations
            self._used += self._admitted[key]
        return self._admitted[key]

    def _admit_replayed(self, call: CallRecord) -> None:
        try:
            arguments = json.loads(call.arguments or "{}")
            if isinstance(arguments, dict):
                self._request(call, arguments)
        except (ValueError, ToolError):
            pass  # it was refused then too: it used no delegation

    async def _run(self, call: CallRecord, request: _Request) -> str:
        coworker = request.coworker
        manager = self._crew.manager
        about = {
            "manager": manager.role if manager else None,
            "manager_agent_id": manager.agent_id if manager else None,
            "coworker": coworker.role,
            "tool": call.tool,
            "task": cut(request.text),
            "call_id": call.call_id,
        }
        started = self._event(EventType.DELEGATION_STARTED, agent_id=coworker.agent_id, data=about)
        where = f"Task {self._task_id}: {call.tool} to {coworker.role!r} ({call.call_id})"
        await self._record((started, where))
        prompt = task_prompt(
            description=request.text,
            expected_output=_EXPECTED[call.tool],
            input_data=None,
            context=[ContextItem(_CONTEXT_TITLE, request.context)] if request.context else [],
        )
        try:
            completion = await self._loop.run(
                coworker,
                messages(coworker, prompt),
                specs=await self._loop.tools_of(coworker),
                calls=StoredCallLog(
                    self._lane,
                    self._bus,
                    execution_id=self._execution_id,
                    task_run_id=self._task_run_id,
                    task_id=self._task_id,
                    owner=self._owner,
                    event=self._nested_event(coworker, call.call_id),
                    delegation=call,
                ),
                replay=self._nested.get((call.iteration, call.position), ()),
                on_chunk=self._chunks(coworker, call.call_id),
                on_fallback=self._fallback_sink(coworker, call.call_id),
            )
        except (PlatformError, ToolError) as exc:
            error = f"{exc.code}: {exc.message}" if isinstance(exc, PlatformError) else str(exc)
            failure = f"{coworker.role} could not answer: {error}"
            await self._finished(call, coworker, about | {"error": cut(failure)}, failure)
            raise ToolError(failure) from None
        self.prompt_tokens += completion.prompt_tokens
        self.completion_tokens += completion.completion_tokens
        answered = {"result": cut(completion.text), "model": completion.model}
        await self._finished(call, coworker, about | answered, None)
        return completion.text

    async def _finished(
        self, call: CallRecord, coworker: AgentProfile, data: dict[str, Any], error: str | None
    ) -> None:
        outcome = f"failed: {cut(error, 300)}" if error else "answered"
        completed = self._event(
            EventType.DELEGATION_COMPLETED, agent_id=coworker.agent_id, data=data
        )
        await self._record(
            (completed, f"Task {self._task_id}: {coworker.role!r} {outcome} ({call.call_id})")
        )

    def _fallback_sink(self, coworker: AgentProfile, call_id: str) -> FallbackSink:
        """The coworker's model is not served and its call goes on with the next of its chain:
        a `model_fallback` event of the coworker, as for a task's own agent (the task run's
        `model` stays the manager's; `delegation_completed` names the coworker's)."""

        async def record(change: Fallback) -> None:
            data = change.data() | {"delegation_call_id": call_id, "coworker": coworker.role}
            event = self._event(EventType.MODEL_FALLBACK, agent_id=coworker.agent_id, data=data)
            where = (
                f"Task {self._task_id}: {coworker.role!r}'s model {change.from_model} is not "
                f"served, going on with {change.to_model} ({call_id})"
            )
            await self._record((event, where))

        return record

    def _nested_event(self, coworker: AgentProfile, call_id: str) -> Callable[..., Event]:
        """Events of the coworker's own tool calls: its agent id, the delegation's call id."""

        def event(kind: EventType, data: dict[str, Any]) -> Event:
            data = data | {"delegation_call_id": call_id}
            return self._event(kind, agent_id=coworker.agent_id, data=data)

        return event

    def _chunks(self, coworker: AgentProfile, call_id: str) -> Callable[[str, int], Any]:
        index = 0

        async def publish_chunk(text: str, call_attempt: int) -> None:
            nonlocal index
            index += 1
            data = {
                "chunk": text,
                "index": index,
                "call_attempt": call_attempt,
                "delegation_call_id": call_id,
            }
            await publish(
                self._bus,
                self._event(
                    EventType.TASK_OUTPUT_CHUNK,
                    agent_id=coworker.agent_id,
                    seq=self._chunk_seq,
                    data=data,
                ),
            )

        return publish_chunk

    async def _record(self, *events: tuple[Event, str]) -> None:
        async with self._lane.connect() as conn:
            journal = Journal(conn, self._bus)
            await journal.record_all(events)
            await journal.commit()
