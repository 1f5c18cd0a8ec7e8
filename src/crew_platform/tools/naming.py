"""Tool names as the API shows them and as providers accept them."""

from __future__ import annotations

import re
from collections.abc import Iterable

_INVALID = re.compile(r"[^a-zA-Z0-9_-]")


def to_model_name(name: str) -> str:
    """`server.tool` -> `server__tool`, valid for providers (`^[a-zA-Z0-9_-]{1,64}$`)."""
    return _INVALID.sub("_", name.replace(".", "__"))[:64]


def from_model_name(model_name: str, known: Iterable[str]) -> str | None:
    return next((name for name in known if to_model_name(name) == model_name), None)
