"""What an event crossing processes on the Redis bus costs, variants of the code interleaved.

    .tools/bin/uv run --frozen --no-sync python -m bench.bus_cost --reps 4 \\
        base=/tmp/variants/base/src new=src

For each variant (a `src/` directory on `PYTHONPATH`), two processes on the machine's Redis: a
publisher (a queue worker's control-only bus) sends `--events` events at about 1,600 a second
(16 every 10 ms, 7 in 10 of them streamed chunks: scenario 9's mix and rate), and a reader (an
API process's bus with its WebSocket hub and no client) receives them. Each reports its CPU time
(user + system) per event; medians over the runs, with the load average at each run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from typing import Any

REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
PER_TICK = 16
TICK_SECONDS = 0.01


async def _read(prefix: str, total: int) -> None:
    from crew_platform.events.bus import RedisBus
    from crew_platform.events.types import Event
    from crew_platform.realtime.hub import Hub

    bus = RedisBus(REDIS_URL, f"{prefix}:events", control_channel=f"{prefix}:control")
    hub = Hub(bus, 100)
    hub.start()
    received = 0
    done = asyncio.Event()

    def count(*_: Any) -> bool:
        nonlocal received
        received += 1
        if received >= total:
            done.set()
        return False

    def given(_event: Event) -> None:
        count()

    try:  # counted as offered, wanted by no one: the reader decodes what the hub asks for
        bus.subscribe(given, wants=count)
    except TypeError:  # code from before listeners said what they want: every event decoded
        bus.subscribe(given)
    await bus.start()
    print("ready", flush=True)
    began = time.process_time()
    await asyncio.wait_for(done.wait(), 300)
    print(json.dumps({"cpu": time.process_time() - began}), flush=True)
    await bus.stop()


async def _publish(prefix: str, total: int) -> None:
    from crew_platform.events.bus import RedisBus
    from crew_platform.events.types import Event, EventType

    bus = RedisBus(
        REDIS_URL, f"{prefix}:events", control_channel=f"{prefix}:control", control_only=True
    )
    await bus.start()
    began = time.process_time()
    for sent in range(total):
        chunk = sent % 10 < 7
        await bus.publish(
            Event(
                EventType.TASK_OUTPUT_CHUNK if chunk else EventType.TASK_COMPLETED,
                workflow_id=sent % 50,
                execution_id=sent % 1000,
                task_id=3,
                agent_id=2,
                seq=None if chunk else sent,
                data={"chunk": "four words of text"} if chunk else {"output": "x" * 120},
            )
        )
        if sent % PER_TICK == PER_TICK - 1:
            await asyncio.sleep(TICK_SECONDS)
    await asyncio.sleep(1.0)  # the outbox sends what is left
    print(json.dumps({"cpu": time.process_time() - began}), flush=True)
    await bus.stop()


def _once(src: str, total: int) -> tuple[float, float]:
    """CPU microseconds per event of the publisher and of the reader."""
    prefix = f"bench-bus-{uuid.uuid4().hex[:8]}"
    env = dict(os.environ, PYTHONPATH=src)
    command = [sys.executable, "-m", "bench.bus_cost"]
    reader = subprocess.Popen(
        [*command, "--role", "reader", "--prefix", prefix, "--events", str(total)],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert reader.stdout is not None
    try:
        if reader.stdout.readline().strip() != "ready":
            raise RuntimeError("the reader did not start")
        published = subprocess.run(
            [*command, "--role", "publisher", "--prefix", prefix, "--events", str(total)],
            env=env,
            stdout=subprocess.PIPE,
            text=True,
            check=True,
            timeout=600,
        )
        read = json.loads(reader.stdout.readline())
    finally:
        reader.wait(timeout=60)
    publish = json.loads(published.stdout.strip().splitlines()[-1])
    return publish["cpu"] / total * 1e6, read["cpu"] / total * 1e6


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reps", type=int, default=4)
    parser.add_argument("--events", type=int, default=16_000)
    parser.add_argument("--role", choices=("reader", "publisher"), help=argparse.SUPPRESS)
    parser.add_argument("--prefix", help=argparse.SUPPRESS)
    parser.add_argument("variants", nargs="*", help="name=path/to/src")
    args = parser.parse_args()
    if args.role == "reader":
        asyncio.run(_read(args.prefix, args.events))
        return
    if args.role == "publisher":
        asyncio.run(_publish(args.prefix, args.events))
        return
    variants = dict(v.split("=", 1) for v in args.variants)
    runs: dict[str, dict[str, list[float]]] = {
        name: {"publisher": [], "reader": [], "load": []} for name in variants
    }
    for rep in range(args.reps):
        for name, src in variants.items():
            load = os.getloadavg()[0]
            publisher, reader = _once(src, args.events)
            for key, value in (("publisher", publisher), ("reader", reader), ("load", load)):
                runs[name][key].append(value)
            print(
                f"{name} run {rep + 1}: load {load:.1f}, publisher {publisher:.1f} us/event, "
                f"reader {reader:.1f} us/event",
                flush=True,
            )
    print("\n| variant | load | publisher CPU us/event | reader CPU us/event |")
    print("|---|---|---|---|")
    for name, values in runs.items():
        cells = [
            ", ".join(f"{v:.1f}" for v in values[key])
            + f" (**{statistics.median(values[key]):.1f}**)"
            for key in ("load", "publisher", "reader")
        ]
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
