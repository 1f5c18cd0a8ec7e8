"""The commands the README gives work as typed: `make stub`, the stub's own command line, and
`make dev` (each started as a user starts it, in a process group of its own, then stopped)."""

from __future__ import annotations

import contextlib
import os
import selectors
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from crew_platform.devtools.llm_stub import free_port

ROOT = Path(__file__).resolve().parents[1]


@contextlib.contextmanager
def started(command: list[str], **env: str) -> Iterator[subprocess.Popen[str]]:
    process = subprocess.Popen(
        command,
        cwd=ROOT,
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        yield process
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=5)
        if process.stdout:
            process.stdout.close()


def wait_for_line(process: subprocess.Popen[str], wanted: str, within: float = 60) -> list[str]:
    """The lines printed up to the first one containing `wanted` (fails if the process ends or
    stays silent about it)."""
    assert process.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + within
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        while time.monotonic() < deadline:
            if not selector.select(timeout=0.5):
                continue
            line = process.stdout.readline()
            if not line:
                break
            lines.append(line.rstrip("\n"))
            if wanted in line:
                return lines
    pytest.fail(f"never printed {wanted!r}; output:\n" + "\n".join(lines))


def wait_until_healthy(url: str, process: subprocess.Popen[str], within: float = 60) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        assert process.poll() is None, "the server exited"
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return
        time.sleep(0.1)
    pytest.fail(f"{url} never became healthy")


def assert_serves_models(base_url: str) -> None:
    models = httpx.get(f"{base_url}/models", timeout=5).json()
    assert "llama-4-maverick-17b-128e-instruct" in [m["id"] for m in models["data"]]


def test_stub_command_prints_where_it_listens() -> None:
    port = free_port()
    command = [sys.executable, "-m", "crew_platform.devtools.llm_stub", "--port", str(port)]
    with started(command) as stub:
        lines = wait_for_line(stub, "listening")
        assert lines[-1] == f"LLM stub listening on http://127.0.0.1:{port}/v1"
        assert_serves_models(f"http://127.0.0.1:{port}/v1")


def test_stub_on_port_zero_prints_the_port_it_got() -> None:
    command = [sys.executable, "-m", "crew_platform.devtools.llm_stub", "--port", "0"]
    with started(command) as stub:
        line = wait_for_line(stub, "listening")[-1]
        address = line.removeprefix("LLM stub listening on ")
        assert not address.endswith(":0/v1"), line
        assert_serves_models(address)


def test_make_stub_serves_on_stub_port() -> None:
    port = free_port()
    with started(["make", "--no-print-directory", "stub", f"STUB_PORT={port}"]) as stub:
        wait_for_line(stub, f"LLM stub listening on http://127.0.0.1:{port}/v1")
        assert_serves_models(f"http://127.0.0.1:{port}/v1")


def test_make_dev_migrates_and_serves(tmp_path: Path) -> None:
    port = free_port()
    env = {
        "PORT": str(port),
        "HOST": "127.0.0.1",
        "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'dev.db'}",
        "RATE_LIMIT_API": "off",
        "RATE_LIMIT_WS": "off",
    }
    with started(["make", "--no-print-directory", "dev"], **env) as dev:
        wait_until_healthy(f"http://127.0.0.1:{port}", dev)
        assert httpx.get(f"http://127.0.0.1:{port}/api/v1/agents/", timeout=5).json() == []
