"""The test MCP server (`tests.tools.mcp_server`) as a process on a free port.

Other test packages use these fixtures by importing them into their own conftest:
`from tests.tools.conftest import mcp_server, mcp_server_process  # noqa: F401`.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from crew_platform.devtools.llm_stub import free_port
from tests.tools.mcp_server import read_counts

ROOT = Path(__file__).resolve().parents[2]


class McpTestServer:
    """`python -m tests.tools.mcp_server` on 127.0.0.1: start, stop, kill, read its counts.

    The port is chosen when the object is made, so a test can hand out the URL of a server that
    is not running yet and start it later."""

    def __init__(self, count_file: Path, port: int | None = None) -> None:
        self.port = port or free_port()
        self.count_file = count_file
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/mcp"

    def start(self, timeout: float = 30.0) -> McpTestServer:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.tools.mcp_server", "--port", str(self.port),
             "--count-file", str(self.count_file)],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )  # fmt: skip
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                err = self.process.stderr.read().decode() if self.process.stderr else ""
                raise RuntimeError(f"MCP test server exited early:\n{err[-3000:]}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"MCP test server did not listen on port {self.port}")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        if self.process and self.process.stderr:
            self.process.stderr.close()

    def counts(self) -> dict[str, int]:
        """Invocations per tool since the last `reset_counts`."""
        return read_counts(self.count_file)

    def reset_counts(self) -> None:
        self.count_file.write_text("{}", encoding="utf-8")


@pytest.fixture(scope="session")
def mcp_server_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[McpTestServer]:
    """One MCP test server for the whole session (starting one takes about a second)."""
    server = McpTestServer(tmp_path_factory.mktemp("mcp") / "counts.json").start()
    yield server
    server.stop()


@pytest.fixture
def mcp_server(mcp_server_process: McpTestServer) -> McpTestServer:
    """The session's MCP test server with its counts at zero."""
    mcp_server_process.reset_counts()
    return mcp_server_process


@pytest.fixture
def idle_mcp_server(tmp_path: Path) -> Iterator[McpTestServer]:
    """An MCP test server of this test's own, not started: its URL refuses connections until
    the test calls `start()` (the test may also `stop()` it or kill its process)."""
    server = McpTestServer(tmp_path / "mcp-counts.json")
    yield server
    server.stop()
