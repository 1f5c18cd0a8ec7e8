"""CrewAI-style prompts: agent persona as system prompt, task (+ context) as user prompt."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

# `{topic}` is a placeholder; `{{topic}}` and JSON such as `{"a": 1}` are left alone.
_PLACEHOLDER = re.compile(r"(?<!\{)\{([A-Za-z_][A-Za-z0-9_]*)\}(?!\})")


@dataclass(frozen=True)
class AgentProfile:
    agent_id: int | None
    name: str
    role: str
    goal: str
    backstory: str | None
    model: str
    temperature: float
    top_p: float
    max_tokens: int
    tools: tuple[str, ...] = ()
    """The names of the tools the agent may call."""
    max_iter: int = 15
    """Most model calls of one step (the tool loop's bound)."""
    fallback_models: tuple[str, ...] = ()
    """Models to go on with, in order, when `model` is not served (`config.fallback_models`)."""


@dataclass(frozen=True)
class ContextItem:
    title: str
    output: str


def placeholders(*texts: str | None) -> set[str]:
    return {m.group(1) for text in texts if text for m in _PLACEHOLDER.finditer(text)}


def fill(text: str | None, values: Mapping[str, Any]) -> str:
    if not text:
        return ""

    def _value(match: re.Match[str]) -> str:
        key = match.group(1)
        if key not in values:
            return match.group(0)
        value = values[key]
        return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)

    return _PLACEHOLDER.sub(_value, text).replace("{{", "{").replace("}}", "}")


def system_prompt(agent: AgentProfile) -> str:
    parts = [f"You are {agent.role}.", f"Your personal goal is: {agent.goal}"]
    if agent.backstory:
        parts.append(agent.backstory)
    return "\n".join(parts)


def task_prompt(
    *,
    description: str,
    expected_output: str | None,
    input_data: Mapping[str, Any] | None,
    context: Sequence[ContextItem],
    output_schema: Mapping[str, Any] | None = None,
) -> str:
    parts = [f"Current Task: {description}"]
    if expected_output:
        parts.append(f"This is the expected criteria for your final answer: {expected_output}")
    if output_schema is not None:
        parts.append(
            "Your final answer must be one JSON object, and nothing else, that matches this "
            "JSON Schema:\n" + json.dumps(dict(output_schema), ensure_ascii=False)
        )
    if input_data:
        parts.append("Input data:\n" + json.dumps(dict(input_data), ensure_ascii=False, indent=2))
    if context:
        body = "\n\n".join(f"## {item.title}\n{item.output}" for item in context)
        parts.append("This is the context you're working with:\n" + body)
    parts.append("Begin! Give your best complete final answer.")
    return "\n\n".join(parts)


def messages(agent: AgentProfile, user_prompt: str) -> list[dict[str, str]]:
    return [
        {"role": "system", "content": system_prompt(agent)},
        {"role": "user", "content": user_prompt},
    ]
