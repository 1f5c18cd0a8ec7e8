"""Scenario 4: event latency and fan-out over the WebSocket endpoint.

S subscribers (1, 100, 1000) connect to ws://host/ws/, each sends
{"type": "subscribe_workflow", "workflow_id": W} and waits for "subscribed". Then executions of
a 5-task workflow run (stub latency 50 ms); every `task_completed` message a subscriber receives
gives one latency sample: arrival time - the event's `timestamp` (set when the engine records
the event, before its transaction commits). All subscribers live in the benchmark's process
(one asyncio loop), separate from the server. Where /ws/ is not served the scenario reports
"not available" instead of failing.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from typing import Any

import httpx

from bench.common import (
    Context,
    Server,
    create_workflow,
    fmt,
    parse_ts,
    percentile,
    sqlite_url,
)
from bench.report import ScenarioResult, Table, Target, line_chart

TASKS = 5
LATENCY = 0.05


class NotAvailable(Exception):
    pass


async def _probe(ws_url: str) -> None:
    from websockets.asyncio.client import connect
    from websockets.exceptions import InvalidStatus

    try:
        async with connect(ws_url, open_timeout=10):
            return
    except InvalidStatus as exc:
        raise NotAvailable(f"HTTP {exc.response.status_code} on /ws/") from exc
    except OSError as exc:
        raise NotAvailable(f"{type(exc).__name__}: {exc}") from exc


async def _fanout(server: Server, subscribers: int, runs: int, ctx: Context) -> dict[str, Any]:
    from websockets.asyncio.client import connect

    ws_url = server.base_url.replace("http://", "ws://") + "/ws/"
    async with httpx.AsyncClient(base_url=server.base_url, timeout=120) as client:
        workflow_id, _ = await create_workflow(client, TASKS, f"s4-{subscribers}")
        samples: list[float] = []
        finals = asyncio.Queue[int]()
        sockets: list[Any] = []
        try:
            for start in range(0, subscribers, 100):
                batch = await asyncio.gather(
                    *(
                        connect(ws_url, open_timeout=30, max_queue=None, ping_interval=None)
                        for _ in range(min(100, subscribers - start))
                    )
                )
                sockets.extend(batch)

            async def subscribe(ws: Any) -> None:
                await ws.send(
                    json.dumps({"type": "subscribe_workflow", "workflow_id": workflow_id})
                )
                while True:
                    message = json.loads(await asyncio.wait_for(ws.recv(), 30))
                    if message.get("type") == "subscribed":
                        return
                    if message.get("type") == "error":
                        raise RuntimeError(f"subscribe refused: {message}")

            await asyncio.gather(*(subscribe(ws) for ws in sockets))

            async def reader(ws: Any) -> None:
                with contextlib.suppress(Exception):
                    async for raw in ws:
                        arrived = time.time()
                        message = json.loads(raw)
                        kind = message.get("type")
                        if kind == "task_completed" and message.get("timestamp"):
                            samples.append(arrived - parse_ts(message["timestamp"]))
                        elif kind in ("workflow_completed", "workflow_failed"):
                            finals.put_nowait(1)

            readers = [asyncio.create_task(reader(ws)) for ws in sockets]
            try:
                for _ in range(runs):
                    response = await client.post(
                        f"/api/v1/workflows/{workflow_id}/execute", json={}
                    )
                    response.raise_for_status()
                    got = 0
                    deadline = time.monotonic() + 60
                    while got < subscribers and time.monotonic() < deadline:
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(finals.get(), 1)
                            got += 1
            finally:
                for task in readers:
                    task.cancel()
                await asyncio.gather(*readers, return_exceptions=True)
        finally:
            await asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True)
    expected = subscribers * TASKS * runs
    return {"samples": samples, "expected": expected, "received": len(samples)}


def run(ctx: Context, peers_ready: dict[str, bool]) -> ScenarioResult:
    result = ScenarioResult(4, "events", "Event latency and fan-out")
    sizes = [1] if ctx.smoke else [1, 100, 1000]
    runs = 1 if ctx.smoke else (ctx.reps or 3)
    result.notes.append(
        f"{runs} execution(s) of a {TASKS}-task workflow per size (stub latency "
        f"{int(LATENCY * 1000)} ms), server on SQLite; latency = arrival of `task_completed` at a "
        "subscriber - the event's `timestamp`. All subscribers share one client process, so "
        "at 1000 the client's own work is part of the figure."
    )
    rows: list[list[str]] = []
    raw: dict[str, Any] = {}
    p99_at: dict[int, float] = {}
    p50_at: dict[int, float] = {}
    with contextlib.ExitStack() as stack:
        url = sqlite_url(ctx.workdir, "s4")
        server = Server(url, ctx.stub, ctx.workdir).start()
        stack.callback(server.stop)
        ctx.stub.configure(LATENCY)
        ws_url = server.base_url.replace("http://", "ws://") + "/ws/"
        try:
            asyncio.run(_probe(ws_url))
        except NotAvailable as exc:
            result.notes.append(
                f"**Not available:** the server does not serve the WebSocket "
                f"endpoint yet ({exc}); nothing was measured."
            )
            for size in sizes:
                rows.append([str(size), "0", "0", "—", "—", "—", f"not available ({exc})"])
            result.tables.append(
                Table(
                    "",
                    [
                        "subscribers",
                        "deliveries expected",
                        "received",
                        "p50 ms",
                        "p99 ms",
                        "max ms",
                        "note",
                    ],
                    rows,
                )
            )
            result.targets.append(
                Target(
                    "event delivery p99 < 20 ms with 100 subscribers",
                    f"not available ({exc})",
                    None,
                )
            )
            result.raw = {"available": False, "reason": str(exc)}
            return result
        for size in sizes:
            ctx.log(f"s4 {size} subscriber(s)")
            try:
                got = asyncio.run(_fanout(server, size, runs, ctx))
            except Exception as exc:
                rows.append(
                    [
                        str(size),
                        "—",
                        "—",
                        "—",
                        "—",
                        "—",
                        f"failed: {type(exc).__name__}: {str(exc)[:200]}",
                    ]
                )
                continue
            samples = got["samples"]
            raw[str(size)] = {k: v for k, v in got.items() if k != "samples"}
            p50 = percentile(samples, 50) * 1000
            p99 = percentile(samples, 99) * 1000
            p50_at[size], p99_at[size] = p50, p99
            rows.append(
                [
                    str(size),
                    str(got["expected"]),
                    str(got["received"]),
                    fmt(p50, 2),
                    fmt(p99, 2),
                    fmt(max(samples) * 1000 if samples else None, 2),
                    "",
                ]
            )
    result.tables.append(
        Table(
            "",
            [
                "subscribers",
                "deliveries expected",
                "received",
                "p50 ms",
                "p99 ms",
                "max ms",
                "note",
            ],
            rows,
        )
    )
    if len(p99_at) > 1:
        path = ctx.chart("s4-event-latency")
        xs = sorted(p99_at)
        if line_chart(
            path,
            "task_completed delivery latency vs WebSocket subscribers",
            "subscribers",
            "ms",
            {"p50": (xs, [p50_at[x] for x in xs]), "p99": (xs, [p99_at[x] for x in xs])},
            reference=("target p99 at 100: 20 ms", 20.0),
        ):
            result.charts.append(path.name)
    result.raw = {"available": True, "sizes": raw}
    if 100 in p99_at:
        result.targets.append(
            Target(
                "event delivery p99 < 20 ms with 100 subscribers",
                f"p99 {p99_at[100]:.1f} ms",
                p99_at[100] < 20,
            )
        )
    else:
        result.targets.append(
            Target(
                "event delivery p99 < 20 ms with 100 subscribers", "100 subscribers not run", None
            )
        )
    return result
