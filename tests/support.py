"""Helpers for tests: waiting on executions, running the real server as a subprocess."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from crew_platform.devtools.llm_stub import free_port

FINAL = ("completed", "failed", "cancelled")


async def wait_for_execution(
    client: httpx.AsyncClient,
    execution_id: int,
    statuses: tuple[str, ...] = FINAL,
    timeout: float = 20.0,
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        response = await client.get(f"/api/v1/executions/{execution_id}")
        body: dict[str, Any] = response.json()
        if body.get("status") in statuses:
            return body
        if time.monotonic() > deadline:
            raise AssertionError(f"execution {execution_id} stuck in {body.get('status')}")
        await asyncio.sleep(0.02)


class LiveServer:
    """`crew-platform serve` in its own process, as a user runs it."""

    def __init__(
        self, env: dict[str, str], port: int | None = None, log_path: Path | None = None
    ) -> None:
        """`log_path`: the server's stdout and stderr go to that file (else stderr is piped)."""
        self.port = port or free_port()
        self.log_path = log_path
        self.env = {**os.environ, **env, "PORT": str(self.port), "HOST": "127.0.0.1"}
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> LiveServer:
        log = self.log_path.open("wb") if self.log_path else None
        self.process = subprocess.Popen(
            [sys.executable, "-m", "crew_platform.cli", "serve", "--migrate"],
            env=self.env,
            stdout=log or subprocess.DEVNULL,
            stderr=log or subprocess.PIPE,
        )
        if log:
            log.close()  # the server holds its own copy
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                err = self.process.stderr.read().decode() if self.process.stderr else ""
                raise RuntimeError(f"server exited early:\n{err[-3000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.base_url + "/health", timeout=1).status_code == 200:
                    return self
            time.sleep(0.05)
        self.stop()
        raise RuntimeError("server did not become healthy")

    def kill(self) -> None:
        """SIGKILL: no shutdown hooks run, as when a machine dies."""
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()


@contextlib.contextmanager
def live_server(env: dict[str, str]) -> Iterator[LiveServer]:
    server = LiveServer(env).start()
    try:
        yield server
    finally:
        server.stop()
