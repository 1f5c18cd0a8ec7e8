"""Scenario 6 for variants of the code, interleaved with the peers: overhead per tool round trip.

    .tools/bin/uv run --frozen --no-sync python -m bench.compare_s6 --rounds 7 \\
        base=/tmp/variants/base/src new=src

Each variant is a `src/` directory served by its own `crew-platform serve` (on `PYTHONPATH`) on
its own SQLite file (`--postgres`: a fresh PostgreSQL database instead). Each round runs every
contender once after a warm-up run, in an order rotated per round, at the stub latency given
(`--latency`, default 0); the stub's recorded requests are checked after each turn as in the
scenario. LangGraph and CrewAI run too when their virtualenvs exist (`make bench` makes them).
Prints the per-round figures, then medians with the load average. For our variants also the
server's CPU time (user + system) per tool round trip: of the whole turn (warm-up run included,
tasks and executions around the calls too) divided by its 20 round trips; steadier than walls
on a busy machine.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
from collections.abc import Callable
from typing import Any

from bench import peer_envs
from bench.common import (
    Server,
    Stub,
    cpu_seconds,
    median,
    migrate,
    postgres_database,
    sqlite_url,
    temp_workdir,
    variant_paths,
)
from bench.s6_tools import (
    PEER_DRIVERS,
    Measured,
    _create,
    _http_round,
    check_requests,
    stub_script,
)

ROUND_TRIPS_PER_TURN = 2 * 5 * 2
"""A turn is a warm-up run and a run, of 5 tasks with two tool calls each."""
ADMIN_URL = os.environ.get("BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--latency", type=float, default=0.0)
    parser.add_argument("--postgres", action="store_true")
    parser.add_argument("--no-peers", action="store_true")
    parser.add_argument("variants", nargs="+", help="name=path/to/src")
    args = parser.parse_args()
    workdir = temp_workdir()
    stub = Stub().start()
    contenders: list[tuple[str, Callable[[int, int], list[float]]]] = []
    loads: list[float] = []
    pids: dict[str, int] = {}
    cpu_ms: dict[str, list[float]] = {}
    with contextlib.ExitStack() as stack:
        stack.callback(stub.stop)
        for name, src in variant_paths(args.variants):
            if args.postgres:
                url = stack.enter_context(postgres_database(ADMIN_URL, f"cmp6_{name}"))
            else:
                url = sqlite_url(workdir, f"cmp6-{name}")
            migrate(url, workdir)
            env = {"PYTHONPATH": str(src)}
            server = Server(url, stub, workdir, extra_env=env).start()
            stack.callback(server.stop)
            pids[name] = server.pid
            workflow_id = asyncio.run(_create(server.base_url, f"tools-{name}"))

            def http(runs: int, warm: int, base: str = server.base_url, wf: int = workflow_id):
                return asyncio.run(_http_round(base, wf, runs, warm))

            contenders.append((name, http))
        for peer in () if args.no_peers else peer_envs.PEERS:
            if not peer.installed():
                continue

            def driver(runs: int, warm: int, peer: Any = peer) -> list[float]:
                config = {"base_url": stub.base_url, "n": 5, "runs": runs, "warmup": warm}
                out = peer_envs.run_driver(
                    str(peer.python), PEER_DRIVERS[peer.name], config, timeout=600
                )
                return list(out["walls"])

            contenders.append((peer.label, driver))
        measured = {label: Measured(label, args.latency) for label, _ in contenders}
        for number in range(args.rounds):
            loads.append(os.getloadavg()[0])
            shift = number % len(contenders)
            for label, one_round in contenders[shift:] + contenders[:shift]:
                m = measured[label]
                stub.configure(args.latency, record=True)
                stub.script(stub_script(2))
                before = cpu_seconds(pids[label]) if label in pids else 0.0
                m.walls += one_round(1, 1)
                if label in pids:
                    spent = cpu_seconds(pids[label]) - before
                    cpu_ms.setdefault(label, []).append(spent / ROUND_TRIPS_PER_TURN * 1000)
                check_requests(stub, 2, args.latency, m)
            print(
                f"round {number + 1} (load {loads[-1]:.1f}): "
                + ", ".join(
                    f"{label} {(m.walls[-1] - m.model_time) / 10 * 1000:.2f}"
                    for label, m in measured.items()
                ),
                flush=True,
            )
    print(f"\nload average {min(loads):.1f}-{max(loads):.1f}, {args.rounds} rounds")
    print(
        "| contender | overhead/tool round trip ms (median) | tool turn ms | runs "
        "| server CPU/round trip ms (median; runs) |"
    )
    print("|---|---|---|---|---|")
    for label, m in measured.items():
        runs = ", ".join(f"{(w - m.model_time) / 10 * 1000:.1f}" for w in m.walls)
        cpu = cpu_ms.get(label)
        cpu_cell = f"**{median(cpu):.2f}** ({', '.join(f'{c:.2f}' for c in cpu)})" if cpu else "—"
        print(
            f"| {label} | **{m.per_round_trip_ms:.2f}** | {median(m.tool_turns_ms):.2f} | {runs} "
            f"| {cpu_cell} |"
        )


if __name__ == "__main__":
    main()
