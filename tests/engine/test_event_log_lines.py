"""The server's default log: one line per persisted run event, none per chunk or model call."""

from __future__ import annotations

import re
from pathlib import Path

import httpx

from crew_platform.devtools.llm_stub import StubServer
from tests.flows import API
from tests.realtime.conftest import build_workflow
from tests.support import LiveServer, wait_for_execution


async def test_one_log_line_per_run_event(tmp_path: Path, stub: StubServer) -> None:
    stub.state.chunk_words = 1
    server = LiveServer(
        {
            "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'crew.db'}",
            "CEREBRAS_API_KEY": "test-key",
            "CEREBRAS_BASE_URL": stub.base_url,
            "RATE_LIMIT_API": "off",
            "RATE_LIMIT_WS": "off",
            "LOG_LEVEL": "info",
        }
    ).start()
    try:
        async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as http:
            built = await build_workflow(http, [{}])
            run = (
                await http.post(f"{API}/workflows/{built['workflow']['id']}/execute", json={})
            ).json()
            await wait_for_execution(http, run["id"])
            logs = (await http.get(f"{API}/executions/{run['id']}/logs")).json()
    finally:
        server.stop()
    assert server.process is not None and server.process.stderr is not None
    output = server.process.stderr.read().decode()
    task = built["task_ids"][0]
    lines = re.findall(rf"execution {run['id']} \w+(?: task=\d+)? seq=\d+", output)
    assert lines == [
        f"execution {run['id']} {e['event']}"
        + (f" task={task}" if e["task_id"] else "")
        + f" seq={e['seq']}"
        for e in logs
    ]
    assert "task_output_chunk" not in output
    assert "HTTP Request:" not in output
