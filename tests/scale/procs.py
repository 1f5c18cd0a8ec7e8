"""Real processes for the scale-out tests: `crew-platform serve` API processes with
EXECUTOR=queue and `crew-platform worker` processes, on one PostgreSQL database, one Redis (events)
and a broker (Redis Streams or RabbitMQ), as an operator starts them.

Each deployment gets a unique EVENTS_CHANNEL_PREFIX, so its event channel and its stream or queue
(`<prefix>:executions`) are its own: parallel test runs on one Redis or RabbitMQ never meet. The
stream or queue is deleted when the deployment stops.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from crew_platform.devtools.llm_stub import StubServer
from tests.api import live_env
from tests.conftest import REDIS_URL, require_service, run_coroutine
from tests.support import LiveServer

AMQP_URL = os.environ.get("TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
API = "/api/v1"
CONCURRENCY = 4
"""Executions each test worker runs at once: small, so a handful of runs fills a worker and
the others' messages wait for the second one."""
LEASE_SECONDS = 2
"""A killed or frozen worker's runs are taken over about this long after its last heartbeat."""


def redis_problem(url: str = REDIS_URL) -> str | None:
    import redis

    try:
        redis.Redis.from_url(url, socket_connect_timeout=2).ping()
        return None
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"


def amqp_problem(url: str = AMQP_URL) -> str | None:
    async def probe() -> None:
        import aio_pika

        connection = await aio_pika.connect(url, timeout=3)
        await connection.close()

    try:
        run_coroutine(probe)
        return None
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"


def require_broker(broker_url: str) -> None:
    require_service("Redis", redis_problem())
    if broker_url.startswith("amqp"):
        require_service("RabbitMQ", amqp_problem(broker_url))


class WorkerProcess:
    """`crew-platform worker` in its own process; its stdout and stderr go to `log_path`."""

    def __init__(self, env: dict[str, str], log_path: Path, concurrency: int) -> None:
        self.env = {**os.environ, **env}
        self.log_path = log_path
        self.concurrency = concurrency
        self.process: subprocess.Popen[bytes] | None = None

    @staticmethod
    def arguments(concurrency: int) -> list[str]:
        """The command's arguments (deploy/docker-compose.yml runs the same)."""
        return ["worker", "--concurrency", str(concurrency)]

    def start(self) -> WorkerProcess:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "crew_platform.cli", *self.arguments(self.concurrency)],
                env=self.env,
                stdout=log,
                stderr=log,
            )
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def signal(self, signum: int) -> None:
        assert self.process is not None
        self.process.send_signal(signum)

    def kill(self) -> None:
        """SIGKILL: nothing of the worker's shutdown runs, as when its machine dies."""
        if self.alive():
            assert self.process is not None
            self.process.send_signal(signal.SIGCONT)  # a frozen one dies only once woken
            self.process.kill()
            self.process.wait(timeout=10)

    def terminate(self, timeout: float = 20.0) -> int:
        """SIGTERM, as an orchestrator stops it; its exit code."""
        assert self.process is not None
        if self.alive():
            self.process.send_signal(signal.SIGCONT)
            self.process.terminate()
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            self.kill()
            message = f"worker {self.pid} ignored SIGTERM:\n{self.log()[-3000:]}"
            raise AssertionError(message) from exc


@dataclass
class Deployment:
    """API processes and workers of one deployment; `env` is what they all share."""

    env: dict[str, str]
    database_url: str
    broker_url: str
    prefix: str
    logs: Path
    apis: list[LiveServer] = field(default_factory=list)
    workers: list[WorkerProcess] = field(default_factory=list)
    started_workers: int = 0

    @property
    def queue(self) -> str:
        return f"{self.prefix}:executions"

    def api(self, index: int = 0) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.apis[index].base_url + API, timeout=30)

    def start_worker(self) -> WorkerProcess:
        self.started_workers += 1
        log_path = self.logs / f"worker-{self.started_workers}.log"
        worker = WorkerProcess(self.env, log_path, CONCURRENCY).start()
        self.workers.append(worker)
        return worker

    def wait_for_workers(self, timeout: float = 30.0) -> None:
        """Until every live worker process is listed by GET /workers (it registers just before
        it consumes; what is enqueued meanwhile waits in the broker)."""
        deadline = time.monotonic() + timeout
        while True:
            for worker in self.workers:
                if not worker.alive():
                    raise RuntimeError(f"worker exited early:\n{worker.log()[-3000:]}")
            wanted = {w.pid for w in self.workers if w.alive()}
            listed = {w["pid"] for w in self.listed_workers()}
            if wanted <= listed:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(
                    "workers did not register:\n" + "\n".join(w.log()[-2000:] for w in self.workers)
                )
            time.sleep(0.05)

    def listed_workers(self) -> list[dict[str, Any]]:
        response = httpx.get(self.apis[0].base_url + API + "/workers", timeout=10)
        assert response.status_code == 200, response.text
        listed: list[dict[str, Any]] = response.json()
        return listed

    def ensure_workers(self, count: int = 2) -> list[WorkerProcess]:
        """`count` live workers (a test killed one: a new one replaces it), oldest first."""
        self.workers = [w for w in self.workers if w.alive()]
        while len(self.workers) < count:
            self.start_worker()
        self.wait_for_workers()
        return self.workers

    def stop(self) -> None:
        for worker in self.workers:
            with contextlib.suppress(AssertionError):
                worker.terminate()
        for api in self.apis:
            api.stop()
        forget_broker(self.broker_url, self.queue)


def forget_broker(broker_url: str, queue: str) -> None:
    """Delete the deployment's stream (Redis) or queues and exchange (RabbitMQ)."""
    if broker_url.startswith("amqp"):

        async def drop() -> None:
            import aio_pika

            connection = await aio_pika.connect(broker_url, timeout=5)
            async with connection:
                channel = await connection.channel()
                for name in (queue, f"{queue}.dead"):
                    await channel.queue_delete(name)
                await channel.exchange_delete(queue)

        with contextlib.suppress(Exception):
            run_coroutine(drop)
        return
    import redis

    with contextlib.suppress(Exception):
        redis.Redis.from_url(broker_url, socket_connect_timeout=2).delete(queue)


def queue_env(database_url: str, stub: StubServer, broker_url: str, prefix: str) -> dict[str, str]:
    return live_env(database_url, stub) | {
        "EXECUTOR": "queue",
        "BROKER_URL": broker_url,
        "REDIS_URL": REDIS_URL,
        "EVENTS_CHANNEL_PREFIX": prefix,
        "LEASE_SECONDS": str(LEASE_SECONDS),
        # Four processes on a PostgreSQL that other test runs share (max_connections 100).
        "DATABASE_POOL_SIZE": "10",
    }


@contextlib.contextmanager
def deployment(
    database_url: str,
    stub: StubServer,
    broker_url: str,
    logs: Path,
    *,
    apis: int = 2,
    workers: int = 2,
) -> Iterator[Deployment]:
    """`apis` API processes and `workers` workers, started in parallel; stopped (SIGTERM) and
    their broker names deleted afterwards."""
    require_broker(broker_url)
    prefix = f"crew_test_{uuid.uuid4().hex[:10]}"
    env = queue_env(database_url, stub, broker_url, prefix)
    running = Deployment(env, database_url, broker_url, prefix, logs)
    try:
        servers = [LiveServer(env, log_path=logs / f"api-{i}.log") for i in range(apis)]
        running.apis.extend(servers)
        with ThreadPoolExecutor(max_workers=apis) as pool:
            list(pool.map(LiveServer.start, servers))
        running.ensure_workers(workers)
        yield running
    finally:
        running.stop()
