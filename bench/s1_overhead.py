"""Scenario 1: overhead per task, side by side.

The same linear chain of N tasks through: our platform end to end over HTTP (a `crew-platform
serve` process on SQLite, and on PostgreSQL when reachable), our engine in-process
(`ExecutionRunner.run` awaited directly), CrewAI `Crew(process=sequential).kickoff()`, a LangGraph
linear `StateGraph` (`ainvoke`), and the bare OpenAI SDK (the floor). Overhead per task is
(wall - N x stub latency) / N.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

from bench import peer_envs
from bench.common import (
    Context,
    Server,
    create_workflow,
    fmt,
    median,
    migrate,
    parse_ts,
    postgres_database,
    spread,
    sqlite_url,
)
from bench.peers import workload
from bench.report import ScenarioResult, Table, Target

SSE_PATH = "/api/v1/executions/{execution_id}/events"


@dataclass
class Measured:
    contender: str
    n: int
    latency: float
    walls: list[float] = field(default_factory=list)
    requests: int = 0
    runs_counted: int = 0  # runs whose model requests were counted (warm-up included)
    note: str = ""
    setup_s: float | None = None

    @property
    def model_time(self) -> float:
        return self.n * self.latency

    @property
    def overhead_ms(self) -> float:
        return (median(self.walls) - self.model_time) / self.n * 1000

    def overheads_ms(self) -> list[float]:
        return [(w - self.model_time) / self.n * 1000 for w in self.walls]

    @property
    def requests_per_task(self) -> float:
        return self.requests / (self.runs_counted * self.n) if self.runs_counted else float("nan")


def sizes(ctx: Context) -> tuple[list[int], list[float], dict[float, int], int]:
    if ctx.smoke:
        return [5], [0.0], {0.0: ctx.reps or 1}, 0
    reps = {0.0: ctx.reps or 5, 0.1: ctx.reps or 3}
    return [5, 50], [0.0, 0.1], reps, 1


# -- our platform over HTTP --------------------------------------------------------------------


async def sse_available(client: httpx.AsyncClient) -> bool:
    response = await client.get("/openapi.json")
    return response.status_code == 200 and SSE_PATH in response.json().get("paths", {})


async def wait_sse(client: httpx.AsyncClient, execution_id: int, limit_s: float) -> float:
    """Reads the execution's SSE stream until its final event; returns arrival (epoch)."""
    final = {"workflow_completed", "workflow_failed", "workflow_cancelled"}
    async with client.stream(
        "GET", SSE_PATH.format(execution_id=execution_id), timeout=limit_s
    ) as stream:
        stream.raise_for_status()
        async for line in stream.aiter_lines():
            if line.startswith("data:"):
                with contextlib.suppress(ValueError):
                    message = json.loads(line[5:].strip())
                    if message.get("type") in final:
                        if message["type"] != "workflow_completed":
                            raise RuntimeError(f"execution {execution_id}: {message}")
                        return time.time()
    raise RuntimeError(f"SSE stream of execution {execution_id} ended without a final event")


async def wait_poll(client: httpx.AsyncClient, execution_id: int, limit_s: float) -> float:
    """Polls /status every 50 ms; returns the server's completed_at (epoch)."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        body = (await client.get(f"/api/v1/executions/{execution_id}/status")).json()
        if body.get("status") in workload.FINAL:
            if body["status"] != "completed":
                raise RuntimeError(f"execution {execution_id} {body['status']}: {body}")
            return parse_ts(body["completed_at"])
        await asyncio.sleep(0.05)
    raise TimeoutError(f"execution {execution_id} did not finish in {limit_s:.0f} s")


async def _http_runs(
    base_url: str, m: Measured, warmup: int, reps: int, ctx: Context, tag: str
) -> str:
    async with httpx.AsyncClient(base_url=base_url, timeout=120) as client:
        began = time.perf_counter()
        workflow_id, _ = await create_workflow(client, m.n, tag)
        m.setup_s = time.perf_counter() - began
        use_sse = await sse_available(client)
        ctx.stub.configure(m.latency, record=True)
        for rep in range(warmup + reps):
            started = time.time()
            response = await client.post(f"/api/v1/workflows/{workflow_id}/execute", json={})
            response.raise_for_status()
            execution_id = response.json()["id"]
            limit_s = 60 + m.model_time * 3
            if use_sse:
                done = await wait_sse(client, execution_id, limit_s)
            else:
                done = await wait_poll(client, execution_id, limit_s)
            if rep >= warmup:
                m.walls.append(done - started)
        m.requests = ctx.stub.request_count()
        m.runs_counted = warmup + reps
    return "SSE stream" if use_sse else "polling /status every 50 ms"


# -- our engine in-process ---------------------------------------------------------------------


class NoDispatch:
    """start_workflow hands the execution to a dispatcher; here the benchmark runs it itself."""

    def submit(self, execution_id: int) -> None:
        return None


async def timed_run(state: Any, runner: Any, workflow_id: int) -> float:
    """One execution of the workflow through the engine in this process (no dispatcher, no
    HTTP); its wall time. Raises if it did not complete."""
    from crew_platform.engine import Control
    from crew_platform.executions import repository, starting
    from crew_platform.executions.schemas import ExecuteRequest

    began = time.perf_counter()
    async with state.sessionmaker() as session:
        execution = await starting.start_workflow(
            session,
            NoDispatch(),  # type: ignore[arg-type]
            state.tools,
            workflow_id=workflow_id,
            request=ExecuteRequest(),
        )
    await runner.run(execution.id, Control())
    elapsed = time.perf_counter() - began
    async with state.sessionmaker() as session:
        status = (await repository.get_execution(session, execution.id)).status
    if status != "completed":
        raise RuntimeError(f"in-process execution {execution.id} ended {status}")
    return elapsed


async def _engine_runs(
    database_url: str, m: Measured, warmup: int, reps: int, ctx: Context
) -> None:
    from asgi_lifespan import LifespanManager

    from crew_platform.app import create_app
    from crew_platform.engine import ExecutionRunner
    from crew_platform.settings import Settings

    settings = Settings(
        database_url=database_url,
        cerebras_api_key="bench",
        cerebras_base_url=ctx.stub.base_url,
        rate_limit_api="off",
        rate_limit_ws="off",
        redis_url=None,
        log_level="warning",
    )
    app = create_app(settings)
    async with LifespanManager(app, startup_timeout=60, shutdown_timeout=60):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
            workflow_id, _ = await create_workflow(client, m.n, f"engine-{m.n}-{m.latency}")
        state = app.state
        runner = ExecutionRunner(
            state.sessionmaker, state.bus, state.gateway, owner=state.heartbeat.process.id
        )
        ctx.stub.configure(m.latency, record=True)
        for rep in range(warmup + reps):
            elapsed = await timed_run(state, runner, workflow_id)
            if rep >= warmup:
                m.walls.append(elapsed)
        m.requests = ctx.stub.request_count()
        m.runs_counted = warmup + reps


# -- drivers (peers and floor) -----------------------------------------------------------------


def _driver_runs(
    python: str,
    driver: str,
    m: Measured,
    warmup: int,
    reps: int,
    ctx: Context,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    ctx.stub.configure(m.latency, record=True)
    config = {
        "mode": "overhead",
        "base_url": ctx.stub.base_url,
        "n": m.n,
        "runs": reps,
        "warmup": warmup,
        **(extra or {}),
    }
    out = peer_envs.run_driver(python, driver, config, timeout=900)
    m.walls = list(out["walls"])
    m.requests = ctx.stub.request_count()
    m.runs_counted = warmup + reps
    return out


# -- the scenario ------------------------------------------------------------------------------


def run(ctx: Context, peers_ready: dict[str, bool]) -> ScenarioResult:
    result = ScenarioResult(1, "overhead", "Overhead per task, side by side")
    ns, latencies, reps_by_latency, warmup = sizes(ctx)
    measured: list[Measured] = []
    wait_method = "?"

    def attempt(m: Measured, fn: Any) -> None:
        ctx.log(f"s1 {m.contender} N={m.n} latency={m.latency}")
        try:
            fn()
            measured.append(m)
        except Exception as exc:
            m.note = f"failed: {type(exc).__name__}: {str(exc)[:300]}"
            measured.append(m)
            ctx.log(f"s1 {m.contender} failed: {exc}")

    backends: list[tuple[str, Any]] = [("SQLite", None)]
    if ctx.postgres and not ctx.smoke:
        backends.append(("PostgreSQL", ctx.postgres))
    for backend, admin in backends:
        with contextlib.ExitStack() as stack:
            if admin:
                url = stack.enter_context(postgres_database(admin, "s1"))
            else:
                url = sqlite_url(ctx.workdir, "s1")
            if admin:
                migrate(url, ctx.workdir)
            server = Server(url, ctx.stub, ctx.workdir).start()
            stack.callback(server.stop)
            for n in ns:
                for latency in latencies:
                    m = Measured(f"ours, HTTP end to end ({backend})", n, latency)

                    def http(
                        m: Measured = m, latency: float = latency, n: int = n, url: str = ""
                    ) -> None:
                        nonlocal wait_method
                        wait_method = asyncio.run(
                            _http_runs(
                                url,
                                m,
                                warmup,
                                reps_by_latency[latency],
                                ctx,
                                f"http-{n}-{latency}",
                            )
                        )

                    attempt(m, functools.partial(http, url=server.base_url))
    for n in ns:
        for latency in latencies:
            reps = reps_by_latency[latency]
            m = Measured("ours, engine in-process (SQLite)", n, latency)

            def engine(m: Measured = m, reps: int = reps) -> None:
                url = sqlite_url(ctx.workdir, "s1-engine")
                asyncio.run(_engine_runs(url, m, warmup, reps, ctx))

            attempt(m, engine)
            for peer in peer_envs.PEERS:
                if not peers_ready.get(peer.name):
                    continue
                m = Measured(peer.label, n, latency)
                attempt(
                    m,
                    lambda m=m, peer=peer, reps=reps: _driver_runs(
                        str(peer.python), peer.driver, m, warmup, reps, ctx
                    ),
                )
            m = Measured("bare OpenAI SDK, streaming (floor)", n, latency)
            attempt(
                m,
                lambda m=m, reps=reps: _driver_runs(
                    sys.executable, "floor_driver.py", m, warmup, reps, ctx, {"stream": True}
                ),
            )
            if ctx.smoke:
                continue
            m = Measured("bare OpenAI SDK, non-streaming", n, latency)
            attempt(
                m,
                lambda m=m, reps=reps: _driver_runs(
                    sys.executable, "floor_driver.py", m, warmup, reps, ctx, {"stream": False}
                ),
            )

    _tabulate(result, measured, ns, latencies, warmup, wait_method, ctx, peers_ready)
    return result


def _find(measured: list[Measured], prefix: str, n: int, latency: float) -> Measured | None:
    for m in measured:
        if m.contender.startswith(prefix) and m.n == n and m.latency == latency and m.walls:
            return m
    return None


def _tabulate(
    result: ScenarioResult,
    measured: list[Measured],
    ns: list[int],
    latencies: list[float],
    warmup: int,
    wait_method: str,
    ctx: Context,
    peers_ready: dict[str, bool],
) -> None:
    result.notes.append(
        "Each contender runs the same chain: N tasks, one agent per task (role, goal, backstory), "
        "each task seeing every earlier output; the stub answers after a fixed latency, so model "
        f"time is N x latency. {warmup} warm-up run(s) then the runs counted; the table shows "
        "the median and the min-max spread of the runs. Overhead per task = (wall - model time) "
        "/ N. 'x CrewAI' and 'x floor' divide the contender's overhead per task by CrewAI's and "
        "by the streaming floor's."
    )
    result.notes.append(
        f"Our HTTP wall runs from the client's POST /workflows/{{id}}/execute to completion, "
        f"detected by **{wait_method}**; with polling, the end is the server's stored "
        "`completed_at` (same clock), so the poll interval is not counted. Creating the agents, "
        "workflow and tasks over HTTP is not in the wall (shown as 'setup'). The in-process "
        "engine wall is `start_workflow` + `ExecutionRunner.run` awaited directly. Peers build "
        "their crew/graph before the clock starts. Server logging at warning (no access log)."
    )
    missing = [p.label for p in peer_envs.PEERS if not peers_ready.get(p.name)]
    if missing:
        result.notes.append(
            f"Not run here: {', '.join(missing)} (peers are skipped in smoke "
            "mode unless already installed; see the note at the top)."
        )
    for n in ns:
        for latency in latencies:
            crew = _find(measured, "CrewAI", n, latency)
            floor = _find(measured, "bare OpenAI SDK, streaming", n, latency)
            rows = []
            for m in measured:
                if m.n != n or m.latency != latency:
                    continue
                if not m.walls:
                    rows.append([m.contender, "—", "—", "—", "—", "—", "—", m.note or "no data"])
                    continue
                ratio_crew = f"{m.overhead_ms / crew.overhead_ms:.2f}" if crew else "—"
                ratio_floor = (
                    f"{m.overhead_ms / floor.overhead_ms:.2f}"
                    if floor and floor.overhead_ms > 0
                    else "—"
                )
                note = m.note
                if m.setup_s is not None:
                    note = f"setup {m.setup_s:.2f} s"
                rows.append(
                    [
                        m.contender,
                        fmt(median(m.walls)),
                        spread(m.walls),
                        fmt(m.overhead_ms, 2),
                        fmt(m.requests_per_task, 2),
                        ratio_crew,
                        ratio_floor,
                        note,
                    ]
                )
            result.tables.append(
                Table(
                    f"N = {n} tasks, stub latency {int(latency * 1000)} ms "
                    f"(model time {n * latency:.1f} s)",
                    [
                        "contender",
                        "wall s (median)",
                        "spread s",
                        "overhead/task ms",
                        "model requests/task",
                        "x CrewAI",
                        "x floor",
                        "note",
                    ],
                    rows,
                )
            )
    result.raw = {"measured": [m.__dict__ for m in measured], "wait_method": wait_method}
    _targets(result, measured, ns, latencies)


def _targets(
    result: ScenarioResult, measured: list[Measured], ns: list[int], latencies: list[float]
) -> None:
    http_vs_lg, http_vs_crew, engine_vs_floor = [], [], []
    for n in ns:
        for latency in latencies:
            label = f"N={n}/{int(latency * 1000)}ms"
            ours = _find(measured, "ours, HTTP end to end (SQLite)", n, latency)
            engine = _find(measured, "ours, engine in-process", n, latency)
            lg = _find(measured, "LangGraph", n, latency)
            crew = _find(measured, "CrewAI", n, latency)
            floor = _find(measured, "bare OpenAI SDK, streaming", n, latency)
            if ours and lg:
                http_vs_lg.append(
                    (label, ours.overhead_ms, lg.overhead_ms, ours.overhead_ms <= lg.overhead_ms)
                )
            if ours and crew:
                http_vs_crew.append(
                    (
                        label,
                        ours.overhead_ms,
                        crew.overhead_ms / 8,
                        ours.overhead_ms <= crew.overhead_ms / 8,
                    )
                )
            if engine and floor:
                engine_vs_floor.append(
                    (
                        label,
                        engine.overhead_ms,
                        floor.overhead_ms + 2,
                        engine.overhead_ms <= floor.overhead_ms + 2,
                    )
                )

    def verdict(rows: list[tuple[str, float, float, bool]], words: str) -> tuple[str, bool | None]:
        if not rows:
            return "peer or contender not measured", None
        text = "; ".join(f"{label}: {a:.2f} vs {words} {b:.2f}" for label, a, b, _ in rows)
        return text, all(ok for *_, ok in rows)

    text, met = verdict(http_vs_lg, "LangGraph")
    result.targets.append(
        Target("HTTP end-to-end overhead/task (SQLite) <= LangGraph's (ms)", text, met)
    )
    text, met = verdict(http_vs_crew, "CrewAI/8")
    result.targets.append(
        Target("HTTP end-to-end overhead/task (SQLite) <= 1/8 of CrewAI's (ms)", text, met)
    )
    text, met = verdict(engine_vs_floor, "floor+2")
    result.targets.append(
        Target("engine in-process overhead/task within 2 ms of the floor (ms)", text, met)
    )
