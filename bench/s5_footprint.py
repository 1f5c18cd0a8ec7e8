"""Scenario 5: footprint of one server process.

Start-up: from spawning `crew-platform serve` (already migrated database) to the first 200 on
GET /api/v1/agents/. Idle RSS: after start-up, 20 requests and 1 s of quiet. RSS per 1000
concurrent executions: K executions (3 tasks, 200 ms per call) fired at once, the process's
peak RSS (VmHWM, reset first) minus its idle RSS, scaled to 1000.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

import httpx

from bench.common import (
    Context,
    Server,
    fmt,
    median,
    migrate,
    postgres_database,
    spread,
    sqlite_url,
)
from bench.report import ScenarioResult, Table, Target
from bench.s2_concurrency import LATENCY, Point, _burst


def _idle(server: Server) -> float:
    with httpx.Client(base_url=server.base_url, timeout=30) as client:
        for _ in range(20):
            client.get("/api/v1/agents/").raise_for_status()
    time.sleep(1.0)
    return server.rss_mb()


def run(ctx: Context, peers_ready: dict[str, bool]) -> ScenarioResult:
    result = ScenarioResult(5, "footprint", "Footprint")
    starts = 1 if ctx.smoke else (ctx.reps or 3)
    k = 10 if ctx.smoke else 1000
    result.notes.append(
        f"Start-up and idle RSS: {starts} start(s) per backend (median, spread min-max). RSS per "
        f"1000 concurrent executions: K = {k} executions of the 3-task workflow at "
        f"{int(LATENCY * 1000)} ms, (peak RSS - idle RSS) x 1000 / K."
    )
    backends: list[tuple[str, str | None]] = [("SQLite", None)]
    if ctx.postgres and not ctx.smoke:
        backends.append(("PostgreSQL", ctx.postgres))
    rows = []
    startup_all: list[float] = []
    idle_all: list[float] = []
    raw = {}
    for backend, admin in backends:
        with contextlib.ExitStack() as stack:
            url = (
                stack.enter_context(postgres_database(admin, "s5"))
                if admin
                else sqlite_url(ctx.workdir, "s5")
            )
            if admin:
                migrate(url, ctx.workdir)
            startups: list[float] = []
            idles: list[float] = []
            per_1000: float | None = None
            peak = None
            note = ""
            for attempt in range(starts):
                ctx.log(f"s5 {backend} start {attempt + 1}/{starts}")
                server = Server(url, ctx.stub, ctx.workdir).start()
                try:
                    assert server.startup_seconds is not None
                    startups.append(server.startup_seconds)
                    idles.append(_idle(server))
                    if attempt == starts - 1:
                        ctx.stub.configure(LATENCY)
                        server.reset_peak()
                        point = Point("footprint", k)
                        asyncio.run(_burst(server, k, point, f"s5-{backend}", limit_s=300))
                        peak = server.peak_rss_mb()
                        per_1000 = (peak - idles[-1]) * 1000 / k
                        if point.errors or point.note:
                            note = f"errors {point.errors} {point.note}".strip()
                finally:
                    server.stop()
            startup_all += startups
            idle_all += idles
            raw[backend] = {
                "startups": startups,
                "idle_mb": idles,
                "peak_mb": peak,
                "per_1000_mb": per_1000,
            }
            rows.append(
                [
                    backend,
                    fmt(median(startups), 2),
                    spread(startups),
                    fmt(median(idles), 1),
                    spread(idles),
                    fmt(peak, 1),
                    fmt(per_1000, 1),
                    note,
                ]
            )
    result.tables.append(
        Table(
            "",
            [
                "backend",
                "start-up s",
                "spread s",
                "idle RSS MB",
                "spread MB",
                f"peak RSS at K={k} MB",
                "RSS per 1000 executions MB",
                "note",
            ],
            rows,
        )
    )
    result.raw = raw
    if startup_all:
        worst = max(median(r["startups"]) for r in raw.values())
        result.targets.append(
            Target("start-up under 2 s", f"{worst:.2f} s (slowest backend)", worst < 2.0)
        )
        idle = max(median(r["idle_mb"]) for r in raw.values())
        result.targets.append(
            Target("idle RSS under 150 MB", f"{idle:.0f} MB (largest)", idle < 150)
        )
    return result
