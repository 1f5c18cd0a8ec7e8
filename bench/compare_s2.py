"""Scenario 2 at one K, variants of the code back to back: interleaved runs, medians.

    .tools/bin/uv run --frozen --no-sync python -m bench.compare_s2 --k 200 --reps 3 \\
        base=/tmp/variants/base/src new=src

Each variant is a `src/` directory (e.g. `git archive <commit> src | tar -x -C DIR`) served by
its own `crew-platform serve` (on `PYTHONPATH`) on its own fresh PostgreSQL database, one server
at a time, started for each burst. After a warm-up burst of 20 on each server, the bursts of K
run A, B, A, B, ...; per burst: the slowest POST, the peak
of model calls in flight at the stub, executions/s and the server's CPU time per execution
(user + system during the burst, its polling included), with the load average at the start.
`--langgraph`: LangGraph's driver runs the same K after each round (when its virtualenv exists),
for executions/s in the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
from dataclasses import dataclass, field
from pathlib import Path

from bench import peer_envs
from bench.common import (
    Server,
    Stub,
    cpu_seconds,
    median,
    migrate,
    postgres_database,
    temp_workdir,
    variant_paths,
)
from bench.s2_concurrency import LATENCY, SERVER_ENV, TASKS, Point, _burst

ADMIN_URL = os.environ.get("BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


@dataclass
class Variant:
    name: str
    src: Path
    point: Point = field(init=False)
    cpu_ms: list[float] = field(default_factory=list)
    loads: list[float] = field(default_factory=list)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--k", type=int, default=200)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--langgraph", action="store_true")
    parser.add_argument("variants", nargs="+", help="name=path/to/src")
    args = parser.parse_args()
    variants = [Variant(name, path) for name, path in variant_paths(args.variants)]
    workdir = temp_workdir()
    stub = Stub().start()
    with contextlib.ExitStack() as stack:
        stack.callback(stub.stop)
        urls = []
        for variant in variants:
            url = stack.enter_context(postgres_database(ADMIN_URL, f"cmp_{variant.name}"))
            migrate(url, workdir)
            urls.append(url)
            variant.point = Point(variant.name, args.k)
        stub.configure(LATENCY)
        langgraph: list[float] = []
        for rep in range(args.reps):
            for variant, url in zip(variants, urls, strict=True):
                # One server at a time, started afresh for each burst (after a warm-up burst of
                # 20): the machine's PostgreSQL (max_connections 100) is shared with other
                # work, and two pools of 40 at once ran it out of connections.
                env = SERVER_ENV | {"PYTHONPATH": str(variant.src)}
                server = Server(url, stub, workdir, extra_env=env).start()
                try:
                    asyncio.run(
                        _burst(server, 20, Point("warm-up", 20), f"w-{variant.name}-{rep}", 300)
                    )
                    variant.loads.append(os.getloadavg()[0])
                    stub.reset_peak()
                    before = cpu_seconds(server.pid)
                    tag = f"{variant.name}-{rep}"
                    asyncio.run(_burst(server, args.k, variant.point, tag, 300))
                    variant.cpu_ms.append((cpu_seconds(server.pid) - before) / args.k * 1000)
                    variant.point.peaks_in_flight.append(stub.peak_in_flight())
                finally:
                    server.stop()
                print(_row(variant), flush=True)
            if args.langgraph and peer_envs.LANGGRAPH.installed():
                peer = _langgraph(stub, args.k)
                print(f"| LangGraph | {os.getloadavg()[0]:.1f} | executions/s {peer} |", flush=True)
                langgraph.append(peer)
    print("\n| variant | load | slowest POST s | peak in flight | executions/s | cpu/exec ms |")
    print("|---|---|---|---|---|---|")
    for variant in variants:
        print(_row(variant, summary=True))
    if langgraph:
        runs = ", ".join(f"{r:.1f}" for r in langgraph)
        print(f"| LangGraph | | | | {runs} (**{median(langgraph):.1f}**) | |")


def _langgraph(stub: Stub, k: int) -> float:
    """LangGraph's executions/s for one burst of `k` (its scenario-2 driver, same stub)."""
    stub.configure(LATENCY)
    config = {
        "mode": "concurrency",
        "base_url": stub.base_url,
        "n": TASKS,
        "ks": [k],
        "reps": {str(k): 1},
        "budget_s": 300,
    }
    out = peer_envs.run_driver(
        str(peer_envs.LANGGRAPH.python), peer_envs.LANGGRAPH.driver, config, timeout=900
    )
    (item,) = out["results"]
    return float(k / item["walls"][0])


def _row(variant: Variant, *, summary: bool = False) -> str:
    p = variant.point
    rates = [p.k / w for w in p.walls]

    def cell(values: list[float], digits: int) -> str:
        runs = ", ".join(f"{v:.{digits}f}" for v in values)
        return f"{runs} (**{median(values):.{digits}f}**)" if summary else runs

    return (
        f"| {variant.name} | {cell(variant.loads, 1)} | {cell(p.slowest_posts, 2)} "
        f"| {cell([float(x) for x in p.peaks_in_flight], 0)} | {cell(rates, 1)} "
        f"| {cell(variant.cpu_ms, 1)} |"
        + (f" errors {p.errors} lost {p.lost_events} {p.note}" if p.errors or p.note else "")
    )


if __name__ == "__main__":
    main()
