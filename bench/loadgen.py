"""An httpx load generator, used where wrk is not installed; runs as its own process.

    python -m bench.loadgen '{"url": ..., "method": "GET", "connections": 32, "seconds": 5}'

Prints {"requests", "errors", "rps", "p50_ms", "p99_ms"}. POST bodies get a unique "name".
`"headers": {...}` are sent with every request (e.g. a credential).
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
import uuid
from typing import Any

import httpx


async def load(config: dict[str, Any]) -> dict[str, Any]:
    seconds = float(config["seconds"])
    connections = int(config["connections"])
    method = config.get("method", "GET")
    body = config.get("body")
    tag = uuid.uuid4().hex[:8]
    latencies: list[float] = []
    errors = 0
    counter = 0
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    headers = config.get("headers") or {}
    async with httpx.AsyncClient(timeout=30, limits=limits, headers=headers) as client:
        began = time.perf_counter()
        stop = began + seconds

        async def worker() -> None:
            nonlocal errors, counter
            while time.perf_counter() < stop:
                counter += 1
                payload = None
                if body is not None:
                    payload = {**body, "name": f"{body.get('name', 'load')}-{tag}-{counter}"}
                at = time.perf_counter()
                try:
                    response = await client.request(method, config["url"], json=payload)
                    if response.status_code >= 400:
                        errors += 1
                except httpx.HTTPError:
                    errors += 1
                latencies.append(time.perf_counter() - at)

        await asyncio.gather(*(worker() for _ in range(connections)))
        elapsed = time.perf_counter() - began
    latencies.sort()

    def pct(p: float) -> float:
        if not latencies:
            return float("nan")
        return latencies[min(len(latencies) - 1, int(p / 100 * len(latencies)))] * 1000

    return {
        "requests": len(latencies),
        "errors": errors,
        "rps": len(latencies) / elapsed,
        "p50_ms": pct(50),
        "p99_ms": pct(99),
    }


def main() -> None:
    print(json.dumps(asyncio.run(load(json.loads(sys.argv[1])))), flush=True)


if __name__ == "__main__":
    main()
