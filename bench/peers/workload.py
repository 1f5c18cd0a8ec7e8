"""The one workload every contender runs: a linear chain of N tasks, one agent per task.

Standard library only: the peer drivers import this file from their own virtualenvs. The
prompt layout mirrors the platform's (persona as system prompt, task plus every earlier output
as user prompt), so the floor and LangGraph send the same bytes per call that our engine does.
"""

from __future__ import annotations

import ast
import json
import operator
import sys
import time
from dataclasses import dataclass
from typing import Any

MODEL = "llama3.1-8b"
FINAL = ("completed", "failed", "cancelled")


@dataclass(frozen=True)
class AgentSpec:
    name: str
    role: str
    goal: str
    backstory: str


@dataclass(frozen=True)
class TaskSpec:
    name: str
    description: str
    expected_output: str


def agent(i: int) -> AgentSpec:
    return AgentSpec(
        name=f"bench-agent-{i}",
        role=f"Research analyst number {i}",
        goal=f"Produce step {i} of a short report on the history of the printing press",
        backstory=(
            f"Analyst {i} has written many concise technical reports and keeps every answer "
            "short, factual and free of filler."
        ),
    )


def task(i: int) -> TaskSpec:
    return TaskSpec(
        name=f"bench-task-{i}",
        description=(
            f"Step {i}: write one paragraph that continues the report on the printing press, "
            "building on the context from earlier steps."
        ),
        expected_output="One short paragraph of plain text.",
    )


def system_prompt(a: AgentSpec) -> str:
    return "\n".join([f"You are {a.role}.", f"Your personal goal is: {a.goal}", a.backstory])


def user_prompt(t: TaskSpec, context: list[tuple[str, str]]) -> str:
    parts = [
        f"Current Task: {t.description}",
        f"This is the expected criteria for your final answer: {t.expected_output}",
    ]
    if context:
        body = "\n\n".join(f"## {title}\n{output}" for title, output in context)
        parts.append("This is the context you're working with:\n" + body)
    parts.append("Begin! Give your best complete final answer.")
    return "\n\n".join(parts)


def messages(i: int, context: list[tuple[str, str]]) -> list[dict[str, str]]:
    return [
        {"role": "system", "content": system_prompt(agent(i))},
        {"role": "user", "content": user_prompt(task(i), context)},
    ]


TOOL_NAME = "calculator"
TOOL_DESCRIPTION = "Evaluates an arithmetic expression (+ - * / ** % and parentheses)."
TOOL_CALLS_PER_TASK = 2
MODEL_CALLS_PER_TASK = 2  # the answer asking for both calls, then the final answer


def tool_expressions(i: int) -> tuple[str, str]:
    """The two expressions task i's model asks the calculator for (distinct per task)."""
    return f"(17+{i})*3", f"2**{i + 3}"


def expected_results(i: int) -> tuple[str, str]:
    return str((17 + i) * 3), str(2 ** (i + 3))


HIERARCHY_TASKS = 3
HIERARCHY_MODEL_CALLS_PER_TASK = 3  # the manager delegating, the coworker, the manager's answer


def manager_cue(i: int) -> str:
    """What only the manager's prompt for hierarchy task i contains (the stub matches it)."""
    return f"Step {i}: write one paragraph"


def delegated_task(i: int) -> str:
    """The work the manager hands to agent i for task i."""
    return f"Part {i}: draft the paragraph of step {i} of the report on the printing press."


def delegated_context(i: int) -> str:
    return f"It is step {i} of {HIERARCHY_TASKS}; keep it to one short paragraph."


def coworker_answer(i: int) -> str:
    return f"Paragraph {i} of the report, drafted by analyst {i}."


_OPERATORS: dict[type, Any] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
    ast.USub: operator.neg,
    ast.UAdd: operator.pos,
}


def calculate(expression: str) -> str:
    """The peers' calculator tool: the platform's arithmetic (a whitelisted syntax-tree walk,
    never `eval`), without its size bounds."""

    def value(node: ast.AST) -> Any:
        if isinstance(node, ast.Expression):
            return value(node.body)
        if isinstance(node, ast.Constant) and type(node.value) in (int, float):
            return node.value
        if isinstance(node, ast.BinOp) and type(node.op) in _OPERATORS:
            return _OPERATORS[type(node.op)](value(node.left), value(node.right))
        if isinstance(node, ast.UnaryOp) and type(node.op) in _OPERATORS:
            return _OPERATORS[type(node.op)](value(node.operand))
        raise ValueError(f"{type(node).__name__} is not allowed")

    result = value(ast.parse(expression.strip(), mode="eval"))
    return f"{result:.15g}" if isinstance(result, float) else str(result)


def peak_rss_kb() -> int:
    """This process's peak resident set (VmHWM), in KiB; 0 where /proc is missing."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def reset_peak_rss() -> None:
    """Start a new peak (Linux: writing 5 to clear_refs resets VmHWM)."""
    try:
        with open("/proc/self/clear_refs", "w") as refs:
            refs.write("5")
    except OSError:
        pass


def config_from_argv() -> dict[str, Any]:
    return dict(json.loads(sys.argv[1]))


def emit(result: dict[str, Any]) -> None:
    print(json.dumps(result), flush=True)


async def run_concurrent(
    make_one: Any, k: int, limit_s: float
) -> tuple[float, list[float], int, str | None]:
    """Start k runs at once; returns wall, per-run completion latencies, errors, first error."""
    import asyncio

    errors = 0
    first: str | None = None
    latencies: list[float] = []
    runs = [make_one(i) for i in range(k)]
    began = time.perf_counter()

    async def one(run: Any) -> None:
        nonlocal errors, first
        try:
            await run()
            latencies.append(time.perf_counter() - began)
        except Exception as exc:
            errors += 1
            first = first or f"{type(exc).__name__}: {str(exc)[:200]}"

    await asyncio.wait_for(asyncio.gather(*(one(r) for r in runs)), timeout=limit_s)
    return time.perf_counter() - began, latencies, errors, first


def concurrency_main(make_factory: Any, config: dict[str, Any]) -> list[dict[str, Any]]:
    """Runs each K of config["ks"] (config["reps"][str(k)] times) until the time budget is spent.

    Everything runs in one event loop (clients that cache an HTTP pool, such as
    langchain-openai's, break across loops). A K whose projection from the previous size exceeds
    the budget is not attempted: the peers get every size they can manage in the time a
    benchmark run can afford.
    """
    import asyncio

    return list(asyncio.run(_concurrency(make_factory, config)))


async def _concurrency(make_factory: Any, config: dict[str, Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    budget = float(config.get("budget_s", 60))
    previous_wall = 0.0
    previous_k = 0
    for k in config["ks"]:
        projected = previous_wall * k / previous_k if previous_k else 0.0
        if projected > budget:
            out.append({"k": k, "skipped": f"projected {projected:.0f} s > budget {budget:.0f} s"})
            continue
        reps = int(config.get("reps", {}).get(str(k), 1))
        walls: list[float] = []
        lat: list[float] = []
        errors = 0
        first: str | None = None
        reset_peak_rss()
        timed_out = False
        for _ in range(reps):
            factory = make_factory(k)
            try:
                wall, latencies, errs, err = await run_concurrent(factory, k, limit_s=budget * 2)
            except TimeoutError:
                out.append({"k": k, "skipped": f"timed out after {budget * 2:.0f} s"})
                timed_out = True
                break
            walls.append(wall)
            lat.extend(latencies)
            errors += errs
            first = first or err
        if timed_out:
            break
        out.append(
            {
                "k": k,
                "walls": walls,
                "latencies": lat,
                "errors": errors,
                "first_error": first,
                "peak_rss_kb": peak_rss_kb(),
            }
        )
        previous_wall, previous_k = min(walls), k
    return out
