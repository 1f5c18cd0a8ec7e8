"""Scenario 9: scale-out. K concurrent 3-task runs at 200 ms on PostgreSQL, run by 1, 2 and 4
`crew-platform worker` processes behind one API process (EXECUTOR=queue, Redis Streams), by the
in-process server for reference, and by LangGraph (`ainvoke`) in the same run.

Measured as scenario 2 measures (the same burst: K POSTs at once, then every execution's
`completed_at`): executions/s, p99 completion. Beside them, the CPU each kind of process spent
per execution (API, workers, every PostgreSQL backend), from which the README works out how far
the platform grows with cores before PostgreSQL saturates.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from pathlib import Path

from bench import peer_envs
from bench.common import (
    Context,
    Server,
    Worker,
    cpu_seconds,
    fmt,
    median,
    migrate,
    percentile,
    postgres_database,
    spread,
    wait_for_workers,
)
from bench.report import ScenarioResult, Table, Target, line_chart
from bench.s2_concurrency import IDEAL, LATENCY, TASKS, Point, _burst, _driver

K = 1000
WORKER_COUNTS = (1, 2, 4)
WORKER_CONCURRENCY = 1024
"""No cap of ours binds (as in scenario 2): one worker may run all K at once."""
POOL_SIZE = 16
"""PostgreSQL connections per process: 1 API + 4 workers stay under `max_connections` (100)."""
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
SPEEDUP_TARGET = 1.4
LANGGRAPH_TARGET = 1.2


def _redis_problem() -> str | None:
    import redis

    try:
        redis.Redis.from_url(REDIS_URL, socket_timeout=3).ping()
        return None
    except Exception as exc:
        return f"{type(exc).__name__}: {str(exc)[:150]}"


def _postgres_cpu() -> float:
    """CPU seconds of every PostgreSQL process on this machine (backends live as long as the
    pools that opened them, so a delta over a burst counts its work)."""
    return processes_cpu("postgres")


def processes_cpu(command: str) -> float:
    """CPU seconds so far of every process on this machine whose command is `command`."""
    total = 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            if (entry / "comm").read_text().strip() == command:
                total += cpu_seconds(int(entry.name))
    return total


class Deployment:
    """One API process and `workers` workers (0: the in-process server alone)."""

    def __init__(
        self, ctx: Context, database_url: str, workers: int, extra_env: dict[str, str] | None = None
    ) -> None:
        env = {
            "LLM_MAX_CONCURRENCY": str(WORKER_CONCURRENCY),
            "EXECUTION_MAX_CONCURRENCY": str(WORKER_CONCURRENCY),
            "DATABASE_POOL_SIZE": str(POOL_SIZE),
        }
        if workers:
            env |= {
                "EXECUTOR": "queue",
                "BROKER_URL": REDIS_URL,
                "REDIS_URL": REDIS_URL,
                "EVENTS_CHANNEL_PREFIX": f"bench-s9-{uuid.uuid4().hex[:8]}",
            }
        env |= extra_env or {}
        self.server = Server(database_url, ctx.stub, ctx.workdir, extra_env=env)
        self.workers = [Worker(self.server, WORKER_CONCURRENCY) for _ in range(workers)]

    def __enter__(self) -> Deployment:
        self.server.start()
        for worker in self.workers:
            worker.start()
        if self.workers:
            wait_for_workers(self.server, len(self.workers))
        return self

    def __exit__(self, *exc: object) -> None:
        for worker in self.workers:
            worker.stop()
        self.server.stop()

    def cpu(self) -> tuple[float, float]:
        """CPU seconds so far of the API process and of the workers together."""
        return cpu_seconds(self.server.pid), sum(cpu_seconds(w.pid) for w in self.workers)


def _measure(
    ctx: Context, admin: str, label: str, workers: int, k: int, reps: int
) -> tuple[Point, dict[str, float]]:
    point = Point(label, k)
    cpu: dict[str, list[float]] = {"api": [], "workers": [], "postgres": []}
    with contextlib.ExitStack() as stack:
        url = stack.enter_context(postgres_database(admin, f"s9_{workers}"))
        migrate(url, ctx.workdir)
        deployment = stack.enter_context(Deployment(ctx, url, workers))
        ctx.stub.configure(LATENCY)
        for rep in range(reps):
            api_before, workers_before = deployment.cpu()
            pg_before = _postgres_cpu()
            asyncio.run(_burst(deployment.server, k, point, f"s9-{workers}-{rep}", limit_s=300))
            api_after, workers_after = deployment.cpu()
            cpu["api"].append((api_after - api_before) / k)
            cpu["workers"].append((workers_after - workers_before) / k)
            cpu["postgres"].append((_postgres_cpu() - pg_before) / k)
    return point, {name: median(values) * 1000 for name, values in cpu.items()}


def run(ctx: Context, peers_ready: dict[str, bool]) -> ScenarioResult:
    result = ScenarioResult(9, "scaleout", "Scale-out: workers on a queue")
    problems = [p for p in (ctx.postgres_problem, _redis_problem()) if p]
    if ctx.postgres is None or problems:
        why = "; ".join(problems or ["no PostgreSQL"])
        result.notes.append(f"Not run: needs PostgreSQL and Redis ({why}).")
        return result
    k = 10 if ctx.smoke else K
    counts = (1,) if ctx.smoke else WORKER_COUNTS
    reps = ctx.reps or (1 if ctx.smoke else 2)
    rows: list[tuple[str, int, Point, dict[str, float]]] = []
    if not ctx.smoke:  # the reference row, measured in scenario 2's smoke run already
        ctx.log(f"s9 in-process server K={k}")
        point, cpu = _measure(ctx, ctx.postgres, "in-process server", 0, k, reps)
        rows.append(("in-process server", 0, point, cpu))
    for workers in counts:
        label = f"1 API + {workers} worker{'s' if workers > 1 else ''}"
        ctx.log(f"s9 {label} K={k}")
        point, cpu = _measure(ctx, ctx.postgres, label, workers, k, reps)
        rows.append((label, workers, point, cpu))
    langgraph: Point | None = None
    peer = next((p for p in peer_envs.PEERS if p.name == "langgraph"), None)
    if peer is not None and peers_ready.get(peer.name) and not ctx.smoke:
        (langgraph,) = _driver(
            ctx, "LangGraph (ainvoke)", str(peer.python), peer.driver, [k], {k: reps}, 120.0
        )
    _tabulate(result, rows, langgraph, k, reps)
    path = ctx.chart("s9-scaleout")
    measured = [(w, p) for _, w, p, _ in rows if w and p.walls]
    if len(measured) > 1 and line_chart(
        path,
        f"Executions/s at K={k} (3 tasks at 200 ms, PostgreSQL)",
        "worker processes",
        "executions/s",
        {"queue workers": ([w for w, _ in measured], [p.rate for _, p in measured])},
        logx=False,
    ):
        result.charts.append(path.name)
    return result


def _tabulate(
    result: ScenarioResult,
    rows: list[tuple[str, int, Point, dict[str, float]]],
    langgraph: Point | None,
    k: int,
    reps: int,
) -> None:
    result.notes.append(
        f"K={k} concurrent executions of a {TASKS}-task linear workflow at "
        f"{int(LATENCY * 1000)} ms per model call (ideal wall {IDEAL:.1f} s), on PostgreSQL, "
        f"{reps} run(s) per row (wall and executions/s: median; p99 pools every execution). "
        f"Queue rows: one `crew-platform serve` with EXECUTOR=queue (it accepts and enqueues, "
        f"runs nothing) and N `crew-platform worker --concurrency {WORKER_CONCURRENCY}` on "
        f"Redis Streams, each process with {POOL_SIZE} PostgreSQL connections. The stub, "
        "PostgreSQL, Redis, the load generator and every process share the machine's 2 cores. "
        "CPU columns: milliseconds of CPU per execution of the API process, of all workers "
        "together, and of every PostgreSQL process."
    )
    table = []
    for label, _workers, point, cpu in rows:
        table.append(
            [
                label,
                fmt(point.wall, 2) if point.walls else "—",
                spread(point.walls) if point.walls else "—",
                fmt(point.rate, 1) if point.walls else "—",
                fmt(percentile(point.latencies, 99), 2) if point.latencies else "—",
                str(point.errors),
                fmt(cpu["api"], 2),
                fmt(cpu["workers"], 2),
                fmt(cpu["postgres"], 2),
                point.note,
            ]
        )
    if langgraph is not None:
        table.append(
            [
                langgraph.contender,
                fmt(langgraph.wall, 2) if langgraph.walls else "—",
                spread(langgraph.walls) if langgraph.walls else "—",
                fmt(langgraph.rate, 1) if langgraph.walls else "—",
                fmt(percentile(langgraph.latencies, 99), 2) if langgraph.latencies else "—",
                str(langgraph.errors),
                "—",
                "—",
                "—",
                langgraph.note,
            ]
        )
    result.tables.append(
        Table(
            "",
            [
                "contender",
                "wall s",
                "spread s",
                "executions/s",
                "p99 s",
                "errors",
                "API CPU ms/exec",
                "workers CPU ms/exec",
                "PostgreSQL CPU ms/exec",
                "note",
            ],
            table,
        )
    )
    by_workers = {w: p for _, w, p, _ in rows if w and p.walls}
    one, two = by_workers.get(1), by_workers.get(2)
    speedup = f"2 workers >= {SPEEDUP_TARGET}x one worker's executions/s"
    if one and two:
        ratio = two.rate / one.rate
        result.targets.append(
            Target(
                speedup,
                f"{ratio:.2f}x ({two.rate:.1f}/s vs {one.rate:.1f}/s)",
                ratio >= SPEEDUP_TARGET,
            )
        )
    else:
        result.targets.append(Target(speedup, "1 and 2 workers not both measured", None))
    versus = f"K={k}: executions/s >= {LANGGRAPH_TARGET}x LangGraph's"
    best = max(by_workers.items(), key=lambda item: item[1].rate, default=None)
    if best is None or langgraph is None or not langgraph.walls:
        result.targets.append(Target(versus, "ours or LangGraph not measured", None))
    else:
        workers, point = best
        ratio = point.rate / langgraph.rate
        result.targets.append(
            Target(
                versus,
                f"{ratio:.2f}x with {workers} worker(s) ({point.rate:.1f}/s vs LangGraph "
                f"{langgraph.rate:.1f}/s; errors {point.errors})",
                ratio >= LANGGRAPH_TARGET and point.errors == 0,
            )
        )
    result.raw = {
        "rows": [
            {"label": label, "workers": w, "point": p.__dict__, "cpu_ms": cpu}
            for label, w, p, cpu in rows
        ],
        "langgraph": langgraph.__dict__ if langgraph else None,
    }
