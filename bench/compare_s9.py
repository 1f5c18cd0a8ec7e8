"""Scenario 9 at one K, variants of the code back to back: interleaved runs, medians of the CPU
each kind of process spends per execution.

    .tools/bin/uv run --frozen --no-sync python -m bench.compare_s9 --k 300 --reps 4 \\
        base=/tmp/variants/base/src new=src

Each variant is a `src/` directory (e.g. `git archive <commit> src | tar -x -C DIR`) run as
scenario 9 runs it (one `crew-platform serve` with EXECUTOR=queue and `--workers` workers on
Redis Streams; `--workers 0`: the in-process server), on `PYTHONPATH`, on a fresh PostgreSQL
database, one deployment at a time, started afresh for each burst. After a warm-up burst of 20,
the bursts of K run A, B, A, B, ...; per burst: executions/s and the CPU per execution of the API
process, of the workers, of PostgreSQL and of Redis (every process of the machine with that
command: other work on the machine shows in those two), with the load average at the start.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
from dataclasses import dataclass, field
from pathlib import Path

from bench.common import (
    Context,
    Stub,
    median,
    migrate,
    postgres_database,
    temp_workdir,
    variant_paths,
)
from bench.s2_concurrency import LATENCY, Point, _burst
from bench.s9_scaleout import Deployment, processes_cpu

ADMIN_URL = os.environ.get("BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
COLUMNS = ("api", "workers", "postgres", "redis")


@dataclass
class Variant:
    name: str
    src: Path
    point: Point = field(init=False)
    cpu_ms: dict[str, list[float]] = field(default_factory=lambda: {c: [] for c in COLUMNS})
    loads: list[float] = field(default_factory=list)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--k", type=int, default=300)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--workers", type=int, default=1, help="0: the in-process server")
    parser.add_argument("variants", nargs="+", help="name=path/to/src")
    args = parser.parse_args()
    variants = [Variant(name, path) for name, path in variant_paths(args.variants)]
    workdir = temp_workdir()
    stub = Stub().start()
    ctx = Context(
        smoke=False, out_dir=workdir, stub=stub, workdir=workdir, postgres=ADMIN_URL,
        postgres_problem=None,
    )  # fmt: skip
    with contextlib.ExitStack() as stack:
        stack.callback(stub.stop)
        urls = []
        for variant in variants:
            url = stack.enter_context(postgres_database(ADMIN_URL, f"cmp9_{variant.name}"))
            migrate(url, workdir)
            urls.append(url)
            variant.point = Point(variant.name, args.k)
        stub.configure(LATENCY)
        for rep in range(args.reps):
            for variant, url in zip(variants, urls, strict=True):
                env = {"PYTHONPATH": str(variant.src)}
                with Deployment(ctx, url, args.workers, extra_env=env) as deployment:
                    server = deployment.server
                    asyncio.run(
                        _burst(server, 20, Point("warm-up", 20), f"w-{variant.name}-{rep}", 300)
                    )
                    variant.loads.append(os.getloadavg()[0])
                    before = (*deployment.cpu(), processes_cpu("postgres"), _redis_cpu())
                    tag = f"{variant.name}-{rep}"
                    asyncio.run(_burst(server, args.k, variant.point, tag, 300))
                    after = (*deployment.cpu(), processes_cpu("postgres"), _redis_cpu())
                for column, b, a in zip(COLUMNS, before, after, strict=True):
                    variant.cpu_ms[column].append((a - b) / args.k * 1000)
                print(_row(variant), flush=True)
    header = " | ".join(f"{c} CPU ms/exec" for c in COLUMNS)
    print(f"\n| variant | load | executions/s | {header} |")
    print("|---|---|---|" + "---|" * len(COLUMNS))
    for variant in variants:
        print(_row(variant, summary=True))


def _redis_cpu() -> float:
    return processes_cpu("redis-server")


def _row(variant: Variant, *, summary: bool = False) -> str:
    p = variant.point
    rates = [p.k / w for w in p.walls]

    def cell(values: list[float], digits: int) -> str:
        runs = ", ".join(f"{v:.{digits}f}" for v in values)
        return f"{runs} (**{median(values):.{digits}f}**)" if summary else runs

    cpu = " | ".join(cell(variant.cpu_ms[c], 2) for c in COLUMNS)
    return f"| {variant.name} | {cell(variant.loads, 1)} | {cell(rates, 1)} | {cpu} |" + (
        f" errors {p.errors} {p.note}" if p.errors or p.note else ""
    )


if __name__ == "__main__":
    main()
