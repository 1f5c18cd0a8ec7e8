"""The guardrail judge: one model call that checks an answer against a task's instruction.

The judge is the agent's own model, held to a fixed verdict schema through `response_format`,
with a fixed prompt of its own (not the agent's persona): it only judges, it never rewrites.
The call (`judge`) and the reading of its answer (`verdict_of`) are apart, so a step that stored
a verdict reads it again without asking the judge again (`answer.py`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from crew_platform.engine.tool_loop import ToolLoop
from crew_platform.llm.fallback import FallbackSink
from crew_platform.llm.gateway import Completion
from crew_platform.llm.prompts import AgentProfile
from crew_platform.llm.structured import parse_answer, response_format

VERDICT_NAME = "guardrail_verdict"
VERDICT_SCHEMA = {
    "type": "object",
    "properties": {"pass": {"type": "boolean"}, "reason": {"type": "string"}},
    "required": ["pass", "reason"],
    "additionalProperties": False,
}
JUDGE_SYSTEM = (
    "You are a strict reviewer. You check whether an answer meets an instruction, and nothing "
    'else. Reply with one JSON object: {"pass": true or false, "reason": "..."}. "pass" is '
    'true only when the answer fully meets the instruction. When it does not, "reason" says '
    "what is wrong and what to change, in one or two sentences addressed to the author."
)
JUDGE_REQUEST = "Check this answer against the instruction."
"""How the judge's request begins (a scripted stub reply can be aimed at it with `prefix`)."""


@dataclass(frozen=True)
class Verdict:
    passed: bool
    reason: str
    readable: bool = True


async def judge(
    loop: ToolLoop,
    agent: AgentProfile,
    *,
    instruction: str,
    task: str,
    answer: str,
    on_fallback: FallbackSink | None = None,
) -> Completion:
    """The judge's answer about `answer` (read it with `verdict_of`)."""
    request = (
        f"{JUDGE_REQUEST}\n\nInstruction: {instruction}\n\nThe task was: {task}\n\n"
        f"The answer:\n{answer}"
    )
    return await loop.run(
        agent,
        [{"role": "system", "content": JUDGE_SYSTEM}, {"role": "user", "content": request}],
        response_format=response_format(VERDICT_NAME, VERDICT_SCHEMA),
        on_fallback=on_fallback,
    )


def verdict_of(text: str) -> Verdict:
    """The verdict a judge's answer gives (an unreadable answer fails, without retries)."""
    parsed = parse_answer(text, VERDICT_SCHEMA)
    if parsed.value is None:
        preview = json.dumps(text[:200], ensure_ascii=False)
        reason = f"the judge gave no readable verdict ({parsed.problem}): {preview}"
        return Verdict(False, reason, readable=False)
    return Verdict(bool(parsed.value["pass"]), str(parsed.value["reason"]))
