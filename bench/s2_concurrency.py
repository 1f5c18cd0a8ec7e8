"""Scenario 2: K concurrent executions of a 3-task linear workflow at 200 ms per model call.

Ours: one `crew-platform serve` process per backend (SQLite, PostgreSQL); the benchmark fires K
POST /workflows/{id}/execute at once from its own process, then reads every execution's
`completed_at`. Completion latency of one execution = its completed_at - the moment its POST was
sent; wall = last completed_at - first POST. Events are checked in the execution log: each
execution must have its 8 events with seq 1..8 (no gap). The peers and the floor run the same K
inside their drivers (`akickoff`, `ainvoke`, the SDK) with a time budget per K.
"""

from __future__ import annotations

import asyncio
import contextlib
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
    db_session,
    fmt,
    median,
    migrate,
    parse_ts,
    percentile,
    postgres_database,
    spread,
    sqlite_url,
)
from bench.report import ScenarioResult, Table, Target, line_chart

LATENCY = 0.2
TASKS = 3
IDEAL = TASKS * LATENCY
EVENTS_PER_EXECUTION = 2 + 2 * TASKS
LLM_CAP = 1024
RUNNER_CAP = 1024
SERVER_ENV = {"LLM_MAX_CONCURRENCY": str(LLM_CAP), "EXECUTION_MAX_CONCURRENCY": str(RUNNER_CAP)}
"""Ours runs with both caps above the largest K, as the peers (no cap) do: the figures then show
what one process does, not what a cap allows."""
ACCEPT_TARGET_K = 200
ACCEPT_TARGET_S = 0.5


@dataclass
class Point:
    contender: str
    k: int
    walls: list[float] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    refused: int = 0  # POST /execute answered with an error
    refusals: dict[str, int] = field(default_factory=dict)  # why, e.g. "ReadTimeout" or "HTTP 503"
    not_completed: int = 0  # accepted, but failed or never finished
    lost_events: int | None = None
    slowest_posts: list[float] = field(default_factory=list)  # per run: slowest POST /execute
    peaks_in_flight: list[int] = field(default_factory=list)  # per run: most calls at the stub
    peak_rss_mb: float | None = None
    note: str = ""

    @property
    def wall(self) -> float:
        return median(self.walls)

    @property
    def rate(self) -> float:
        return self.k / self.wall if self.walls else float("nan")


def plan(ctx: Context) -> tuple[list[int], dict[int, int]]:
    if ctx.smoke:
        return [1], {1: 1}
    ks = [1, 10, 20, 100, 200, 500, 1000]
    reps = {1: 3, 10: 3, 20: 3, 100: 2, 200: 3, 500: 1, 1000: 1}
    if ctx.reps:
        reps = dict.fromkeys(ks, ctx.reps)
    return ks, reps


async def _get(client: httpx.AsyncClient, url: str, params: dict[str, Any]) -> httpx.Response:
    """GET with a few retries on transport errors (an overloaded server drops idle keep-alives)."""
    for attempt in range(5):
        try:
            response = await client.get(url, params=params)
            response.raise_for_status()
            return response
        except httpx.TransportError:
            if attempt == 4:
                raise
            await asyncio.sleep(0.5)
    raise AssertionError("unreachable")


async def _count(client: httpx.AsyncClient, workflow_id: int, status: str) -> int:
    response = await _get(
        client, "/api/v1/executions/", {"workflow_id": workflow_id, "status": status, "limit": 1}
    )
    return int(response.headers.get("X-Total-Count", "0"))


STALL_S = 30.0


POSTING_CLIENTS = 20
CONNECTIONS_PER_CLIENT = 10
"""The burst's POSTs go out through 20 clients of 10 connections each, not one client of 200:
httpx's pool looks at every connection for every request it places, so one client with 200
connections spent seconds of the load generator's CPU per burst, and the slowest POST measured
that instead of the server (`results/2026-12-01-engine.md`)."""


async def _burst(server: Server, k: int, point: Point, tag: str, limit_s: float) -> None:
    limits = httpx.Limits(
        max_connections=CONNECTIONS_PER_CLIENT, max_keepalive_connections=CONNECTIONS_PER_CLIENT
    )
    async with contextlib.AsyncExitStack() as stack:
        posting = [
            await stack.enter_async_context(
                httpx.AsyncClient(base_url=server.base_url, timeout=300, limits=limits)
            )
            for _ in range(POSTING_CLIENTS)
        ]
        client = posting[0]
        workflow_id, _ = await create_workflow(client, TASKS, tag)
        sent: dict[int, float] = {}
        refused = 0
        slowest = 0.0

        async def one(i: int) -> None:
            nonlocal refused, slowest
            at = time.time()
            began = time.perf_counter()
            try:
                response = await posting[i % POSTING_CLIENTS].post(
                    f"/api/v1/workflows/{workflow_id}/execute", json={}
                )
                slowest = max(slowest, time.perf_counter() - began)
                response.raise_for_status()
                sent[int(response.json()["id"])] = at
            except httpx.HTTPError as exc:
                refused += 1
                why = (
                    f"HTTP {exc.response.status_code}"
                    if isinstance(exc, httpx.HTTPStatusError)
                    else type(exc).__name__
                )
                point.refusals[why] = point.refusals.get(why, 0) + 1

        first = time.time()
        await asyncio.gather(*(one(i) for i in range(k)))
        point.slowest_posts.append(slowest)
        deadline = time.monotonic() + limit_s
        last_done, last_change = -1, time.monotonic()
        while time.monotonic() < deadline:
            done = sum(
                [await _count(client, workflow_id, s) for s in ("completed", "failed", "cancelled")]
            )
            if done >= len(sent):
                break
            if done != last_done:
                last_done, last_change = done, time.monotonic()
            elif time.monotonic() - last_change > STALL_S:
                point.note = (
                    f"stalled: {len(sent) - done} execution(s) still unfinished after "
                    f"{STALL_S:.0f} s without progress"
                )
                break
            await asyncio.sleep(0.1)
        else:
            point.note = f"timed out after {limit_s:.0f} s"
        finished: list[float] = []
        unfinished = 0
        skip = 0
        while True:
            page = (
                await _get(
                    client,
                    "/api/v1/executions/",
                    {"workflow_id": workflow_id, "limit": 1000, "skip": skip},
                )
            ).json()
            for row in page:
                if row["status"] == "completed" and row.get("completed_at"):
                    at = parse_ts(row["completed_at"])
                    finished.append(at)
                    point.latencies.append(at - sent.get(int(row["id"]), first))
                else:
                    unfinished += 1
            if len(page) < 1000:
                break
            skip += 1000
        point.errors += refused + unfinished
        point.refused += refused
        point.not_completed += unfinished
        if finished:
            point.walls.append(max(finished) - first)
        point.lost_events = (point.lost_events or 0) + await _lost_events(
            server.database_url, list(sent)
        )


async def _lost_events(database_url: str, ids: list[int]) -> int:
    """Executions whose log is short of the 8 events or has a gap in seq."""
    from sqlalchemy import func, select

    from crew_platform.models import ExecutionLog

    if not ids:
        return 0
    lost = 0
    async with db_session(database_url) as conn:
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            rows = (
                await conn.execute(
                    select(ExecutionLog.execution_id, func.count(), func.max(ExecutionLog.seq))
                    .where(ExecutionLog.execution_id.in_(chunk))
                    .group_by(ExecutionLog.execution_id)
                )
            ).all()
            seen = {r[0]: (r[1], r[2]) for r in rows}
            for eid in chunk:
                count, top = seen.get(eid, (0, 0))
                if count != EVENTS_PER_EXECUTION or top != count:
                    lost += 1
    return lost


def _ours(
    ctx: Context, backend: str, admin: str | None, ks: list[int], reps: dict[int, int]
) -> list[Point]:
    points: list[Point] = []
    label = f"ours, HTTP ({backend})"
    with contextlib.ExitStack() as stack:
        url = (
            stack.enter_context(postgres_database(admin, "s2"))
            if admin
            else sqlite_url(ctx.workdir, "s2")
        )
        if admin:
            migrate(url, ctx.workdir)
        server = Server(url, ctx.stub, ctx.workdir, extra_env=SERVER_ENV).start()
        stack.callback(server.stop)
        ctx.stub.configure(LATENCY)
        previous: Point | None = None
        for k in ks:
            point = Point(label, k)
            points.append(point)
            if previous is not None and previous.walls and previous.wall * k / previous.k > 240:
                point.note = f"not attempted: projected {previous.wall * k / previous.k:.0f} s"
                continue
            ctx.log(f"s2 {label} K={k}")
            server.reset_peak()
            for rep in range(reps[k]):
                try:
                    ctx.stub.reset_peak()
                    asyncio.run(_burst(server, k, point, f"s2-{k}-{rep}", limit_s=300))
                    point.peaks_in_flight.append(ctx.stub.peak_in_flight())
                except Exception as exc:
                    point.note = f"failed: {type(exc).__name__}: {str(exc)[:200]}"
                    break
            point.peak_rss_mb = server.peak_rss_mb()
            previous = point
    return points


def _driver(
    ctx: Context,
    label: str,
    python: str,
    driver: str,
    ks: list[int],
    reps: dict[int, int],
    budget: float,
) -> list[Point]:
    ctx.log(f"s2 {label}")
    ctx.stub.configure(LATENCY)
    config = {
        "mode": "concurrency",
        "base_url": ctx.stub.base_url,
        "n": TASKS,
        "ks": ks,
        "reps": {str(k): v for k, v in reps.items()},
        "budget_s": budget,
    }
    try:
        out = peer_envs.run_driver(python, driver, config, timeout=budget * 2 * len(ks) + 300)
    except Exception as exc:
        return [Point(label, ks[0], note=f"failed: {str(exc)[:300]}")]
    points = []
    for item in out["results"]:
        point = Point(label, int(item["k"]))
        if "skipped" in item:
            point.note = f"not attempted: {item['skipped']}"
        else:
            point.walls = list(item["walls"])
            point.latencies = list(item["latencies"])
            point.errors = int(item["errors"])
            point.peak_rss_mb = item["peak_rss_kb"] / 1024
            if item.get("first_error"):
                point.note = f"first error: {item['first_error'][:150]}"
        points.append(point)
    return points


def run(ctx: Context, peers_ready: dict[str, bool]) -> ScenarioResult:
    result = ScenarioResult(2, "concurrency", "Concurrency scaling")
    ks, reps = plan(ctx)
    points: list[Point] = []
    backends: list[tuple[str, str | None]] = [("SQLite", None)]
    if ctx.postgres:
        backends.append(("PostgreSQL", ctx.postgres))
    for backend, admin in backends:
        points += _ours(ctx, backend, admin, ks, reps)
    budget = 20.0 if ctx.smoke else 90.0
    for peer in peer_envs.PEERS:
        if ctx.smoke:
            result.notes.append("Smoke run: the peers are not run in this scenario.")
            break
        if peers_ready.get(peer.name):
            points += _driver(
                ctx,
                f"{peer.label} ({'akickoff' if peer.name == 'crewai' else 'ainvoke'})",
                str(peer.python),
                peer.driver,
                ks,
                reps,
                budget,
            )
    points += _driver(
        ctx, "bare OpenAI SDK (floor)", sys.executable, "floor_driver.py", ks, reps, budget
    )
    _tabulate(ctx, result, points, ks, reps)
    return result


def _tabulate(
    ctx: Context, result: ScenarioResult, points: list[Point], ks: list[int], reps: dict[int, int]
) -> None:
    result.notes.append(
        f"K concurrent executions of a {TASKS}-task linear workflow, stub latency "
        f"{int(LATENCY * 1000)} ms: the ideal wall is {IDEAL:.1f} s whatever K. Runs per K: "
        + ", ".join(f"K={k}: {reps[k]}" for k in ks)
        + ". Wall and executions/s are medians over the runs (spread = min-max); p50/p99 pool "
        "every execution's completion latency over the runs. Peak RSS is the server process's "
        "(ours, VmHWM reset before each K) or the driver process's (peers, floor). 'errors' "
        "counts failed runs (ours: POST /execute refused, or accepted but failed or never "
        "finished; wall and rates count only completed runs). 'lost "
        "events' counts executions whose persisted log lacks one of its 8 events or has a gap; "
        "WebSocket delivery is checked in scenario 4."
    )
    result.notes.append(
        f"Ours runs with `LLM_MAX_CONCURRENCY` = {LLM_CAP} and `EXECUTION_MAX_CONCURRENCY` = "
        f"{RUNNER_CAP} (the defaults are lower), so no cap of ours binds at any K, as the peers "
        "and the floor have none (the OpenAI SDK allows 1000 connections). For ours, 'slowest "
        "POST s' is the slowest POST /execute answer of a run as the client saw it (median over "
        "the runs) and 'peak in flight' the most model calls the stub answered at once (median "
        "over the runs)."
    )
    rows = []
    for p in points:
        if not p.walls:
            rows.append(
                [
                    p.contender,
                    str(p.k),
                    "—",
                    "—",
                    "—",
                    "—",
                    "—",
                    "—",
                    "—",
                    str(p.errors),
                    "—",
                    "—",
                    "—",
                    p.note or "no data",
                ]
            )
            continue
        rows.append(
            [
                p.contender,
                str(p.k),
                fmt(p.wall, 2),
                spread(p.walls),
                f"{p.wall / IDEAL:.2f}",
                fmt(p.rate, 1),
                fmt(percentile(p.latencies, 50), 2),
                fmt(percentile(p.latencies, 99), 2),
                fmt(p.peak_rss_mb, 0),
                str(p.errors),
                "—" if p.lost_events is None else str(p.lost_events),
                fmt(median(p.slowest_posts), 2) if p.slowest_posts else "—",
                str(round(median([float(x) for x in p.peaks_in_flight])))
                if p.peaks_in_flight
                else "—",
                "; ".join(
                    x
                    for x in (
                        f"{p.refused} POST refused ("
                        + ", ".join(f"{n}x {why}" for why, n in sorted(p.refusals.items()))
                        + ")"
                        if p.refused
                        else "",
                        f"{p.not_completed} accepted but not completed" if p.not_completed else "",
                        p.note,
                    )
                    if x
                ),
            ]
        )
    result.tables.append(
        Table(
            "",
            [
                "contender",
                "K",
                "wall s",
                "spread s",
                "x ideal",
                "executions/s",
                "p50 s",
                "p99 s",
                "peak RSS MB",
                "errors",
                "lost events",
                "slowest POST s",
                "peak in flight",
                "note",
            ],
            rows,
        )
    )
    labels = list(dict.fromkeys(p.contender for p in points))
    series_wall: dict[str, tuple[list[float], list[float]]] = {}
    series_rate: dict[str, tuple[list[float], list[float]]] = {}
    for label in labels:
        mine = [p for p in points if p.contender == label and p.walls]
        series_wall[label] = ([p.k for p in mine], [p.wall for p in mine])
        series_rate[label] = ([p.k for p in mine], [p.rate for p in mine])
    charts = [
        (
            "s2-wall",
            "Wall time of K concurrent 3-task runs (200 ms/call)",
            "wall s",
            series_wall,
            ("ideal 0.6 s", IDEAL),
            True,
        ),
        (
            "s2-throughput",
            "Executions per second at K concurrent runs",
            "executions/s",
            series_rate,
            None,
            True,
        ),
    ]
    if len(ks) > 1:
        for name, title, ylabel, series, reference, logy in charts:
            path = ctx.chart(name)
            if line_chart(
                path,
                title,
                "K (concurrent executions)",
                ylabel,
                series,
                reference=reference,
                logy=logy,
            ):
                result.charts.append(path.name)
    result.raw = {"points": [p.__dict__ for p in points]}

    def at(prefix: str, k: int) -> Point | None:
        return next(
            (p for p in points if p.contender.startswith(prefix) and p.k == k and p.walls), None
        )

    k20 = [(b, at(f"ours, HTTP ({b})", 20)) for b in ("SQLite", "PostgreSQL")]
    k20 = [(b, p) for b, p in k20 if p is not None]
    if k20:
        text = "; ".join(f"{b}: {p.wall / IDEAL:.2f}x ({p.wall:.2f} s)" for b, p in k20)
        result.targets.append(
            Target(
                "20 concurrent 3-task runs within 1.3x the ideal 0.6 s",
                text,
                all(p.wall <= 1.3 * IDEAL for _, p in k20),
            )
        )
    else:
        result.targets.append(
            Target("20 concurrent 3-task runs within 1.3x the ideal 0.6 s", "K=20 not run", None)
        )
    result.targets += _accept_targets(
        at("ours, HTTP (PostgreSQL)", ACCEPT_TARGET_K), at("LangGraph", ACCEPT_TARGET_K)
    )
    ours = at("ours, HTTP (PostgreSQL)", 1000)
    lg = at("LangGraph", 1000)
    if ours and lg:
        ok = ours.rate >= lg.rate and ours.errors == 0 and ours.lost_events == 0
        text = (
            f"ours {ours.rate:.1f}/s (errors {ours.errors}, lost events {ours.lost_events}) "
            f"vs LangGraph {lg.rate:.1f}/s"
        )
        result.targets.append(
            Target(
                "K=1000 on PostgreSQL: executions/s >= LangGraph's, no error, no lost event",
                text,
                ok,
            )
        )
    else:
        result.targets.append(
            Target(
                "K=1000 on PostgreSQL: executions/s >= LangGraph's, no error, no lost event",
                "ours or LangGraph not measured at K=1000",
                None,
            )
        )


def _accept_targets(ours: Point | None, langgraph: Point | None) -> list[Target]:
    """The accept-under-load bars at K=200 on PostgreSQL: every POST answered within 0.5 s,
    model calls in flight reaching min(K, caps), executions/s at least LangGraph's."""
    k = ACCEPT_TARGET_K
    where = f"K={k} on PostgreSQL"
    posts = f"{where}: every POST /execute answered within {ACCEPT_TARGET_S} s"
    full = min(k, LLM_CAP, RUNNER_CAP)
    flight = f"{where}: model calls in flight reach min(K, LLM_MAX_CONCURRENCY) = {full}"
    rate = f"{where}: executions/s >= LangGraph's, no error"
    if ours is None:
        missing = f"ours not measured at K={k}"
        return [
            Target(posts, missing, None),
            Target(flight, missing, None),
            Target(rate, missing, None),
        ]
    slowest = max(ours.slowest_posts) if ours.slowest_posts else float("nan")
    peak = min(ours.peaks_in_flight) if ours.peaks_in_flight else 0  # every run reaches it
    targets = [
        Target(
            posts,
            f"slowest {slowest:.2f} s (runs: {', '.join(f'{x:.2f}' for x in ours.slowest_posts)})",
            slowest <= ACCEPT_TARGET_S,
        ),
        Target(
            flight,
            f"lowest peak {peak} (runs: {', '.join(str(x) for x in ours.peaks_in_flight)})",
            peak >= full,
        ),
    ]
    if langgraph is None:
        targets.append(Target(rate, f"ours {ours.rate:.1f}/s; LangGraph not measured", None))
    else:
        targets.append(
            Target(
                rate,
                f"ours {ours.rate:.1f}/s (errors {ours.errors}) "
                f"vs LangGraph {langgraph.rate:.1f}/s",
                ours.rate >= langgraph.rate and ours.errors == 0,
            )
        )
    return targets
