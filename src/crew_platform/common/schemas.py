from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, field_validator

from crew_platform.common.types import unstorable


class RequestModel(BaseModel):
    """Base of every request body: unknown fields are ignored, and no field may carry a value
    the database cannot store (NUL characters, unpaired surrogates, NaN/Infinity), so such
    input is a 422 naming the field instead of a failed write."""

    model_config = ConfigDict(extra="ignore")

    @field_validator("*", mode="before")
    @classmethod
    def _storable(cls, value: Any) -> Any:
        if (problem := unstorable(value)) is not None:
            raise ValueError(problem)
        return value


class Deleted(BaseModel):
    id: int
    deleted: bool = True
    message: str
