"""Scenario 3: API throughput of one server process, rate limiting off.

wrk (Debian's package) drives the load when installed; the full run tries `apt-get install -y
wrk` once when it is missing and we are root; otherwise the httpx load generator
(bench/loadgen.py) in its own process does. Either way the load comes from a separate process.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import uuid
from typing import Any

import httpx

from bench.common import (
    Context,
    Server,
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

CONNECTIONS = 32
SEED_AGENTS = 20
POST_BODY = {
    "name": "load",
    "role": "Load tester",
    "goal": "Create agents quickly",
    "model": workload.MODEL,
}

_LUA_POST = """
counter = 0
request = function()
  counter = counter + 1
  local body = string.format(
    '{"name":"wrk-%s-%d","role":"Load tester","goal":"Create agents quickly","model":"%s"}',
    "TAG", counter, "MODEL")
  return wrk.format("POST", "/api/v1/agents/", {["Content-Type"]="application/json"}, body)
end
"""


def find_wrk(ctx: Context) -> str | None:
    found = shutil.which("wrk")
    if found or ctx.smoke:
        return found
    if hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("apt-get"):
        ctx.log("s3 wrk missing: trying apt-get install -y wrk")
        with contextlib.suppress(Exception):
            subprocess.run(
                ["apt-get", "install", "-y", "-q", "wrk"],
                capture_output=True,
                timeout=300,
                check=False,
            )
    return shutil.which("wrk")


def _ms(value: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", value).groups()  # type: ignore[union-attr]
    return float(number) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]


def run_wrk(
    wrk: str,
    url: str,
    seconds: int,
    ctx: Context,
    post: bool,
    headers: dict[str, str] | None = None,
) -> dict[str, Any]:
    args = [wrk, "-t1", f"-c{CONNECTIONS}", f"-d{seconds}s", "--latency", "--timeout", "10s"]
    for name, value in (headers or {}).items():
        args += ["-H", f"{name}: {value}"]
    if post:
        script = ctx.workdir / f"post-{uuid.uuid4().hex[:6]}.lua"
        script.write_text(
            _LUA_POST.replace("TAG", uuid.uuid4().hex[:8]).replace("MODEL", workload.MODEL)
        )
        args += ["-s", str(script)]
    done = subprocess.run(
        [*args, url], capture_output=True, text=True, timeout=seconds + 60, check=False
    )
    out = done.stdout
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    p50 = re.search(r"^\s+50%\s+(\S+)", out, re.M)
    p99 = re.search(r"^\s+99%\s+(\S+)", out, re.M)
    total = re.search(r"(\d+) requests in", out)
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if not (rps and p50 and p99 and total):
        raise RuntimeError(f"could not read wrk output: {out[-800:]} {done.stderr[-400:]}")
    err = int(bad.group(1)) if bad else 0
    if errors:
        err += sum(int(g) for g in errors.groups())
    return {
        "rps": float(rps.group(1)),
        "p50_ms": _ms(p50.group(1)),
        "p99_ms": _ms(p99.group(1)),
        "requests": int(total.group(1)),
        "errors": err,
    }


def run_httpx(
    url: str, seconds: int, post: bool, headers: dict[str, str] | None = None
) -> dict[str, Any]:
    config = {
        "url": url,
        "method": "POST" if post else "GET",
        "connections": CONNECTIONS,
        "seconds": seconds,
        "body": POST_BODY if post else None,
        "headers": headers or {},
    }
    done = subprocess.run(
        [sys.executable, "-m", "bench.loadgen", json.dumps(config)],
        capture_output=True,
        text=True,
        timeout=seconds + 120,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"loadgen failed: {done.stderr[-800:]}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


async def _seed(base_url: str) -> int:
    async with httpx.AsyncClient(base_url=base_url, timeout=60) as client:
        _, agent_ids = await create_workflow(client, SEED_AGENTS, "s3")
        return agent_ids[0]


def run(ctx: Context, peers_ready: dict[str, bool]) -> ScenarioResult:
    result = ScenarioResult(3, "throughput", "API throughput")
    wrk = find_wrk(ctx)
    seconds = 1 if ctx.smoke else 5
    reps = 1 if ctx.smoke else (ctx.reps or 3)
    tool = (
        f"wrk (1 thread, {CONNECTIONS} connections)"
        if wrk
        else f"the httpx load generator bench/loadgen.py ({CONNECTIONS} connections)"
    )
    result.notes.append(
        f"One `crew-platform serve` process, rate limiting off, logging at warning; load from "
        f"{tool} in its own process, {reps} run(s) of {seconds:g} s per endpoint (after a 1 s "
        f"warm-up in full runs). {SEED_AGENTS} agents in the table (the list returns "
        f"{SEED_AGENTS}). "
        "Table: medians over the runs, spread = min-max of requests/s. The load generator "
        "shares the 2 cores with the server."
    )
    if not wrk:
        result.notes.append(
            "wrk was not available: the Python load generator is itself a "
            "bottleneck, so these requests/s are a lower bound."
        )
    backends: list[tuple[str, str | None]] = [("SQLite", None)]
    if ctx.postgres and not ctx.smoke:
        backends.append(("PostgreSQL", ctx.postgres))
    rows = []
    raw: dict[str, Any] = {}
    by_id: dict[str, float] = {}
    for backend, admin in backends:
        with contextlib.ExitStack() as stack:
            url = (
                stack.enter_context(postgres_database(admin, "s3"))
                if admin
                else sqlite_url(ctx.workdir, "s3")
            )
            if admin:
                migrate(url, ctx.workdir)
            server = Server(url, ctx.stub, ctx.workdir).start()
            stack.callback(server.stop)
            agent_id = asyncio.run(_seed(server.base_url))
            endpoints = [
                ("GET /api/v1/agents/", f"{server.base_url}/api/v1/agents/", False),
                ("GET /api/v1/agents/{id}", f"{server.base_url}/api/v1/agents/{agent_id}", False),
                ("POST /api/v1/agents/", f"{server.base_url}/api/v1/agents/", True),
            ]
            for name, url_, post in endpoints:
                ctx.log(f"s3 {backend} {name}")
                runs = []
                try:
                    warmup = 0 if ctx.smoke else 1
                    for rep in range(reps + warmup):
                        length = 1 if rep < warmup else seconds
                        got = (
                            run_wrk(wrk, url_, length, ctx, post)
                            if wrk
                            else run_httpx(url_, length, post)
                        )
                        if rep >= warmup:
                            runs.append(got)
                except Exception as exc:
                    rows.append(
                        [backend, name, "—", "—", "—", "—", "—", f"failed: {str(exc)[:200]}"]
                    )
                    continue
                rps = [r["rps"] for r in runs]
                raw[f"{backend} {name}"] = runs
                if name == "GET /api/v1/agents/{id}":
                    by_id[backend] = median(rps)
                rows.append(
                    [
                        backend,
                        name,
                        fmt(median(rps), 0),
                        spread(rps),
                        fmt(median([r["p50_ms"] for r in runs]), 2),
                        fmt(median([r["p99_ms"] for r in runs]), 2),
                        str(sum(r["errors"] for r in runs)),
                        "",
                    ]
                )
    result.tables.append(
        Table(
            "",
            ["backend", "endpoint", "requests/s", "spread", "p50 ms", "p99 ms", "errors", "note"],
            rows,
        )
    )
    result.raw = {"runs": raw, "tool": tool}
    if by_id:
        text = "; ".join(f"{b}: {v:.0f}/s" for b, v in by_id.items())
        result.targets.append(
            Target(
                "GET /api/v1/agents/{id} >= 2,000 requests/s, one process",
                text,
                all(v >= 2000 for v in by_id.values()),
            )
        )
    return result
