"""`${ENV_NAME}` in header values: stored as written, resolved only when a call is made."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

from crew_platform.tools.base import ToolError

REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def referenced_names(headers: Mapping[str, str]) -> list[str]:
    """The environment variables the header values refer to, in order, once each."""
    names: list[str] = []
    for value in headers.values():
        for name in REFERENCE.findall(value):
            if name not in names:
                names.append(name)
    return names


def resolve_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """The headers with every `${ENV_NAME}` replaced by that variable's value. A variable that
    is not set is a `ToolError` naming it (and the header), never its would-be value."""

    def resolve(header: str, value: str) -> str:
        def substitute(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in os.environ:
                raise ToolError(
                    f"environment variable {name} is not set (referenced by header {header})"
                )
            return os.environ[name]

        return REFERENCE.sub(substitute, value)

    return {header: resolve(header, value) for header, value in headers.items()}
