"""Scenario 1 for variants of the code, interleaved: overhead and CPU per task.

    .tools/bin/uv run --frozen --no-sync python -m bench.compare_s1 --rounds 4 \\
        old=/tmp/variants/old new=/tmp/variants/new

Each variant is a directory holding that commit's `src/` and `bench/` (`git archive <commit>
src bench | tar -x -C DIR`): its engine and its migrations are used, and its own scenario-1 code
runs the in-process engine (the engine's API changed between commits). Per round, in an order
rotated per round, every variant runs the scenario's linear chain of N tasks (`--n`, default 50)
at the stub latency given (`--latency`, default 0):

- engine in-process on SQLite: the variant's `_engine_runs` in a process of its own;
- HTTP end to end on SQLite, and on PostgreSQL unless `--no-postgres`: the variant's
  `crew-platform serve` on a fresh database, driven by this scenario's `_http_runs`.

`--no-in-process` and `--no-postgres` leave those ways out.

A run is one warm-up and `--reps` counted executions, after an execution of 5 tasks that warms
the process up (imports, a first request's caches) outside the figures. "CPU/task" is the CPU
time (user + system) of the process running the engine (the bench process in-process, the
server over HTTP) from the first execution to the last, warm-up included, divided by the tasks
run: it counts each execution's start and end too (1/N of them per task), and it holds up under
load far better than walls do. "overhead/task" is the scenario's (wall - N x latency) / N,
median of the counted executions. Prints the per-round figures, then medians with the load average.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ADMIN_URL = os.environ.get("BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


class _TimedStub:
    """Stands in for the scenario's stub handle: the scenario configures the stub right before
    its first execution and counts the stub's requests right after its last, so the CPU time
    of `pid` between those two calls is the CPU time of the executions (warm-up included)."""

    def __init__(self, base_url: str, pid: int | None = None) -> None:
        self.base_url = base_url
        self.admin = base_url.removesuffix("/v1")
        self.pid = pid
        self.cpu: list[float] = []

    def _cpu(self) -> float:
        if self.pid is None:
            return time.process_time()
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def configure(self, latency: float, record: bool = False) -> None:
        import httpx

        from bench.peers import workload

        httpx.post(self.admin + "/_reset", timeout=10).raise_for_status()
        models = [workload.MODEL, "llama-4-maverick-17b-128e-instruct"]
        body = {"latency": latency, "record_requests": record, "models": models}
        httpx.post(self.admin + "/_config", timeout=10, json=body).raise_for_status()
        self.cpu = [self._cpu()]

    def request_count(self) -> int:
        import httpx

        self.cpu.append(self._cpu())
        return len(httpx.get(self.admin + "/_requests", timeout=30).json())


@dataclass
class _Ctx:
    """The part of the scenario's `Context` its run functions use."""

    stub: _TimedStub


def _measure(m: Any, stub: _TimedStub, n: int) -> dict[str, Any]:
    tasks = m.runs_counted * n
    if len(m.walls) == 0 or len(stub.cpu) != 2:
        raise RuntimeError(f"no run measured: {m.note}")
    if m.requests != tasks:
        raise RuntimeError(f"{m.requests} model requests for {tasks} tasks")
    return {
        "overhead_ms": statistics.median(m.overheads_ms()),
        "cpu_ms": (stub.cpu[1] - stub.cpu[0]) / tasks * 1000,
    }


def child(config: dict[str, Any]) -> dict[str, Any]:
    """The in-process run, in a process whose `bench` and `crew_platform` are the variant's."""
    import asyncio

    from bench.s1_overhead import Measured, _engine_runs

    stub = _TimedStub(config["stub"])
    ctx = _Ctx(stub)
    warm = Measured("warm-up", 5, config["latency"])
    asyncio.run(_engine_runs(config["warm_url"], warm, 1, 1, ctx))  # type: ignore[arg-type]
    m = Measured("engine", config["n"], config["latency"])
    asyncio.run(_engine_runs(config["url"], m, 1, config["reps"], ctx))  # type: ignore[arg-type]
    return _measure(m, stub, config["n"])


@dataclass
class Variant:
    name: str
    root: Path
    figures: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "PYTHONPATH": f"{self.root / 'src'}{os.pathsep}{self.root}"}


def _migrated(variant: Variant, url: str, workdir: Path) -> str:
    """The database migrated by the variant's own code (its migrations, not ours)."""
    from bench.common import migrate

    migrate(url, workdir, env=variant.env)
    return url


def _sqlite(variant: Variant, workdir: Path, name: str) -> str:
    path = workdir / f"{variant.name}-{name}-{time.monotonic_ns()}.db"
    return _migrated(variant, f"sqlite+aiosqlite:///{path}", workdir)


def _in_process(variant: Variant, stub: Any, workdir: Path, args: Any) -> dict[str, Any]:
    config = {
        "stub": stub.base_url,
        "url": _sqlite(variant, workdir, "engine"),
        "warm_url": _sqlite(variant, workdir, "warm"),
        "n": args.n,
        "latency": args.latency,
        "reps": args.reps,
    }
    done = subprocess.run(
        [sys.executable, __file__, "--child", json.dumps(config)],
        env=variant.env,
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{variant.name}: in-process run failed: {done.stderr[-2000:]}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def _over_http(variant: Variant, stub: Any, url: str, workdir: Path, args: Any) -> dict[str, Any]:
    import asyncio

    from bench.common import Server
    from bench.s1_overhead import Measured, _http_runs

    server = Server(url, stub, workdir, extra_env={"PYTHONPATH": str(variant.root / "src")})
    server.start()
    try:
        # A first execution warms the server (imports and caches of a first request) outside
        # the figures.
        warm = Measured("warm-up", 5, args.latency)
        tag = f"{variant.name}-{time.monotonic_ns()}"
        asyncio.run(_http_runs(server.base_url, warm, 0, 1, _Ctx(stub), f"warm-{tag}"))  # type: ignore[arg-type]
        timed = _TimedStub(stub.base_url, server.pid)
        m = Measured("http", args.n, args.latency)
        asyncio.run(_http_runs(server.base_url, m, 1, args.reps, _Ctx(timed), tag))  # type: ignore[arg-type]
        return _measure(m, timed, args.n)
    finally:
        server.stop()


def main() -> None:
    import contextlib

    from bench.common import Stub, median, postgres_database, temp_workdir, variant_paths

    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--n", type=int, default=50)
    parser.add_argument("--latency", type=float, default=0.0)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--no-postgres", action="store_true")
    parser.add_argument("--no-in-process", action="store_true")
    parser.add_argument("variants", nargs="+", help="name=DIR holding src/ and bench/")
    args = parser.parse_args()
    variants = [Variant(name, path) for name, path in variant_paths(args.variants)]
    workdir = temp_workdir()
    stub = Stub().start()
    ways = (
        ([] if args.no_in_process else ["in-process SQLite"])
        + ["HTTP SQLite"]
        + ([] if args.no_postgres else ["HTTP PostgreSQL"])
    )
    loads: list[float] = []
    with contextlib.ExitStack() as stack:
        stack.callback(stub.stop)
        for number in range(args.rounds):
            loads.append(os.getloadavg()[0])
            shift = number % len(variants)
            for variant in variants[shift:] + variants[:shift]:
                for way in ways:
                    if way == "in-process SQLite":
                        got = _in_process(variant, stub, workdir, args)
                    elif way == "HTTP SQLite":
                        url = _sqlite(variant, workdir, "http")
                        got = _over_http(variant, stub, url, workdir, args)
                    else:
                        name = f"s1_{variant.name}_{number}"
                        with postgres_database(ADMIN_URL, name) as url:
                            _migrated(variant, url, workdir)
                            got = _over_http(variant, stub, url, workdir, args)
                    variant.figures.setdefault(way, []).append(got)
                    print(
                        f"round {number + 1} (load {os.getloadavg()[0]:.1f}) {variant.name} "
                        f"{way}: overhead/task {got['overhead_ms']:.2f} ms, "
                        f"CPU/task {got['cpu_ms']:.2f} ms",
                        flush=True,
                    )
    print(
        f"\nN={args.n}, stub latency {args.latency * 1000:.0f} ms, {args.rounds} rounds of "
        f"1 + {args.reps} executions, load average {min(loads):.1f}-{max(loads):.1f}"
    )
    print("| way | variant | CPU/task ms (median; runs) | overhead/task ms (median; runs) |")
    print("|---|---|---|---|")
    for way in ways:
        for variant in variants:
            rows = variant.figures.get(way, [])

            def cell(key: str, rows: list[dict[str, Any]] = rows) -> str:
                values = [r[key] for r in rows]
                runs = ", ".join(f"{v:.2f}" for v in values)
                return f"**{median(values):.2f}** ({runs})"

            print(f"| {way} | {variant.name} | {cell('cpu_ms')} | {cell('overhead_ms')} |")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        print(json.dumps(child(json.loads(sys.argv[2]))), flush=True)
    else:
        main()
