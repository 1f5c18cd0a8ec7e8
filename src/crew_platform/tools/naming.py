"""Tool names as the API shows them and as a model provider accepts them.

Providers accept `^[a-zA-Z0-9_-]{1,64}$`; MCP tools are `<server>.<tool>` in the API, so the
model sees `<server>__<tool>`. A name still too long keeps a hash of the whole to stay unique.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable

MODEL_NAME_MAX = 64
_INVALID = re.compile(r"[^a-zA-Z0-9_-]")
_HASH_LENGTH = 8


def to_model_name(name: str) -> str:
    candidate = _INVALID.sub("_", name.replace(".", "__")) or "_"
    if len(candidate) <= MODEL_NAME_MAX:
        return candidate
    digest = hashlib.sha256(name.encode()).hexdigest()[:_HASH_LENGTH]
    return f"{candidate[: MODEL_NAME_MAX - _HASH_LENGTH - 1]}_{digest}"


def from_model_name(model_name: str, known: Iterable[str]) -> str | None:
    """The tool among `known` that the model means by `model_name` (None: no such tool)."""
    names = list(known)
    if model_name in names:
        return model_name
    return next((name for name in names if to_model_name(name) == model_name), None)
