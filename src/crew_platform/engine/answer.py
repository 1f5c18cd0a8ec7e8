"""A step's answer: the tool loop's, then held to the task's output schema and guardrail.

Without either option this is the tool loop and nothing more. With an `output_schema`, the answer
must parse into the object the schema describes: a model call without tools carries the schema as
`response_format`; an agent with tools works with them first and is then asked for its answer in
that form, unless its final answer already fits. An answer that does not fit is sent back once
with the reason, then the task fails (`OUTPUT_VALIDATION_FAILED`). With a `guardrail`, a judge
checks each fitting answer; a failed check sends its reason back for a revision, at most
`guardrail_max_retries` times, then the task fails (`GUARDRAIL_FAILED`).

Revisions are model calls without tools that go on from the whole conversation (tool results
included): a tool call is recorded once per run, never made again by a revision.

Nothing finished is asked again after a crash: before each model call that follows an answer
(a judge's, a revision's), the answers so far (the tool loop's, the judge's verdicts, the
revisions) are kept through an `AnswerLog`, each event of this phase in the same commit as the
answers before it. A resumed step is given what its interrupted attempt kept and goes through
the same decisions with those answers instead of model calls, then on from there: a restart
while the judge answers asks the judge again, not the agent.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, Protocol

from crew_platform.engine.guardrail import judge, verdict_of
from crew_platform.engine.tool_loop import CallLog, CallRecord, LocalTool, ToolLoop
from crew_platform.events.types import EventType
from crew_platform.llm.fallback import FallbackSink
from crew_platform.llm.gateway import ChunkSink, Completion
from crew_platform.llm.prompts import AgentProfile
from crew_platform.llm.structured import parse_answer, response_format
from crew_platform.tools.base import ToolSpec

OUTPUT_INVALID = "OUTPUT_VALIDATION_FAILED"
GUARDRAIL_FAILED = "GUARDRAIL_FAILED"
FORMAT_REQUEST = (
    "Now give your final answer as one JSON object that matches the required JSON Schema, "
    "and nothing else."
)

Note = tuple[EventType, dict[str, Any], str]
"""One event of the step: its type, its data and its log line."""
ANSWER, VERDICT, EVENT = "answer", "verdict", "event"
"""The kinds of kept entries: an answer of the agent, a judge's answer, an event recorded."""


class AnswerLog(Protocol):
    """Where a step keeps its answers after the tool loop (the engine: in its task run)."""

    @property
    def kept(self) -> Sequence[Mapping[str, Any]]:
        """The entries an interrupted attempt of the task kept, in order."""
        ...

    async def keep(self, entries: Sequence[Mapping[str, Any]], note: Note | None) -> None:
        """Store `entries` (every entry so far) and record `note`'s event, in one commit."""
        ...


@dataclass(frozen=True)
class AnswerRules:
    """What a task asks of its answer besides its text."""

    name: str
    description: str
    output_schema: Mapping[str, Any] | None = None
    guardrail: str | None = None
    guardrail_max_retries: int = 2


@dataclass
class Answer:
    text: str
    data: dict[str, Any] | None = None
    """The parsed object, for a task with an output schema."""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    error: str | None = None
    """Why the task fails (its code first); the tokens were spent all the same."""
    model: str | None = None
    """The model that gave the last answer (a fallback when the agent's is not served)."""

    @property
    def tokens_used(self) -> int:
        return self.prompt_tokens + self.completion_tokens


class _Answering:
    """One step's conversation with its agent after the tool loop."""

    def __init__(
        self,
        loop: ToolLoop,
        agent: AgentProfile,
        rules: AnswerRules,
        on_chunk: ChunkSink | None,
        log: AnswerLog,
        on_fallback: FallbackSink | None,
    ) -> None:
        self.loop = loop
        self.on_fallback = on_fallback
        self.agent = agent
        self.rules = rules
        self.on_chunk = on_chunk
        self.log = log
        self.messages: list[Mapping[str, Any]] = []
        self.total = Answer(text="")
        schema = rules.output_schema
        self.format = None if schema is None else response_format(rules.name, schema)
        self.entries: list[Mapping[str, Any]] = []
        """What this step answered and recorded so far (kept or about to be)."""
        self.unkept = 0
        """How many of the last `entries` are not kept yet."""
        self.replay = deque(log.kept)

    def count(self, completion: Completion) -> str:
        self.total.prompt_tokens += completion.prompt_tokens
        self.total.completion_tokens += completion.completion_tokens
        self.total.model = completion.model or self.total.model
        return completion.text

    def replayed(self, entry: Mapping[str, Any]) -> bool:
        """Whether the interrupted attempt kept `entry` (its kind, and an event's type) next:
        then it is taken as it was. Anything else ends the replay (it cannot differ but for
        a task changed since; the step then goes on with model calls)."""
        if self.replay:
            head = self.replay[0]
            if all(head.get(k) == v for k, v in entry.items()):
                self.replay.popleft()
                self.entries.append(head)
                return True
            self.replay.clear()
        return False

    def first(self) -> Completion | None:
        """The tool loop's answer, if the interrupted attempt kept it."""
        if not self.replayed({"kind": ANSWER}):
            return None
        return self.completion(self.entries[-1])

    @staticmethod
    def completion(entry: Mapping[str, Any]) -> Completion:
        return Completion(
            text=str(entry.get("text", "")),
            prompt_tokens=int(entry.get("prompt_tokens", 0)),
            completion_tokens=int(entry.get("completion_tokens", 0)),
            model=entry.get("model"),
        )

    def said(self, kind: str, completion: Completion) -> str:
        """A new answer: counted, and kept before the next model call or event."""
        self.entries.append(
            {
                "kind": kind,
                "text": completion.text,
                "prompt_tokens": completion.prompt_tokens,
                "completion_tokens": completion.completion_tokens,
                "model": completion.model,
            }
        )
        self.unkept += 1
        return self.count(completion)

    async def ask(self, kind: str, call: Callable[[], Awaitable[Completion]]) -> str:
        """The text of the next answer of `kind`: the kept one, or a model call's (the
        answers before it are kept first, so a crash during the call redoes only the call)."""
        if self.replayed({"kind": kind}):
            return self.count(self.completion(self.entries[-1]))
        if self.unkept:
            await self.log.keep(self.entries, None)
            self.unkept = 0
        return self.said(kind, await call())

    async def notify(self, kind: EventType, data: dict[str, Any], message: str) -> None:
        """Record an event of this phase (with the answers before it), once: an event the
        interrupted attempt recorded is not recorded again."""
        entry = {"kind": EVENT, "event": kind.value}
        if self.replayed(entry):
            return
        self.entries.append(entry)
        await self.log.keep(self.entries, (kind, data, message))
        self.unkept = 0

    async def revise(self, previous: str, request: str) -> str:
        """Ask again, after the model's `previous` answer, without tools."""
        self.messages += [
            {"role": "assistant", "content": previous},
            {"role": "user", "content": request},
        ]
        return await self.ask(
            ANSWER,
            lambda: self.loop.run(
                self.agent,
                self.messages,
                on_chunk=self.on_chunk,
                on_fallback=self.on_fallback,
                response_format=self.format,
            ),
        )

    async def shaped(self, text: str, number: int, *, formatted: bool) -> Answer:
        """Answer `number` as the schema wants it: its text and object, or the error. An answer
        made without `response_format` (a tool loop's) is first asked for in that form."""
        schema = self.rules.output_schema
        if schema is None:
            return Answer(text)
        parsed = parse_answer(text, schema)
        if parsed.value is None and not formatted:
            text = await self.revise(text, FORMAT_REQUEST)
            parsed = parse_answer(text, schema)
        if parsed.value is None:
            await self.notify(
                EventType.OUTPUT_VALIDATION_FAILED,
                {"attempt": number, "error": parsed.problem},
                f"answer {number} does not match the output schema, asking again: {parsed.problem}",
            )
            text = await self.revise(
                text,
                f"Your answer does not match the required JSON Schema: {parsed.problem}. "
                "Answer again with only one JSON object that matches the schema.",
            )
            parsed = parse_answer(text, schema)
        if parsed.value is None:
            return Answer(text, error=f"{OUTPUT_INVALID}: {parsed.problem}")
        return Answer(text, parsed.value)

    async def checked(self, answer: Answer, number: int) -> Answer:
        """`answer` once the guardrail passes it (revised as the judge asks), or the error."""
        instruction = self.rules.guardrail
        while instruction is not None and answer.error is None:
            judging = partial(
                judge,
                self.loop,
                self.agent,
                instruction=instruction,
                task=self.rules.description,
                answer=answer.text,
                on_fallback=self.on_fallback,
            )
            verdict = verdict_of(await self.ask(VERDICT, judging))
            if verdict.passed:
                await self.notify(
                    EventType.GUARDRAIL_PASSED,
                    {"attempt": number},
                    f"answer {number} passed the guardrail",
                )
                return answer
            retries_left = self.rules.guardrail_max_retries - number + 1
            if not verdict.readable:
                retries_left = 0
            await self.notify(
                EventType.GUARDRAIL_FAILED,
                {"attempt": number, "reason": verdict.reason, "retries_left": retries_left},
                f"answer {number} failed the guardrail ({retries_left} retries left): "
                f"{verdict.reason}",
            )
            if retries_left <= 0:
                return Answer(answer.text, error=f"{GUARDRAIL_FAILED}: {verdict.reason}")
            number += 1
            text = await self.revise(
                answer.text,
                f"Your answer did not pass this check: {instruction}\n"
                f"Reviewer's feedback: {verdict.reason}\n"
                "Give your revised, complete final answer.",
            )
            answer = await self.shaped(text, number, formatted=True)
        return answer


async def answer_task(
    loop: ToolLoop,
    agent: AgentProfile,
    conversation: Sequence[Mapping[str, Any]],
    rules: AnswerRules,
    *,
    specs: Sequence[ToolSpec],
    calls: CallLog,
    replay: Sequence[CallRecord],
    on_chunk: ChunkSink | None,
    log: AnswerLog,
    on_fallback: FallbackSink | None = None,
    local: Mapping[str, LocalTool] | None = None,
) -> Answer:
    """The step's answer, with the tokens of every model call it took (the judge's too, and
    those of the answers `log` kept from an interrupted attempt)."""
    answering = _Answering(loop, agent, rules, on_chunk, log, on_fallback)
    kept = answering.first()
    first = await loop.run(
        agent,
        conversation,
        specs=specs,
        calls=calls,
        replay=replay,
        on_chunk=on_chunk,
        on_fallback=on_fallback,
        response_format=answering.format,
        transcript=answering.messages,
        local=local,
        answered=kept,
    )
    text = answering.count(first) if kept is not None else answering.said(ANSWER, first)
    answer = await answering.shaped(text, 1, formatted=not specs)
    answer = await answering.checked(answer, 1)
    answer.prompt_tokens = answering.total.prompt_tokens
    answer.completion_tokens = answering.total.completion_tokens
    answer.model = answering.total.model
    return answer
