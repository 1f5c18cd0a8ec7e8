"""The tool loop of one step: ask the model, run the tool calls it answers with, ask again.

A step without tools is one model call. With tools, each answer that asks for calls has them
run at once (concurrently), their results (or error texts: the model is told what went wrong
and may recover) appended as `tool` messages, and the model is asked again, until it answers
without calls. `max_iter` bounds the model calls; when it is spent the model is asked once
more, without tools, for its final answer.

Persistence is not the loop's business: a `CallLog` is told of each call before it runs and
when it returns (the engine stores them; the agent test endpoint keeps nothing). A resumed step
passes the calls an interrupted attempt recorded as `replay`: those with a result are not run
again, their results go back into the conversation as they were. The model answers that asked
for them are not asked again either: the recorded calls stand for them; the model call that was
in flight (after the last calls returned) is made again, unless its answer was stored too
(`answered`).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from itertools import groupby
from typing import Any, Protocol

from crew_platform.llm.fallback import FallbackSink
from crew_platform.llm.gateway import ChunkSink, Completion, LLMGateway
from crew_platform.llm.prompts import AgentProfile
from crew_platform.tools.base import Toolbox, ToolError, ToolSpec
from crew_platform.tools.naming import to_model_name
from crew_platform.tools.schemas import fits_strict_mode

log = logging.getLogger(__name__)

DEFAULT_MAX_ITER = 15
FINAL_ANSWER_NUDGE = (
    "You have used every tool call this task allows. Do not call tools any more: give your "
    "best complete final answer now from what you have."
)


@dataclass
class CallRecord:
    """One tool call of one model answer, as stored and replayed."""

    iteration: int
    """Which model call of the step asked for it (1-based)."""
    position: int
    call_id: str
    tool: str
    """The platform's name of the tool (the model's own name when it matches no tool)."""
    arguments: str
    assistant_content: str | None = None
    """Text the model answered beside its calls (on position 0 only)."""
    result: str | None = None
    """What the model is given back: the result or the error text; None until it returned."""
    failed: bool = False
    delegation: tuple[int, int] | None = None
    """For a coworker's call inside a delegation (as stored): the `iteration` and `position`
    of that delegation call in the manager's step. None for a step's own calls."""


LocalTool = Callable[[CallRecord, dict[str, Any]], Awaitable[str]]
"""A tool the engine itself answers (the manager's delegation tools): given the call and its
parsed arguments, it returns the result or raises `ToolError`. It is not bound by the tool
time-out: it may run a whole nested step."""


class CallLog(Protocol):
    async def started(self, calls: Sequence[CallRecord]) -> None:
        """The calls of one answer, before any of them runs."""
        ...

    async def finished(self, call: CallRecord) -> None:
        """One call returned (its `result` and `failed` are set)."""
        ...


class NoCallLog:
    """Keeps nothing (the agent test endpoint)."""

    async def started(self, calls: Sequence[CallRecord]) -> None:
        return None

    async def finished(self, call: CallRecord) -> None:
        return None


def max_iter_of(config: Mapping[str, Any] | None) -> int:
    value = (config or {}).get("max_iter", DEFAULT_MAX_ITER)
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        return DEFAULT_MAX_ITER
    return value


def function_spec(spec: ToolSpec) -> dict[str, Any]:
    """A tool as providers take it: the model-side name, `strict` as Cerebras wants where the
    schema allows it (a strict tool with any other schema makes the provider answer 400)."""
    function: dict[str, Any] = {
        "name": to_model_name(spec.name),
        "description": spec.description,
        "parameters": dict(spec.parameters),
    }
    if fits_strict_mode(spec.parameters):
        function["strict"] = True
    return {"type": "function", "function": function}


@dataclass(frozen=True)
class _RunTools:
    """The tools one run of the loop may call: their names, and which of them the engine
    answers itself."""

    allowed: set[str]
    local: Mapping[str, LocalTool]


class ToolLoop:
    def __init__(
        self,
        gateway: LLMGateway,
        toolbox: Toolbox | None,
        *,
        timeout: float,
    ) -> None:
        self._gateway = gateway
        self._toolbox = toolbox
        self._timeout = timeout

    async def tools_of(self, agent: AgentProfile) -> list[ToolSpec]:
        """The tools the agent names that exist (unknown names are refused before a run
        starts; one deleted since is left out)."""
        if not agent.tools or self._toolbox is None:
            return []
        specs, _ = await self._toolbox.resolve(list(agent.tools))
        return specs

    async def run(
        self,
        agent: AgentProfile,
        conversation: Sequence[Mapping[str, Any]],
        *,
        specs: Sequence[ToolSpec] = (),
        calls: CallLog | None = None,
        replay: Sequence[CallRecord] = (),
        on_chunk: ChunkSink | None = None,
        on_fallback: FallbackSink | None = None,
        response_format: Mapping[str, Any] | None = None,
        transcript: list[Mapping[str, Any]] | None = None,
        local: Mapping[str, LocalTool] | None = None,
        answered: Completion | None = None,
    ) -> Completion:
        """The step's final answer, with the tokens of every model call it took and the model
        that gave it (a fallback of the agent's when that is not served: `on_fallback` hears
        of each move along the chain).

        `response_format` goes with the calls made without tools only: tools come first, the
        formatted answer last. `transcript`, when given, receives the messages of the last
        call (the conversation with every tool call and result), so a caller can go on from it.
        `local`: the tools of `specs` the engine answers itself, by name. `answered`: the final
        answer an interrupted attempt stored after `replay`; it is returned (with `transcript`
        filled as the model had it) without a model call.
        """
        calls = calls or NoCallLog()
        by_model_name = {to_model_name(s.name): s.name for s in specs}
        offered = [function_spec(s) for s in specs]
        messages: list[Mapping[str, Any]] = list(conversation)
        total = Completion(text="", attempts=0)
        tools = _RunTools(set(by_model_name.values()), local or {})
        for _, replayed in groupby(replay, key=lambda c: c.iteration):
            await self._answer(list(replayed), messages, calls, tools, replayed=True)
        iteration = replay[-1].iteration if replay else 0
        if answered is not None:
            if offered and iteration >= agent.max_iter:
                messages.append({"role": "system", "content": FINAL_ANSWER_NUDGE})
            if transcript is not None:
                transcript.extend(messages)
            return answered
        models = self._gateway.fallbacks.chain(agent.model, agent.fallback_models)

        async def ask(tools: Sequence[Mapping[str, Any]]) -> Completion:
            completion = await models.complete(
                self._gateway,
                on_fallback=on_fallback,
                messages=messages,
                temperature=agent.temperature,
                top_p=agent.top_p,
                max_tokens=agent.max_tokens,
                on_chunk=on_chunk,
                tools=tools,
                response_format=None if tools else response_format,
            )
            total.prompt_tokens += completion.prompt_tokens
            total.completion_tokens += completion.completion_tokens
            total.attempts += completion.attempts
            total.model = completion.model
            return completion

        while iteration < agent.max_iter:
            iteration += 1
            completion = await ask(offered)
            if not offered or not completion.tool_calls:
                total.text = completion.text
                if transcript is not None:
                    transcript.extend(messages)
                return total
            turn = [
                CallRecord(
                    iteration=iteration,
                    position=position,
                    call_id=call.id,
                    tool=by_model_name.get(call.name, call.name),
                    arguments=call.arguments_text,
                    assistant_content=(completion.text or None) if position == 0 else None,
                )
                for position, call in enumerate(completion.tool_calls)
            ]
            await self._answer(turn, messages, calls, tools, replayed=False)
        messages.append({"role": "system", "content": FINAL_ANSWER_NUDGE})
        total.text = (await ask(())).text
        if transcript is not None:
            transcript.extend(messages)
        return total

    async def _answer(
        self,
        turn: list[CallRecord],
        messages: list[Mapping[str, Any]],
        calls: CallLog,
        tools: _RunTools,
        *,
        replayed: bool,
    ) -> None:
        """Append the assistant message of `turn` and, once its calls have results, their
        `tool` messages; calls without a result (new, or recorded as running when the step
        was interrupted) are recorded and run concurrently."""
        messages.append(
            {
                "role": "assistant",
                "content": turn[0].assistant_content,
                "tool_calls": [
                    {
                        "id": c.call_id,
                        "type": "function",
                        "function": {"name": to_model_name(c.tool), "arguments": c.arguments},
                    }
                    for c in turn
                ],
            }
        )
        todo = [c for c in turn if c.result is None]
        if todo:
            if replayed:
                log.info("re-running %d tool call(s) an interrupted attempt left open", len(todo))
            await calls.started(todo)
            async with asyncio.TaskGroup() as group:
                for call in todo:
                    group.create_task(self._run(call, calls, tools))
        messages.extend(
            {"role": "tool", "tool_call_id": c.call_id, "content": c.result or ""} for c in turn
        )

    async def _run(self, call: CallRecord, calls: CallLog, tools: _RunTools) -> None:
        try:
            call.result = await self._call(call, tools)
        except ToolError as exc:
            call.result, call.failed = f"Error: {exc}", True
        await calls.finished(call)

    async def _call(self, call: CallRecord, tools: _RunTools) -> str:
        local = tools.local.get(call.tool) if call.tool in tools.allowed else None
        if local is None and (self._toolbox is None or call.tool not in tools.allowed):
            raise ToolError(
                f"unknown tool {call.tool!r}; the tools you may call: "
                + (", ".join(sorted(to_model_name(n) for n in tools.allowed)) or "none")
            )
        try:
            arguments = json.loads(call.arguments or "{}")
        except ValueError:
            raise ToolError(
                f"the arguments of {call.tool!r} are not valid JSON: {call.arguments[:200]!r}"
            ) from None
        if not isinstance(arguments, dict):
            raise ToolError(f"the arguments of {call.tool!r} must be a JSON object")
        if local is not None:
            return await local(call, arguments)
        assert self._toolbox is not None
        try:
            async with asyncio.timeout(self._timeout):
                return await self._toolbox.call(call.tool, arguments, timeout=self._timeout)
        except TimeoutError:
            raise ToolError(
                f"{call.tool!r} timed out after {self._timeout:g}s (TOOL_TIMEOUT_SECONDS)"
            ) from None
        except ToolError:
            raise
        except Exception as exc:
            log.exception("tool %s crashed", call.tool)
            raise ToolError(f"{call.tool!r} failed: {type(exc).__name__}") from None
