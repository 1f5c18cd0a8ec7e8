"""Scenario 6: overhead per tool round trip, side by side (issue 11).

A linear chain of 5 tasks; each task's first model answer asks for two `calculator` calls at
once, the second (after the results) is the final answer quoting them: 2 model calls and 2 tool
calls per task for every contender. Ours runs the built-in calculator over HTTP end to end (a
`crew-platform serve` on SQLite, and on PostgreSQL when reachable) and in-process; LangGraph a
linear graph of prebuilt `create_react_agent`s (model + `ToolNode`); CrewAI a sequential crew
whose agents hold a `@tool`. The peers' tool does the same arithmetic (`workload.calculate`).

Overhead per tool round trip = (wall - model time) / tool calls, model time being the model
calls x the stub's latency. Contenders run interleaved: each round runs every contender once
(after a warm-up run of its own), in an order rotated per round, so a busy spell of the shared
machine spreads over all of them. After each contender's turn the stub's recorded requests are
checked: exactly 2 model calls per task, tools offered, and every task's two results back at
the model as `tool` messages; a contender that does anything else fails its row.
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
from bench.report import ScenarioResult, Table, Target
from bench.s1_overhead import sse_available, timed_run, wait_poll, wait_sse

N = 5
TOOLS_PER_RUN = N * workload.TOOL_CALLS_PER_TASK
MODEL_CALLS_PER_RUN = N * workload.MODEL_CALLS_PER_TASK
PEER_DRIVERS = {"crewai": "crewai_tools_driver.py", "langgraph": "langgraph_tools_driver.py"}
HTTP_SQLITE = "ours, HTTP end to end (SQLite)"
HTTP_POSTGRES = "ours, HTTP end to end (PostgreSQL)"
ENGINE = "ours, engine in-process (SQLite)"


@dataclass
class Measured:
    contender: str
    latency: float
    walls: list[float] = field(default_factory=list)
    runs_checked: int = 0
    model_calls: int = 0
    results_at_model: int = 0  # tasks whose two tool results reached the model
    tool_turns_ms: list[float] = field(default_factory=list)
    note: str = ""

    @property
    def model_time(self) -> float:
        return MODEL_CALLS_PER_RUN * self.latency

    @property
    def per_round_trip_ms(self) -> float:
        return (median(self.walls) - self.model_time) / TOOLS_PER_RUN * 1000

    @property
    def per_task_ms(self) -> float:
        return (median(self.walls) - self.model_time) / N * 1000


def sizes(ctx: Context) -> tuple[list[float], dict[float, int], int]:
    """Latencies, rounds per latency, warm-up runs per contender and round."""
    if ctx.smoke:
        return [0.0], {0.0: ctx.reps or 1}, 0
    return [0.0, 0.1], {0.0: ctx.reps or 7, 0.1: ctx.reps or 5}, 1


def stub_script(runs: int) -> list[dict[str, Any]]:
    """The stub's replies for `runs` runs of the chain, in the order they are asked for."""
    replies: list[dict[str, Any]] = []
    for _ in range(runs):
        for i in range(N):
            calls = [
                {"name": workload.TOOL_NAME, "arguments": {"expression": expression}}
                for expression in workload.tool_expressions(i)
            ]
            replies += [{"tool_calls": calls}, {"quote_tools": True}]
    return replies


def check_requests(stub: Stub, runs: int, latency: float, m: Measured) -> None:
    """Did the contender make exactly the scripted model calls, offering the tool each time, and
    did each task's two calculator results come back to the model as `tool` messages? Also
    keeps the tool turns of the last (measured) run: from the model call answered with the two
    calls to the next model call, as the stub saw them arrive, less the stub's latency."""
    requests = stub.requests()
    unanswered = stub.script([])
    offered = sum(1 for r in requests if r.get("tools"))
    answered = 0
    expected = [sorted(workload.expected_results(i)) for i in range(N)]
    for request in requests:
        results = [
            str(message.get("content"))
            for message in request.get("messages") or []
            if message.get("role") == "tool"
        ]
        answered += sorted(results) in expected
    problems = []
    if len(requests) != MODEL_CALLS_PER_RUN * runs or unanswered:
        problems.append(
            f"{len(requests)} model calls for {MODEL_CALLS_PER_RUN * runs} scripted "
            f"({unanswered} scripted replies never asked for)"
        )
    if offered != len(requests):
        problems.append(f"only {offered} of {len(requests)} model calls offered the tool")
    if answered != N * runs:
        problems.append(f"tool results reached the model in {answered} of {N * runs} tasks")
    if problems:
        raise RuntimeError("; ".join(problems))
    m.runs_checked += runs
    last = requests[-MODEL_CALLS_PER_RUN:]
    for asked, answered_with_results in zip(last[::2], last[1::2], strict=True):
        turn = answered_with_results["received_at"] - asked["received_at"] - latency
        m.tool_turns_ms.append(turn * 1000)
    m.model_calls += len(requests)
    m.results_at_model += answered


# -- our platform over HTTP --------------------------------------------------------------------


async def _http_round(server_url: str, workflow_id: int, runs: int, warmup: int) -> list[float]:
    walls: list[float] = []
    async with httpx.AsyncClient(base_url=server_url, timeout=120) as client:
        use_sse = await sse_available(client)
        for rep in range(warmup + runs):
            started = time.time()
            response = await client.post(f"/api/v1/workflows/{workflow_id}/execute", json={})
            response.raise_for_status()
            execution_id = response.json()["id"]
            wait = wait_sse if use_sse else wait_poll
            done = await wait(client, execution_id, 120)
            if rep >= warmup:
                walls.append(done - started)
    return walls


async def _create(server_url: str, tag: str) -> int:
    async with httpx.AsyncClient(base_url=server_url, timeout=120) as client:
        workflow_id, _ = await create_workflow(client, N, tag, tools=[workload.TOOL_NAME])
    return workflow_id


# -- our engine in-process ---------------------------------------------------------------------


async def _engine_round(database_url: str, stub: Stub, runs: int, warmup: int) -> list[float]:
    from asgi_lifespan import LifespanManager

    from crew_platform.app import create_app
    from crew_platform.engine import ExecutionRunner
    from crew_platform.settings import Settings

    settings = Settings(
        database_url=database_url,
        cerebras_api_key="bench",
        cerebras_base_url=stub.base_url,
        rate_limit_api="off",
        rate_limit_ws="off",
        redis_url=None,
        log_level="warning",
    )
    app = create_app(settings)
    walls: list[float] = []
    async with LifespanManager(app, startup_timeout=60, shutdown_timeout=60):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
            workflow_id, _ = await create_workflow(client, N, "engine", tools=[workload.TOOL_NAME])
        state = app.state
        runner = ExecutionRunner(
            state.sessionmaker,
            state.bus,
            state.gateway,
            state.tools,
            owner=state.heartbeat.process.id,
            tool_timeout=settings.tool_timeout_seconds,
        )
        for rep in range(warmup + runs):
            elapsed = await timed_run(state, runner, workflow_id)
            if rep >= warmup:
                walls.append(elapsed)
    return walls


# -- the scenario ------------------------------------------------------------------------------

Round = Callable[[int, int], list[float]]  # (runs, warm-up runs) -> walls of the runs


def run(ctx: Context, peers_ready: dict[str, bool]) -> ScenarioResult:
    result = ScenarioResult(6, "tools", "Overhead per tool round trip, side by side")
    latencies, rounds, warmup = sizes(ctx)
    with contextlib.ExitStack() as stack:
        contenders: list[tuple[str, Round]] = []
        backends: list[tuple[str, str | None]] = [(HTTP_SQLITE, None)]
        if ctx.postgres and not ctx.smoke:
            backends.append((HTTP_POSTGRES, ctx.postgres))
        for label, admin in backends:
            if admin:
                url = stack.enter_context(postgres_database(admin, "s6"))
                migrate(url, ctx.workdir)
            else:
                url = sqlite_url(ctx.workdir, "s6")
            server = Server(url, ctx.stub, ctx.workdir).start()
            stack.callback(server.stop)
            workflow_id = asyncio.run(_create(server.base_url, "tools"))

            def http(
                runs: int, warm: int, base: str = server.base_url, wf: int = workflow_id
            ) -> list[float]:
                return asyncio.run(_http_round(base, wf, runs, warm))

            contenders.append((label, http))

        def engine(runs: int, warm: int) -> list[float]:
            url = sqlite_url(ctx.workdir, "s6-engine")
            return asyncio.run(_engine_round(url, ctx.stub, runs, warm))

        contenders.append((ENGINE, engine))
        for peer in peer_envs.PEERS:
            if not peers_ready.get(peer.name):
                continue

            def driver(runs: int, warm: int, peer: Any = peer) -> list[float]:
                config = {"base_url": ctx.stub.base_url, "n": N, "runs": runs, "warmup": warm}
                out = peer_envs.run_driver(
                    str(peer.python), PEER_DRIVERS[peer.name], config, timeout=600
                )
                return list(out["walls"])

            contenders.append((peer.label, driver))
        measured = _interleaved(ctx, contenders, latencies, rounds, warmup)
    _tabulate(result, measured, latencies, rounds, warmup, peers_ready)
    return result


def _interleaved(
    ctx: Context,
    contenders: list[tuple[str, Round]],
    latencies: list[float],
    rounds: dict[float, int],
    warmup: int,
) -> list[Measured]:
    measured: list[Measured] = []
    for latency in latencies:
        by_label = {label: Measured(label, latency) for label, _ in contenders}
        measured += by_label.values()
        for number in range(rounds[latency]):
            shift = number % len(contenders)
            for label, one_round in contenders[shift:] + contenders[:shift]:
                m = by_label[label]
                if m.note:
                    continue  # failed in an earlier round
                ctx.log(f"s6 {label} latency={latency} round {number + 1}/{rounds[latency]}")
                ctx.stub.configure(latency, record=True)
                ctx.stub.script(stub_script(warmup + 1))
                try:
                    walls = one_round(1, warmup)
                    check_requests(ctx.stub, warmup + 1, latency, m)
                    m.walls += walls
                except Exception as exc:
                    m.note = f"failed: {type(exc).__name__}: {str(exc)[:300]}"
                    ctx.log(f"s6 {label} failed: {exc}")
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
        f"{N} tasks in a linear chain; each task's first model answer asks for two `calculator` "
        "calls at once, its second answer (after the results) is final: "
        f"{MODEL_CALLS_PER_RUN} model calls and {TOOLS_PER_RUN} tool round trips per run, for "
        "every contender (checked on the stub's recorded requests). A tool round trip is one "
        "call the model asks for, executed, its result sent back to the model. Overhead per "
        f"tool round trip = (wall - {MODEL_CALLS_PER_RUN} x stub latency) / {TOOLS_PER_RUN}; it "
        "carries the contender's whole overhead (task bookkeeping included), as the issue's "
        "figure does. Contenders run interleaved, one run per round after a warm-up run "
        f"({warmup} per contender and round), order rotated per round; rounds: "
        + ", ".join(f"{rounds[lat]} at {int(lat * 1000)} ms" for lat in latencies)
        + ". Median and min-max spread of the rounds."
    )
    result.notes.append(
        "'tool turn ms' splits the overhead: the median time from the stub receiving the model "
        "call it answers with the two tool calls to it receiving the next one (the results), "
        "less the stub latency: reading the streamed calls, running both tools, recording them, "
        "sending the next request. The rest of a task's overhead is the task around it."
    )
    result.notes.append(
        "Ours: the built-in `calculator` (its own syntax-tree evaluator); every call is "
        "recorded before it runs and its result when it returns (durable tool calls), with "
        "`tool_call_started`/`tool_call_completed` events. Our HTTP wall runs from "
        "POST /workflows/{id}/execute to the final event on the execution's SSE stream. "
        "LangGraph: one prebuilt `create_react_agent` (ChatOpenAI + `ToolNode`) per task in a "
        "linear `StateGraph`, `ainvoke` timed. CrewAI: a sequential crew, one agent per task "
        "holding a `@tool` calculator (native tool calling; CrewAI's tool cache off), "
        "`kickoff()` timed. Both peers' tool is `workload.calculate` (the same arithmetic)."
    )
    missing = [p.label for p in peer_envs.PEERS if not peers_ready.get(p.name)]
    if missing:
        result.notes.append(f"Not run here: {', '.join(missing)} (see the note at the top).")
    for latency in latencies:
        lg = _find(measured, "LangGraph", latency)
        crew = _find(measured, "CrewAI", latency)
        rows = []
        for m in measured:
            if m.latency != latency:
                continue
            if not m.walls or m.note:
                rows.append([m.contender, *["—"] * 9, m.note or "no data"])
                continue
            tasks = m.runs_checked * N
            rows.append(
                [
                    m.contender,
                    fmt(median(m.walls)),
                    spread(m.walls),
                    fmt(m.per_round_trip_ms, 2),
                    fmt(m.per_task_ms, 2),
                    fmt(median(m.tool_turns_ms), 2),
                    fmt(m.model_calls / tasks, 2),
                    f"{m.results_at_model}/{tasks}",
                    f"{m.per_round_trip_ms / lg.per_round_trip_ms:.2f}" if lg else "—",
                    f"{m.per_round_trip_ms / crew.per_round_trip_ms:.2f}" if crew else "—",
                    m.note,
                ]
            )
        result.tables.append(
            Table(
                f"{N} tasks x 2 tool calls, stub latency {int(latency * 1000)} ms "
                f"(model time {MODEL_CALLS_PER_RUN * latency:.1f} s)",
                [
                    "contender",
                    "wall s (median)",
                    "spread s",
                    "overhead/tool round trip ms",
                    "overhead/task ms",
                    "tool turn ms",
                    "model calls/task",
                    "tasks with both results at the model",
                    "x LangGraph",
                    "x CrewAI",
                    "note",
                ],
                rows,
            )
        )
    result.raw = {"measured": [m.__dict__ for m in measured]}
    _targets(result, measured, latencies)


def _targets(result: ScenarioResult, measured: list[Measured], latencies: list[float]) -> None:
    for peer, share in (("LangGraph", 1), ("CrewAI", 5)):
        rows = []
        for latency in latencies:
            ours = _find(measured, HTTP_SQLITE, latency)
            theirs = _find(measured, peer, latency)
            if ours and theirs:
                bar = theirs.per_round_trip_ms / share
                rows.append((f"{int(latency * 1000)} ms", ours.per_round_trip_ms, bar))
        words = peer if share == 1 else f"{peer}/{share}"
        measured_text = (
            "; ".join(f"{label}: {a:.2f} vs {words} {b:.2f}" for label, a, b in rows)
            or "peer or contender not measured"
        )
        result.targets.append(
            Target(
                "issue 11: HTTP end-to-end overhead/tool round trip (SQLite) <= "
                + (f"{peer}'s" if share == 1 else f"1/{share} of {peer}'s")
                + " (ms)",
                measured_text,
                all(a <= b for _, a, b in rows) if rows else None,
            )
        )
