"""EXECUTOR=queue with real processes: 2 API processes (`crew-platform serve`) and 2 workers
(`crew-platform worker`) on one fresh PostgreSQL database, Redis for events and Redis Streams as
the broker, the LLM stub for the model. Runs spread over both workers, each completed exactly
once; a killed worker's runs are taken over with only the step in flight repeated; a frozen one's
too, and woken it writes nothing more; a WebSocket client on one API process sees every event of
runs on both workers in order; a cancel through either API process stops a run on either worker,
its model call in flight included.

Time is never asserted: where something must happen "soon" the test waits for it (a hang guard
fails it), and the order of things is forced with the stub's gates.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from websockets.asyncio.client import connect

from crew_platform.devtools.llm_stub import StubServer, free_port
from tests.conftest import REDIS_URL, fresh_postgres
from tests.engine.test_leases import stored
from tests.flows import eventually, for_task
from tests.realtime.conftest import next_message, ws_request
from tests.realtime.test_sse import read_sse, sse_frames
from tests.scale.procs import API, Deployment, WorkerProcess, deployment, require_broker
from tests.scale.scenarios import (
    calls,
    crew,
    event_log,
    fill_both_workers,
    held,
    requests_of,
    runs_spread_and_complete_once,
    start_runs,
    statuses,
    topic,
    wait_until_finished,
)
from tests.support import LiveServer


@pytest.fixture(scope="module")
def module_deployment(
    stub: StubServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Deployment]:
    require_broker(REDIS_URL)
    with (
        fresh_postgres() as url,
        deployment(url, stub, REDIS_URL, tmp_path_factory.mktemp("redis-deployment")) as running,
    ):
        yield running


@pytest.fixture
def live(module_deployment: Deployment, stub: StubServer) -> Deployment:
    """The module's deployment with two live workers (a test may have killed one)."""
    module_deployment.ensure_workers(2)
    return module_deployment


def pending_of(deployment: Deployment, worker: WorkerProcess) -> int:
    """Messages of the deployment's stream delivered to `worker` and not acknowledged (its
    consumer in the group is named after its process id, `host:pid:random`)."""
    client = redis.Redis.from_url(REDIS_URL)
    try:
        summary = client.xpending(deployment.queue, deployment.queue)
    finally:
        client.close()
    return sum(
        int(c["pending"]) for c in summary["consumers"] if f":{worker.pid}:" in c["name"].decode()
    )


async def test_runs_spread_over_both_workers_and_each_completes_exactly_once(
    live: Deployment, stub: StubServer
) -> None:
    """RUN_COUNT runs of two tasks through both API processes: both workers run some, each run
    completes exactly once (see `runs_spread_and_complete_once`), and every message was
    acknowledged (none left pending in the stream's consumer group)."""
    await runs_spread_and_complete_once(live, stub)
    for worker in live.workers:
        await eventually(lambda w=worker: pending_of(live, w) == 0, what="messages acknowledged")


async def test_a_websocket_on_one_api_process_sees_every_event_of_runs_on_both_workers(
    live: Deployment, stub: StubServer
) -> None:
    """Subscribed on API process 0 to a workflow whose runs (started through API process 1) are
    held by both workers: every event of every run arrives, in order (seq 1, 2, ...), as the
    persisted log has them."""
    async with live.api() as http:
        workflow, _ = await crew(http, ["A", "B"])
    url = f"ws://127.0.0.1:{live.apis[0].port}/ws/"
    async with connect(url) as ws:
        subscribed = await ws_request(ws, {"type": "subscribe_workflow", "workflow_id": workflow})
        assert subscribed["type"] == "subscribed", subscribed
        runs, holders = await fill_both_workers(live, stub, workflow, "A", "websocket")
        stub.open_gate("websocket")
        received: dict[int, list[dict[str, object]]] = {i: [] for i in runs}
        completed = 0
        while completed < len(runs):
            message = await next_message(ws, timeout=30)
            if message["type"] == "ping":
                continue
            received[int(message["execution_id"])].append(message)
            completed += message["type"] == "workflow_completed"
    assert all(holders.values()), holders
    async with live.api() as http:
        for execution_id, events in received.items():
            logged = await event_log(http, execution_id)
            assert [e["seq"] for e in events] == list(range(1, len(logged) + 1)), events
            assert [e["type"] for e in events] == [e["event"] for e in logged]


async def test_an_sse_client_reconnecting_to_the_other_api_process_misses_nothing(
    live: Deployment, stub: StubServer
) -> None:
    """A run on a worker, streamed over SSE from API process 0 until its first task started;
    the client then reconnects to API process 1 with Last-Event-ID and reads to the end:
    together the two streams are the run's whole log, each event once, in order."""
    async with live.api() as http:
        workflow, _ = await crew(http, ["A", "B"])
    stub.script(for_task("A", gate="sse"))
    (execution_id,) = await start_runs(live, workflow, 1)
    await eventually(lambda: stub.waiting_at("sse") == 1, what="the call at the gate")
    path = f"{API}/executions/{execution_id}/events"
    first: list[dict[str, Any]] = []
    async with (
        httpx.AsyncClient(base_url=live.apis[0].base_url, timeout=30) as http,
        http.stream("GET", path) as response,
    ):
        assert response.status_code == 200
        async for frame in sse_frames(response):
            first.append(frame)
            if frame["event"] == "task_started":
                break
    stub.open_gate("sse")
    async with httpx.AsyncClient(base_url=live.apis[1].base_url, timeout=30) as http:
        rest = await read_sse(http, path, headers={"Last-Event-ID": first[-1]["id"]})
    async with live.api() as http:
        logged = await event_log(http, execution_id)
    streamed = first + rest
    assert [int(f["id"]) for f in streamed] == [e["seq"] for e in logged]
    assert [f["event"] for f in streamed] == [e["event"] for e in logged]
    assert streamed[-1]["event"] == "workflow_completed"


@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGSTOP], ids=["killed", "frozen"])
async def test_a_lost_workers_runs_complete_on_the_other_with_only_the_step_in_flight_repeated(
    live: Deployment, stub: StubServer, signum: int
) -> None:
    """Both workers hold CONCURRENCY runs, each waiting for its task B call. One worker is
    SIGKILLed (or SIGSTOPped): once its lease lapsed the other takes its runs over from their
    last checkpoint, so only B is asked again. A frozen worker, woken after its runs completed
    elsewhere, gives them up and writes nothing more to them."""
    async with live.api() as http:
        workflow, task_ids = await crew(http, ["A", "B", "C"])
    runs, holders = await fill_both_workers(live, stub, workflow, "B", f"lost-{signum}")
    lost, kept = live.workers
    lost_runs, kept_runs = holders[lost.pid], holders[kept.pid]
    lost.signal(signum)
    if signum == signal.SIGKILL:
        for run in (runs[i] for i in lost_runs):
            call = requests_of(stub, "B", run)[0]  # the killed worker's (a takeover's comes later)
            await eventually(lambda call=call: call.get("_disconnected"), what="a hang-up")
    # The kept worker's calls go on (its dispatcher is full until they do); a frozen worker's
    # answers wait in its sockets until it wakes.
    stub.open_gate(f"lost-{signum}")
    async with live.api(1) as http:
        finished = await wait_until_finished(http, workflow, len(runs))
        assert {e["status"] for e in finished.values()} == {"completed"}
        stored_then = {i: await stored(live.database_url, i) for i in lost_runs}
        if signum == signal.SIGSTOP:
            lost.signal(signal.SIGCONT)
            for execution_id in lost_runs:
                line = f"lost the lease of execution {execution_id}"
                await eventually(lambda line=line: line in lost.log(), what=line)
            await eventually(
                lambda: _listed_without_runs(live, lost.pid), what="the woken worker to beat"
            )
            assert lost.alive()
        for execution_id in lost_runs:
            assert await stored(live.database_url, execution_id) == stored_then[execution_id]
            b_runs = (
                await http.get(f"/tasks/{task_ids['B']}/executions", params={"limit": 100})
            ).json()
            mine = [r for r in b_runs if r["execution_id"] == execution_id]
            assert [(r["status"], r["attempt"]) for r in sorted(mine, key=lambda r: r["id"])] == [
                ("cancelled", 1),
                ("completed", 2),
            ], mine
            events = [e["event"] for e in await event_log(http, execution_id)]
            assert events.count("workflow_resumed") == 1 and events.count("workflow_started") == 1
    counted = calls(stub)
    for execution_id, run in runs.items():
        repeated = 2 if execution_id in lost_runs else 1
        assert (counted["A", run], counted["B", run], counted["C", run]) == (1, repeated, 1), (
            execution_id,
            execution_id in kept_runs,
        )


def _listed_without_runs(deployment: Deployment, pid: int) -> bool:
    listed = {w["pid"]: w for w in deployment.listed_workers()}
    return pid in listed and listed[pid]["executions"] == []


async def test_a_cancel_through_either_api_process_stops_a_run_on_either_worker(
    live: Deployment, stub: StubServer
) -> None:
    """Each worker holds CONCURRENCY runs waiting in a model call. One run of each worker is
    cancelled through API process 0, another through API process 1: each ends `cancelled`, and
    the stub saw its call's client hang up (the worker aborted the call, it did not wait for
    the answer). The runs not cancelled then complete."""
    async with live.api() as http:
        workflow, _ = await crew(http, ["A", "B"])
    runs, holders = await fill_both_workers(live, stub, workflow, "A", "cancel")
    targets = [(api, sorted(holders[worker.pid])[api]) for worker in live.workers for api in (0, 1)]
    for api, execution_id in targets:
        async with live.api(api) as http:
            response = await http.post(f"/executions/{execution_id}/cancel")
            assert response.status_code == 200, response.text
    cancelled = {execution_id for _, execution_id in targets}
    for execution_id in cancelled:
        (call,) = requests_of(stub, "A", runs[execution_id])
        await eventually(
            lambda call=call: call.get("_disconnected"),
            what=f"the model call of cancelled run {execution_id} to be aborted",
        )
    stub.open_gate("cancel")
    async with live.api(1) as http:
        finished = await wait_until_finished(http, workflow, len(runs))
    assert {i for i, e in finished.items() if e["status"] == "cancelled"} == cancelled
    assert {e["status"] for i, e in finished.items() if i not in cancelled} == {"completed"}
    counted = calls(stub)
    assert all(counted["B", runs[i]] == 0 for i in cancelled)


async def test_pause_and_resume_through_the_api_processes_reach_runs_on_both_workers(
    live: Deployment, stub: StubServer
) -> None:
    """Paused through API process 1 while both workers' runs wait in their task A call: each
    run stops after A (B is not asked) and lets its lease go. Resumed through API process 0:
    the runs are enqueued again and complete, A not asked again."""
    async with live.api() as http:
        workflow, _ = await crew(http, ["A", "B"])
    runs, holders = await fill_both_workers(live, stub, workflow, "A", "pause")
    async with live.api(1) as http:
        assert (await http.post(f"/workflows/{workflow}/pause")).status_code == 200
        stub.open_gate("pause")

        async def all_paused_and_let_go() -> bool:
            seen = await statuses(http, workflow)
            paused = all(seen[i]["status"] == "paused" for i in runs)
            return paused and not any((await held(live, set(runs))).values())

        await eventually(all_paused_and_let_go, what="every run paused, no lease held")
    assert all(holders.values()), holders
    assert calls(stub) == {("A", run): 1 for run in runs.values()}
    async with live.api(0) as http:
        assert (await http.post(f"/workflows/{workflow}/resume")).status_code == 200
        finished = await wait_until_finished(http, workflow, len(runs))
    assert {e["status"] for e in finished.values()} == {"completed"}
    assert calls(stub) == {(name, run): 1 for name in "AB" for run in runs.values()}


async def test_a_draft_waits_on_no_worker_and_input_through_either_api_process_goes_on(
    live: Deployment, stub: StubServer
) -> None:
    """A `human_input` task on the queue: while its draft waits no worker holds the run; the
    feedback sent to API process 1 has a worker revise it (the first draft is not asked
    again), the approval sent to API process 0 has a worker finish the run."""
    async with live.api() as http:
        workflow, ids = await crew(http, ["A", "B"])
        marked = await http.put(f"/tasks/{ids['A']}", json={"human_input": True})
        assert marked.status_code == 200, marked.text
    ((run, run_topic),) = (await start_runs(live, workflow, 1)).items()

    async def waiting_on_nobody(http: httpx.AsyncClient, attempt: int) -> bool:
        status = (await http.get(f"/executions/{run}/status")).json()
        drafts = [t["attempt"] for t in status["waiting_tasks"]]
        return drafts == [attempt] and not any((await held(live, {run})).values())

    async with live.api(1) as http:
        await eventually(lambda: waiting_on_nobody(http, 1), what="draft 1 waiting, run not held")
        answered = await http.post(f"/executions/{run}/input", json={"feedback": "Shorter"})
        assert answered.status_code == 202, answered.text
        await eventually(lambda: waiting_on_nobody(http, 2), what="draft 2 waiting, run not held")
    async with live.api(0) as http:
        approved = await http.post(f"/executions/{run}/input", json={"approve": True})
        assert approved.status_code == 202, approved.text
        finished = await wait_until_finished(http, workflow, 1)
        events = [e["event"] for e in await event_log(http, run)]
    assert finished[run]["status"] == "completed", finished[run]
    assert calls(stub) == {("A", run_topic): 2, ("B", run_topic): 1}
    (revision,) = [r for r in requests_of(stub, "A", run_topic) if len(r["messages"]) > 2]
    assert revision["messages"][-1]["content"].startswith("Feedback on your answer: Shorter")
    assert events.count("input_required") == 2 and events.count("input_received") == 2


async def test_sigterm_stops_a_worker_cleanly_and_another_finishes_its_runs(
    live: Deployment, stub: StubServer
) -> None:
    """SIGTERM while the worker runs: it exits 0 at once (its runners stopped, their state
    untouched, its lease retired) and the other worker finishes those runs from their last
    checkpoint."""
    async with live.api() as http:
        workflow, _ = await crew(http, ["A", "B"])
    runs, holders = await fill_both_workers(live, stub, workflow, "A", "sigterm")
    stopped, other = live.workers
    assert stopped.terminate() == 0, stopped.log()[-3000:]
    assert pending_of(live, stopped) == len(holders[stopped.pid])  # left unacknowledged
    assert stopped.pid not in await held(live, set(runs))
    stub.open_gate("sigterm")
    async with live.api() as http:
        finished = await wait_until_finished(http, workflow, len(runs))
    assert {e["status"] for e in finished.values()} == {"completed"}
    counted = calls(stub)
    for execution_id, run in runs.items():
        assert counted["A", run] == (2 if execution_id in holders[stopped.pid] else 1)
        assert counted["B", run] == 1
    assert other.alive()
    assert "Traceback" not in stopped.log(), stopped.log()[-3000:]


async def test_a_run_whose_message_was_lost_is_picked_up_by_a_worker_with_room(
    live: Deployment, stub: StubServer
) -> None:
    """An API process whose broker is down (nothing listens at its BROKER_URL) still starts,
    accepts a run (202) and commits it, but cannot enqueue it: a worker with room picks the
    pending run up once nobody took it for LEASE_SECONDS, and runs it once."""
    broker_down = live.env | {"BROKER_URL": f"redis://127.0.0.1:{free_port()}/0"}
    log_path = live.logs / "api-broker-down.log"
    api = LiveServer(broker_down, log_path=log_path).start()
    try:
        async with httpx.AsyncClient(base_url=api.base_url + API, timeout=30) as http:
            workflow, _ = await crew(http, ["A", "B"])
            response = await http.post(
                f"/workflows/{workflow}/execute", json={"input_data": {"topic": topic(900)}}
            )
            assert response.status_code == 202, response.text
            run = response.json()["id"]
            (finished,) = (await wait_until_finished(http, workflow, 1)).values()
    finally:
        api.stop()
    assert finished["id"] == run and finished["status"] == "completed", finished
    assert f"could not enqueue execution {run}" in log_path.read_text()
    assert calls(stub) == {("A", topic(900)): 1, ("B", topic(900)): 1}


def test_deployment_logs_are_clean(module_deployment: Deployment) -> None:
    """No process of the deployment logged a traceback so far."""
    for path in sorted(Path(module_deployment.logs).glob("*.log")):
        text = path.read_text(errors="replace")
        assert "Traceback" not in text, f"{path.name}:\n{text[-3000:]}"
