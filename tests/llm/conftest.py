"""The LLM layer's behaviour does not depend on the database: these tests run on SQLite only
(the engine and executions suites run on both backends)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from crew_platform.devtools.llm_stub import StubServer


@pytest.fixture
def backend() -> str:
    return "sqlite"


@pytest.fixture(scope="session")
def openai_stub() -> Iterator[StubServer]:
    """A second OpenAI-compatible server, standing for OPENAI_BASE_URL (vLLM, Ollama ...)."""
    server = StubServer().start()
    yield server
    server.stop()


@pytest.fixture
def other_stub(openai_stub: StubServer) -> StubServer:
    openai_stub.reset()
    return openai_stub
