"""Keeps FastAPI from importing `pydantic.v1` (~50 ms of start-up) just to reject v1 models.

FastAPI checks every response model and parameter annotation with `is_pydantic_v1_model_class`,
which imports `pydantic.v1` to compare against its `BaseModel`. A class can only be a v1 model
if `pydantic.v1` has been imported already, so while it has not, the answer is "no" without the
import. Once anything imports `pydantic.v1`, FastAPI's own check runs unchanged. Importing this
module applies the shortcut; on a FastAPI without that function it does nothing.
"""

from __future__ import annotations

import sys
from typing import Any

from fastapi._compat import shared


def _install() -> bool:
    original = getattr(shared, "is_pydantic_v1_model_class", None)
    if original is None or getattr(original, "_crew_shortcut", False):
        return False

    def is_pydantic_v1_model_class(cls: Any) -> bool:
        return "pydantic.v1" in sys.modules and bool(original(cls))

    is_pydantic_v1_model_class._crew_shortcut = True  # type: ignore[attr-defined]
    shared.is_pydantic_v1_model_class = is_pydantic_v1_model_class
    return True


_install()
