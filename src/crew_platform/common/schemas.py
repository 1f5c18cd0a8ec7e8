from __future__ import annotations

from pydantic import BaseModel


class Deleted(BaseModel):
    id: int
    deleted: bool = True
    message: str
