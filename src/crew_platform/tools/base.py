"""What the engine and the API know of tools: a spec, a call, an error. Nothing here is HTTP."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol


class ToolSource(StrEnum):
    BUILTIN = "builtin"
    HTTP = "http"
    MCP = "mcp"


@dataclass(frozen=True)
class ToolSpec:
    """One tool as `GET /api/v1/tools` lists it and as the model is offered it."""

    name: str
    """Unique across every source; an MCP tool is `<server>.<tool>`."""
    description: str
    parameters: Mapping[str, Any]
    """JSON Schema of the arguments (an object schema)."""
    source: ToolSource
    server: str | None = None
    """The MCP server's name, for MCP tools."""
    available: bool = True
    """False while its MCP server is unreachable (calls then return a tool error)."""


class ToolError(Exception):
    """A tool that could not do what was asked: its text goes back to the model as the tool's
    result (so the model can recover), never to the client as a crash."""


class Toolbox(Protocol):
    async def resolve(self, names: Sequence[str]) -> tuple[list[ToolSpec], list[str]]:
        """The specs of the tools `names` refer to, and the names that refer to none."""
        ...

    async def call(self, name: str, arguments: Mapping[str, Any], *, timeout: float) -> str:
        """Run the tool; its result as text. Raises `ToolError` for anything the model should
        be told (bad arguments, a failure, a time-out), after at most `timeout` seconds."""
        ...
