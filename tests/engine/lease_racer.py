"""One side of a takeover race (tests/engine/test_leases.py), as its own process:

    python -m tests.engine.lease_racer DATABASE_URL OWNER TODO_FILE

Registers OWNER as a live process and says `ready`, waits for a line `go` on its input, then
tries to take each execution of TODO_FILE (`[[id, intent], ...]`) by its intent (`start` if
pending, `take_over` if running, as a runner's begin does), one transaction each, and prints the
ids it won as a JSON list.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys

from crew_platform.db import create_engine
from crew_platform.engine import Intent, Kind
from crew_platform.engine.lease import Process, register
from crew_platform.engine.rules import move
from crew_platform.settings import Settings


async def race(url: str, owner: str, todo: list[tuple[int, str]]) -> list[int]:
    engine = create_engine(Settings(database_url=url))
    try:
        async with engine.begin() as conn:
            await register(conn, Process(owner, "server", "racer", os.getpid()), 600)
        print("ready", flush=True)
        assert (await asyncio.to_thread(sys.stdin.readline)).strip() == "go"
        won = []
        for execution_id, intent in todo:
            async with engine.begin() as conn:
                if await move(conn, Kind.EXECUTION, execution_id, Intent(intent), owner=owner):
                    won.append(execution_id)
        return won
    finally:
        await engine.dispose()


if __name__ == "__main__":
    url, owner, todo_file = sys.argv[1:4]
    with open(todo_file) as todo:
        pairs = [(int(i), str(intent)) for i, intent in json.load(todo)]
    print(json.dumps(asyncio.run(race(url, owner, pairs))), flush=True)
