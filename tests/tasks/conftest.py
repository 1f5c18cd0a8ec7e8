"""Fixtures for the tasks tests: an agent and a workflow to hang tasks on (ids 1 and 1 on
the fresh database every test gets)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.api import make_agent, make_workflow


@pytest.fixture
async def agent(client: httpx.AsyncClient) -> Any:
    return await make_agent(client)


@pytest.fixture
async def workflow(client: httpx.AsyncClient) -> Any:
    return await make_workflow(client)
