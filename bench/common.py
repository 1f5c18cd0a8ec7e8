"""What every scenario shares: the stub and server processes, databases, RSS, statistics."""

from __future__ import annotations

import asyncio
import contextlib
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import httpx

from bench.peers import workload
from crew_platform.devtools.llm_stub import free_port

LOGS = Path(__file__).resolve().parent / ".logs"  # gitignored: server and stub stderr
PG_ADMIN_URL = os.environ.get("BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


# -- configuration of one run of the suite ----------------------------------------------------


@dataclass
class Context:
    """Handed to every scenario: sizes, the shared stub, where files go, a log function."""

    smoke: bool
    out_dir: Path
    stub: Stub
    workdir: Path
    postgres: str | None  # admin URL when reachable, else None
    postgres_problem: str | None
    reps: int | None = None  # override of the scenario's repetitions
    notes: list[str] = field(default_factory=list)

    def chart(self, name: str) -> Path:
        stamp = datetime.now().date().isoformat() + ("-smoke" if self.smoke else "")
        return self.out_dir / f"{stamp}-{name}.png"

    def log(self, message: str) -> None:
        print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# -- statistics ------------------------------------------------------------------------------


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile (pct in 0..100)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(pct / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def spread(values: Sequence[float]) -> str:
    """min-max of the runs, or '' for a single run."""
    if len(values) < 2:
        return "1 run"
    return f"{min(values):.4g}-{max(values):.4g}"


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) a process has used so far, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def fmt(value: float | None, digits: int = 3) -> str:
    if value is None or value != value:  # NaN
        return "—"
    return f"{value:.{digits}f}"


# -- processes -------------------------------------------------------------------------------


def rss_kb(pid: int, field_name: str = "VmRSS") -> int:
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith(field_name + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def reset_peak(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as refs:
            refs.write("5")
        return True
    except OSError:
        return False


def _log_file(name: str) -> Path:
    LOGS.mkdir(parents=True, exist_ok=True)
    return LOGS / f"{time.strftime('%Y%m%d-%H%M%S')}-{name}.log"


def _wait_http(
    url: str,
    timeout: float,
    process: subprocess.Popen[bytes] | None = None,
    log: Path | None = None,
) -> float:
    """Polls `url` until it answers 200; returns when it did (perf_counter)."""
    deadline = time.perf_counter() + timeout
    with httpx.Client(timeout=2) as client:
        while time.perf_counter() < deadline:
            if process is not None and process.poll() is not None:
                err = log.read_text(errors="replace") if log else ""
                raise RuntimeError(f"process exited early ({process.returncode}):\n{err[-2000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if client.get(url).status_code == 200:
                    return time.perf_counter()
            time.sleep(0.01)
    raise RuntimeError(f"{url} did not answer within {timeout:.0f} s")


def _stop(process: subprocess.Popen[bytes] | None) -> None:
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


class Stub:
    """The OpenAI-compatible stub as its own process (`crew_platform.devtools.llm_stub`)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def admin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Stub:
        log_path = _log_file(f"stub-{self.port}")
        with log_path.open("wb") as log:
            self.process = self._spawn(log)
        _wait_http(self.admin + "/v1/models", 30, self.process, log_path)
        return self

    def _spawn(self, log: Any) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "crew_platform.devtools.llm_stub",
                "--port",
                str(self.port),
                "--latency",
                "0",
                "--no-record",
            ],
            stdout=subprocess.DEVNULL,
            stderr=log,
        )

    def stop(self) -> None:
        _stop(self.process)

    def configure(self, latency: float, record: bool = False) -> None:
        httpx.post(self.admin + "/_reset", timeout=10).raise_for_status()
        models = [workload.MODEL, "llama-4-maverick-17b-128e-instruct"]
        httpx.post(
            self.admin + "/_config",
            timeout=10,
            json={"latency": latency, "record_requests": record, "models": models},
        ).raise_for_status()

    def request_count(self) -> int:
        return len(self.requests())

    def requests(self) -> list[dict[str, Any]]:
        return list(httpx.get(self.admin + "/_requests", timeout=30).json())

    def script(self, replies: list[dict[str, Any]]) -> int:
        """Queue scripted replies (FIFO); returns how many are queued (unanswered) now."""
        response = httpx.post(self.admin + "/_script", timeout=30, json={"replies": replies})
        response.raise_for_status()
        return int(response.json()["queued"])

    def reset_peak(self) -> None:
        """Start counting the most model calls in flight at once afresh."""
        httpx.post(self.admin + "/_stats/reset", timeout=10).raise_for_status()

    def peak_in_flight(self) -> int:
        """Most chat requests the stub answered at once since `reset_peak`."""
        return int(httpx.get(self.admin + "/_stats", timeout=10).json()["peak"])


class Server:
    """`crew-platform serve` in its own process, as a user runs it (logging at warning)."""

    def __init__(
        self, database_url: str, stub: Stub, workdir: Path, extra_env: dict[str, str] | None = None
    ) -> None:
        self.port = free_port()
        self.database_url = database_url
        self.workdir = workdir
        self.env = {
            **os.environ,
            "DATABASE_URL": database_url,
            "CEREBRAS_API_KEY": "bench",
            "CEREBRAS_BASE_URL": stub.base_url,
            "HOST": "127.0.0.1",
            "PORT": str(self.port),
            "RATE_LIMIT_API": "off",
            "RATE_LIMIT_WS": "off",
            "LOG_LEVEL": "warning",
            "DEFAULT_MODEL": workload.MODEL,
        }
        self.env.pop("REDIS_URL", None)  # only where a scenario asks for it
        self.env.update(extra_env or {})
        self.process: subprocess.Popen[bytes] | None = None
        self.startup_seconds: float | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self, probe: str = "/api/v1/agents/", timeout: float = 60) -> Server:
        """Start and wait for the first successful `probe`; records the time that took."""
        began = time.perf_counter()
        # stderr goes to a file: a pipe nobody reads fills up (64 KiB) and then blocks the
        # server's event loop on its next log write.
        self.log_path = _log_file(f"server-{self.port}")
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "crew_platform.cli", "serve"],
                env=self.env,
                cwd=self.workdir,
                stdout=subprocess.DEVNULL,
                stderr=log,
            )
        ready = _wait_http(self.base_url + probe, timeout, self.process, self.log_path)
        self.startup_seconds = ready - began
        return self

    def stop(self) -> None:
        _stop(self.process)

    def rss_mb(self) -> float:
        return rss_kb(self.pid) / 1024

    def peak_rss_mb(self) -> float:
        return rss_kb(self.pid, "VmHWM") / 1024

    def reset_peak(self) -> bool:
        return reset_peak(self.pid)


class Worker:
    """`crew-platform worker --concurrency N` in its own process, with a server's environment
    (EXECUTOR=queue, BROKER_URL and REDIS_URL among `extra_env`)."""

    def __init__(self, server: Server, concurrency: int) -> None:
        self.env = dict(server.env)
        self.workdir = server.workdir
        self.concurrency = concurrency
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self) -> Worker:
        self.log_path = _log_file(f"worker-{uuid.uuid4().hex[:6]}")
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "crew_platform.cli",
                    "worker",
                    "--concurrency",
                    str(self.concurrency),
                ],
                env=self.env,
                cwd=self.workdir,
                stdout=subprocess.DEVNULL,
                stderr=log,
            )
        return self

    def stop(self) -> None:
        _stop(self.process)


def wait_for_workers(server: Server, count: int, timeout: float = 60) -> None:
    """Until the server's `GET /api/v1/workers` lists `count` live workers."""
    deadline = time.monotonic() + timeout
    with httpx.Client(base_url=server.base_url, timeout=5) as client:
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                listed = client.get("/api/v1/workers")
                live = [w for w in listed.json() if w.get("kind") == "worker"]
                if len(live) >= count:
                    return
            time.sleep(0.1)
    raise RuntimeError(f"{count} worker(s) did not register within {timeout:.0f} s")


@contextlib.contextmanager
def running(*processes: Stub | Server | Worker) -> Iterator[None]:
    try:
        yield
    finally:
        for process in processes:
            process.stop()


def migrate(database_url: str, workdir: Path, env: Mapping[str, str] | None = None) -> None:
    """Run `crew-platform migrate` on the database; `env`: the process's environment (e.g. a
    variant's PYTHONPATH, so that its own migrations run), the bench's by default."""
    done = subprocess.run(
        [sys.executable, "-m", "crew_platform.cli", "migrate"],
        env={**(os.environ if env is None else env), "DATABASE_URL": database_url},
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"migration failed: {done.stderr[-2000:]}")


def variant_paths(specs: Sequence[str]) -> list[tuple[str, Path]]:
    """The compare scripts' `name=path` arguments, paths resolved."""
    pairs = []
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            raise SystemExit(f"a variant is name=path, not {spec!r}")
        pairs.append((name, Path(path).resolve()))
    return pairs


# -- databases -------------------------------------------------------------------------------


def sqlite_url(workdir: Path, name: str) -> str:
    """A fresh, already migrated SQLite file (a copy of one template migrated per suite run)."""
    template = workdir / "template.db"
    if not template.exists():
        migrate(f"sqlite+aiosqlite:///{template}", workdir)
    path = workdir / f"{name}-{uuid.uuid4().hex[:6]}.db"
    shutil.copyfile(template, path)
    return f"sqlite+aiosqlite:///{path}"


def _async_pg(url: str) -> str:
    return url.replace("postgresql://", "postgresql+asyncpg://", 1)


async def _pg_admin(admin_url: str, statement: str) -> None:
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine

    engine = create_async_engine(_async_pg(admin_url), isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as conn:
            await conn.execute(text(statement))
    finally:
        await engine.dispose()


def postgres_problem(admin_url: str = PG_ADMIN_URL) -> str | None:
    try:
        asyncio.run(asyncio.wait_for(_pg_admin(admin_url, "SELECT 1"), 10))
        return None
    except Exception as exc:
        return f"{type(exc).__name__}: {str(exc).splitlines()[0][:150]}"


@contextlib.contextmanager
def postgres_database(admin_url: str, name: str) -> Iterator[str]:
    """A fresh database of our own (crew_bench_<name>_<pid>), dropped afterwards."""
    db = f"crew_bench_{name}_{os.getpid()}"
    asyncio.run(_pg_admin(admin_url, f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)'))
    asyncio.run(_pg_admin(admin_url, f'CREATE DATABASE "{db}"'))
    base = admin_url.rsplit("/", 1)[0]
    try:
        yield f"{base}/{db}"
    finally:
        asyncio.run(_pg_admin(admin_url, f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)'))


@contextlib.asynccontextmanager
async def db_session(database_url: str) -> AsyncIterator[Any]:
    """A plain SQLAlchemy session on the benchmark database (for checks after a run)."""
    from sqlalchemy.ext.asyncio import create_async_engine

    from crew_platform.settings import Settings

    engine = create_async_engine(Settings(database_url=database_url).database_url)
    try:
        async with engine.connect() as conn:
            yield conn
    finally:
        await engine.dispose()


# -- creating the workload through the API ---------------------------------------------------


async def create_workflow(
    client: httpx.AsyncClient,
    n: int,
    tag: str,
    tools: Sequence[str] = (),
    workflow_type: str = "linear",
    config: dict[str, Any] | None = None,
) -> tuple[int, list[int]]:
    """N agents (naming `tools`), one workflow of N tasks (task i by agent i, linear unless
    `workflow_type` says otherwise); returns ids."""
    agent_ids: list[int] = []
    for i in range(n):
        a = workload.agent(i)
        response = await client.post(
            "/api/v1/agents/",
            json={
                "name": f"{a.name}-{tag}",
                "role": a.role,
                "goal": a.goal,
                "backstory": a.backstory,
                "model": workload.MODEL,
                "max_tokens": 1024,
                "tools": list(tools),
            },
        )
        response.raise_for_status()
        agent_ids.append(response.json()["id"])
    response = await client.post(
        "/api/v1/workflows/",
        json={
            "name": f"bench-{tag}",
            "description": "benchmark chain",
            "workflow_type": workflow_type,
            "config": config,
        },
    )
    response.raise_for_status()
    workflow_id = int(response.json()["id"])
    for i in range(n):
        t = workload.task(i)
        response = await client.post(
            "/api/v1/tasks/",
            json={
                "workflow_id": workflow_id,
                "agent_id": agent_ids[i],
                "name": t.name,
                "description": t.description,
                "expected_output": t.expected_output,
                "order": i,
            },
        )
        response.raise_for_status()
    return workflow_id, agent_ids


def parse_ts(value: str) -> float:
    """ISO timestamp from the API (UTC, 'Z' or offset or naive) to epoch seconds."""
    text = value.replace("Z", "+00:00")
    parsed = datetime.fromisoformat(text)
    if parsed.tzinfo is None:
        from datetime import UTC

        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


# -- the machine -----------------------------------------------------------------------------


def machine() -> dict[str, str]:
    cpu = platform.processor() or "unknown"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as info:
        for line in info:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    memory = "unknown"
    with contextlib.suppress(OSError), open("/proc/meminfo") as info:
        for line in info:
            if line.startswith("MemTotal:"):
                memory = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
                break
    packages = {}
    for name in (
        "fastapi",
        "uvicorn",
        "sqlalchemy",
        "aiosqlite",
        "asyncpg",
        "openai",
        "httpx",
        "pydantic",
        "sse-starlette",
        "websockets",
        "matplotlib",
    ):
        with contextlib.suppress(metadata.PackageNotFoundError):
            packages[name] = metadata.version(name)
    postgres = "unknown"
    if shutil.which("psql"):
        with contextlib.suppress(Exception):
            postgres = subprocess.run(
                ["psql", "--version"], capture_output=True, text=True, timeout=10, check=False
            ).stdout.strip()
    sqlite = "unknown"
    with contextlib.suppress(Exception):
        import sqlite3

        sqlite = sqlite3.sqlite_version
    code = "unknown"
    with contextlib.suppress(Exception):
        root = Path(__file__).resolve().parent.parent
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "src"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
        changed = len([line for line in dirty.stdout.splitlines() if line.strip()])
        code = head.stdout.strip() + (
            f" + uncommitted changes in {changed} file(s) under src/" if changed else ""
        )
    load = "unknown"
    with contextlib.suppress(OSError):
        load = " / ".join(f"{x:.2f}" for x in os.getloadavg())
    return {
        "code measured (git)": code,
        "nproc": str(os.cpu_count()),
        "load average (1/5/15 min) when written": load,
        "memory": memory,
        "cpu": cpu,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "postgresql client": postgres,
        "sqlite": sqlite,
        "packages": ", ".join(f"{k} {v}" for k, v in packages.items()),
    }


def temp_workdir() -> Path:
    return Path(tempfile.mkdtemp(prefix="crew-bench-"))
