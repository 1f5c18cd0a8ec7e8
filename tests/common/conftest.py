"""Fixtures for the error-envelope tests."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import pytest

from tests.api import refusing_trigger

FailingWrites = Callable[[str, str], AbstractAsyncContextManager[None]]


@pytest.fixture
def failing_writes(app: Any, backend: str) -> FailingWrites:
    """`async with failing_writes("agents", "INSERT"):` that write fails in the database."""

    def install(table: str, event: str) -> AbstractAsyncContextManager[None]:
        return refusing_trigger(app.state.engine, backend, table, event)

    return install
