from __future__ import annotations

import pytest

from crew_platform.devtools.llm_stub import StubServer
from crew_platform.settings import Settings
from tests.conftest import make_settings
from tests.tools.conftest import idle_mcp_server, mcp_server, mcp_server_process

__all__ = ["idle_mcp_server", "mcp_server", "mcp_server_process"]

LOOPBACK_ALLOWED = "127.0.0.1/32"


@pytest.fixture
def settings(database_url: str, stub: StubServer) -> Settings:
    """The test MCP server listens on loopback: allowed here, as a user would allow it."""
    return make_settings(database_url, stub, tools_allowed_networks=LOOPBACK_ALLOWED)
