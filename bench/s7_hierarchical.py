"""Scenario 7: a hierarchical crew, side by side with CrewAI's `Process.hierarchical` (issue 12).

A manager and three agents on three tasks. For each task the manager's first answer delegates
the task to agent i (one call of its delegation tool), agent i answers, and the manager's second
answer is final, quoting the tool result: 3 model calls per task for every contender. Ours is a
`hierarchical` workflow whose manager the platform builds on the bench model
(`config.manager_model`), its tasks assigned to the three agents (that makes them the crew),
driven over HTTP end to end (`crew-platform serve` on SQLite, and on PostgreSQL when reachable);
CrewAI is `Crew(agents, tasks, process=hierarchical, manager_llm=...)`, tasks without an agent
(driver `peers/crewai_hierarchical_driver.py`). The stub answers both from the same script; only
the tool's name differs (`delegate_work` here, `delegate_work_to_coworker` in CrewAI).

After each contender's turn the stub's recorded requests are checked: 3 model calls per task,
the manager offered its two delegation tools on each of its calls, each coworker called once per
run with no tools, and each coworker's answer back at the manager as a `tool` message; a
contender that does anything else fails its row. Contenders run interleaved as in scenario 6:
each round runs every contender once (after a warm-up run of its own), in an order rotated per
round.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from bench import peer_envs
from bench.common import (
    Context,
    Server,
    Stub,
    create_workflow,
    fmt,
    median,
    migrate,
    postgres_database,
    spread,
    sqlite_url,
)
from bench.peers import workload
from bench.report import ScenarioResult, Table
from bench.s1_overhead import sse_available, wait_poll, wait_sse

N = workload.HIERARCHY_TASKS
MODEL_CALLS_PER_RUN = N * workload.HIERARCHY_MODEL_CALLS_PER_TASK
DRIVER = "crewai_hierarchical_driver.py"
HTTP_SQLITE = "ours, HTTP end to end (SQLite)"
HTTP_POSTGRES = "ours, HTTP end to end (PostgreSQL)"
CREWAI = "CrewAI"
OUR_TOOL = "delegate_work"
CREWAI_TOOL = "delegate_work_to_coworker"


@dataclass
class Measured:
    contender: str
    latency: float
    walls: list[float] = field(default_factory=list)
    runs_checked: int = 0
    model_calls: int = 0
    answers_at_manager: int = 0  # tasks whose coworker answer reached the manager
    note: str = ""

    @property
    def model_time(self) -> float:
        return MODEL_CALLS_PER_RUN * self.latency

    @property
    def per_task_ms(self) -> float:
        """The contender's own time per task: the wall less the stub's latency of its calls."""
        return (median(self.walls) - self.model_time) / N * 1000


def sizes(ctx: Context) -> tuple[list[float], dict[float, int], int]:
    """Latencies, rounds per latency, warm-up runs per contender and round."""
    if ctx.smoke:
        return [0.0], {0.0: ctx.reps or 1}, 0
    return [0.0, 0.1], {0.0: ctx.reps or 7, 0.1: ctx.reps or 5}, 1


def stub_script(runs: int, tool: str) -> list[dict[str, Any]]:
    """The stub's replies for `runs` runs, each matched by the manager's task or the coworker's
    role, so the order the contender asks in does not matter."""
    replies: list[dict[str, Any]] = []
    for _ in range(runs):
        for i in range(N):
            cue, role = workload.manager_cue(i), workload.agent(i).role
            arguments = {
                "coworker": role,
                "task": workload.delegated_task(i),
                "context": workload.delegated_context(i),
            }
            replies += [
                {"match": cue, "tool_calls": [{"name": tool, "arguments": arguments}]},
                {"role": role, "content": workload.coworker_answer(i)},
                {"match": cue, "content": "Done.", "quote_tools": True},
            ]
    return replies


def _system(request: dict[str, Any]) -> str:
    messages = request.get("messages") or [{}]
    return str(messages[0].get("content") or "")


def _offered(request: dict[str, Any]) -> list[str]:
    return [t["function"]["name"] for t in request.get("tools") or []]


def check_requests(stub: Stub, runs: int, tool: str, m: Measured) -> None:
    requests = stub.requests()
    unanswered = stub.script([])
    problems = []
    if len(requests) != MODEL_CALLS_PER_RUN * runs or unanswered:
        problems.append(
            f"{len(requests)} model calls for {MODEL_CALLS_PER_RUN * runs} scripted "
            f"({unanswered} scripted replies never asked for)"
        )
    offering = [r for r in requests if tool in _offered(r)]
    others = [r for r in requests if r not in offering]
    if len(offering) != 2 * N * runs or any(r.get("tools") for r in others):
        problems.append(
            f"{len(offering)} manager calls offered {tool} (expected {2 * N * runs}); "
            f"{sum(1 for r in others if r.get('tools'))} other calls offered tools"
        )
    for i in range(N):
        role = workload.agent(i).role
        asked = sum(1 for r in others if _system(r).startswith(f"You are {role}."))
        if asked != runs:
            problems.append(f"{role} was called {asked} times in {runs} run(s)")
    answered = 0
    for request in offering:
        results = [
            str(message.get("content"))
            for message in request.get("messages") or []
            if message.get("role") == "tool"
        ]
        answered += any(workload.coworker_answer(i) in results for i in range(N))
    if answered != N * runs:
        problems.append(f"coworker answers reached the manager in {answered} of {N * runs} tasks")
    if problems:
        raise RuntimeError("; ".join(problems))
    m.runs_checked += runs
    m.model_calls += len(requests)
    m.answers_at_manager += answered


async def _http_round(server_url: str, workflow_id: int, runs: int, warmup: int) -> list[float]:
    walls: list[float] = []
    async with httpx.AsyncClient(base_url=server_url, timeout=120) as client:
        use_sse = await sse_available(client)
        for rep in range(warmup + runs):
            started = time.time()
            response = await client.post(f"/api/v1/workflows/{workflow_id}/execute", json={})
            response.raise_for_status()
            wait = wait_sse if use_sse else wait_poll
            done = await wait(client, response.json()["id"], 120)
            if rep >= warmup:
                walls.append(done - started)
    return walls


async def _create(server_url: str) -> int:
    async with httpx.AsyncClient(base_url=server_url, timeout=120) as client:
        workflow_id, _ = await create_workflow(
            client,
            N,
            "hierarchical",
            workflow_type="hierarchical",
            config={"manager_model": workload.MODEL},
        )
    return workflow_id


Round = Callable[[int, int], list[float]]  # (runs, warm-up runs) -> walls of the runs


def run(ctx: Context, peers_ready: dict[str, bool]) -> ScenarioResult:
    result = ScenarioResult(7, "hierarchical", "A hierarchical crew, side by side")
    latencies, rounds, warmup = sizes(ctx)
    with contextlib.ExitStack() as stack:
        contenders: list[tuple[str, str, Round]] = []
        backends: list[tuple[str, str | None]] = [(HTTP_SQLITE, None)]
        if ctx.postgres and not ctx.smoke:
            backends.append((HTTP_POSTGRES, ctx.postgres))
        for label, admin in backends:
            if admin:
                url = stack.enter_context(postgres_database(admin, "s7"))
                migrate(url, ctx.workdir)
            else:
                url = sqlite_url(ctx.workdir, "s7")
            server = Server(url, ctx.stub, ctx.workdir).start()
            stack.callback(server.stop)
            workflow_id = asyncio.run(_create(server.base_url))

            def http(
                runs: int, warm: int, base: str = server.base_url, wf: int = workflow_id
            ) -> list[float]:
                return asyncio.run(_http_round(base, wf, runs, warm))

            contenders.append((label, OUR_TOOL, http))
        if peers_ready.get(peer_envs.CREWAI.name):

            def crewai(runs: int, warm: int) -> list[float]:
                config = {"base_url": ctx.stub.base_url, "runs": runs, "warmup": warm}
                python = str(peer_envs.CREWAI.python)
                return list(peer_envs.run_driver(python, DRIVER, config, timeout=600)["walls"])

            contenders.append((CREWAI, CREWAI_TOOL, crewai))
        measured = _interleaved(ctx, contenders, latencies, rounds, warmup)
    _tabulate(result, measured, latencies, rounds, warmup, peers_ready)
    return result


def _interleaved(
    ctx: Context,
    contenders: list[tuple[str, str, Round]],
    latencies: list[float],
    rounds: dict[float, int],
    warmup: int,
) -> list[Measured]:
    measured: list[Measured] = []
    for latency in latencies:
        by_label = {label: Measured(label, latency) for label, _, _ in contenders}
        measured += by_label.values()
        for number in range(rounds[latency]):
            shift = number % len(contenders)
            for label, tool, one_round in contenders[shift:] + contenders[:shift]:
                m = by_label[label]
                if m.note:
                    continue  # failed in an earlier round
                ctx.log(f"s7 {label} latency={latency} round {number + 1}/{rounds[latency]}")
                ctx.stub.configure(latency, record=True)
                ctx.stub.script(stub_script(warmup + 1, tool))
                try:
                    walls = one_round(1, warmup)
                    check_requests(ctx.stub, warmup + 1, tool, m)
                    m.walls += walls
                except Exception as exc:
                    m.note = f"failed: {type(exc).__name__}: {str(exc)[:300]}"
                    ctx.log(f"s7 {label} failed: {exc}")
    return measured


def _find(measured: list[Measured], label: str, latency: float) -> Measured | None:
    for m in measured:
        if m.contender == label and m.latency == latency and m.walls and not m.note:
            return m
    return None


def _tabulate(
    result: ScenarioResult,
    measured: list[Measured],
    latencies: list[float],
    rounds: dict[float, int],
    warmup: int,
    peers_ready: dict[str, bool],
) -> None:
    result.notes.append(
        f"A manager and {N} agents on {N} tasks; per task the manager delegates the task to one "
        "agent (one delegation tool call), the agent answers, the manager answers: "
        f"{workload.HIERARCHY_MODEL_CALLS_PER_TASK} model calls per task, "
        f"{MODEL_CALLS_PER_RUN} per run, for every contender (checked on the stub's recorded "
        "requests). Own time per task = (wall - "
        f"{MODEL_CALLS_PER_RUN} x stub latency) / {N}. Contenders run interleaved, one run per "
        f"round after a warm-up run ({warmup} per contender and round), order rotated per "
        "round; rounds: "
        + ", ".join(f"{rounds[lat]} at {int(lat * 1000)} ms" for lat in latencies)
        + ". Median and min-max spread of the rounds."
    )
    result.notes.append(
        "Ours: a `hierarchical` workflow, its manager built by the platform on the bench model; "
        "each delegation is a durable tool call of the manager's run (stored before it runs and "
        "when it returns, `delegation_started`/`delegation_completed` events), the coworker a "
        "nested step. Our wall runs from POST /workflows/{id}/execute to the final event on the "
        "execution's SSE stream. CrewAI: `kickoff()` of a hierarchical crew with `manager_llm`, "
        "timed in its own process (the crew built before the clock starts)."
    )
    if not peers_ready.get(peer_envs.CREWAI.name):
        result.notes.append("Not run here: CrewAI (see the note at the top).")
    for latency in latencies:
        crew = _find(measured, CREWAI, latency)
        rows = []
        for m in measured:
            if m.latency != latency:
                continue
            if not m.walls or m.note:
                rows.append([m.contender, *["—"] * 7, m.note or "no data"])
                continue
            tasks = m.runs_checked * N
            rows.append(
                [
                    m.contender,
                    fmt(median(m.walls)),
                    spread(m.walls),
                    fmt(m.per_task_ms, 2),
                    fmt(m.model_calls / tasks, 2),
                    f"{m.answers_at_manager}/{tasks}",
                    f"{median(m.walls) / median(crew.walls):.2f}" if crew else "—",
                    f"{m.per_task_ms / crew.per_task_ms:.2f}" if crew else "—",
                    m.note,
                ]
            )
        result.tables.append(
            Table(
                f"Manager + {N} agents on {N} tasks, stub latency {int(latency * 1000)} ms "
                f"(model time {MODEL_CALLS_PER_RUN * latency:.1f} s)",
                [
                    "contender",
                    "wall s (median)",
                    "spread s",
                    "own time/task ms",
                    "model calls/task",
                    "coworker answers at the manager",
                    "wall x CrewAI",
                    "own time x CrewAI",
                    "note",
                ],
                rows,
            )
        )
    result.raw = {"measured": [m.__dict__ for m in measured]}
