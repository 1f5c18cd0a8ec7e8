from __future__ import annotations

from pydantic import BaseModel


class ModelRead(BaseModel):
    id: str
    provider: str
    model: str
    owned_by: str | None


class ProviderState(BaseModel):
    name: str
    configured: bool
    base_url: str | None
    error: str | None


class ModelList(BaseModel):
    default_model: str
    models: list[ModelRead]
    providers: list[ProviderState]


class ProviderHealth(BaseModel):
    """Whether the provider has a key (never the key itself) and where it is called."""

    configured: bool
    base_url: str | None


class Health(BaseModel):
    status: str
    providers: dict[str, ProviderHealth]
