"""Engine tests run on both backends. Model calls get a long timeout here: a call held by the
stub must only end because the test lets it go or the platform hangs up (cancel), never
because the client gave up waiting.

The test MCP server's fixtures come from tests/tools (the tool loop calls its tools)."""

from __future__ import annotations

import pytest

from crew_platform.devtools.llm_stub import StubServer
from crew_platform.settings import Settings
from tests.conftest import make_settings
from tests.tools.conftest import idle_mcp_server, mcp_server, mcp_server_process

__all__ = ["idle_mcp_server", "mcp_server", "mcp_server_process"]


@pytest.fixture
def settings(database_url: str, stub: StubServer) -> Settings:
    return make_settings(database_url, stub, llm_timeout_seconds=120)
