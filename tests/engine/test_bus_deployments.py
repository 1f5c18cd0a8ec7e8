"""Two deployments (different databases) sharing one Redis: their events never meet, although
Redis pub/sub ignores the database number and both have an execution 1."""

from __future__ import annotations

import shutil
from pathlib import Path

from crew_platform.devtools.llm_stub import StubServer
from crew_platform.events.bus import channel_prefix
from tests.conftest import REDIS_URL, make_settings, require_service
from tests.edge.test_ratelimit import _redis_problem
from tests.flows import API, execute, for_task, idle, pipeline, running_app, wait_for_gate


async def test_a_cancel_in_one_deployment_leaves_the_other_alone(
    tmp_path: Path, sqlite_template: Path, stub: StubServer
) -> None:
    require_service("Redis", _redis_problem())
    urls = []
    for name in ("a", "b"):
        shutil.copyfile(sqlite_template, tmp_path / f"{name}.db")
        urls.append(f"sqlite+aiosqlite:///{tmp_path / name}.db")
    settings_a, settings_b = (
        make_settings(url, stub, redis_url=REDIS_URL, llm_timeout_seconds=120) for url in urls
    )
    stub.script(for_task("TA", gate="a"), for_task("TB", gate="b", content="OUT<B>"))
    async with running_app(settings_a) as (app_a, a), running_app(settings_b) as (app_b, b):
        workflow_a = (await pipeline(a, ["TA"]))[1]
        workflow_b = (await pipeline(b, ["TB"]))[1]
        run_a = await execute(a, workflow_a["id"])
        run_b = await execute(b, workflow_b["id"])
        assert run_a["id"] == run_b["id"]
        await wait_for_gate(stub, "a")
        await wait_for_gate(stub, "b")
        assert (await a.post(f"{API}/executions/{run_a['id']}/cancel")).status_code == 200
        await idle(app_a)
        stub.open_gate("b")
        await idle(app_b)
        done_b = (await b.get(f"{API}/executions/{run_b['id']}")).json()
    assert done_b["status"] == "completed", done_b
    assert list(done_b["output_data"]["tasks"].values()) == ["OUT<B>"]
    assert stub.disconnects == 1  # only A's call was aborted


def test_the_default_channel_prefix_is_per_database_and_hides_the_password(
    tmp_path: Path,
) -> None:
    one = channel_prefix("postgresql+asyncpg://crew:secret@db:5432/one")
    assert one == channel_prefix("postgresql+asyncpg://crew:other@db:5432/one")
    assert one != channel_prefix("postgresql+asyncpg://crew:secret@db:5432/two")
    assert "secret" not in one
    relative = channel_prefix("sqlite+aiosqlite:///./crew.db")
    assert relative == channel_prefix(f"sqlite+aiosqlite:///{Path('crew.db').resolve()}")
    assert relative != channel_prefix(f"sqlite+aiosqlite:///{tmp_path / 'crew.db'}")
