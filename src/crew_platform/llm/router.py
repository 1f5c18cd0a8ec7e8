"""GET /api/v1/models: what the configured providers serve right now (cached briefly)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from pydantic import BaseModel

from crew_platform.common.http import ERROR_RESPONSES
from crew_platform.llm.errors import LLMError
from crew_platform.llm.gateway import LLMGateway
from crew_platform.llm.registry import CEREBRAS

router = APIRouter(prefix="/api/v1/models", tags=["models"], responses=ERROR_RESPONSES)


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


@router.get("/", response_model=ModelList, summary="List models the providers serve now")
@router.get("", response_model=ModelList, include_in_schema=False)
async def list_models(request: Request) -> ModelList:
    """`id` is the value to put in an agent's `model`: bare for Cerebras, `provider:model`
    otherwise."""
    gateway: LLMGateway = request.app.state.gateway
    models: list[ModelRead] = []
    providers: list[ProviderState] = []
    for config in gateway.providers():
        error = None
        if config.api_key:
            try:
                for info in await gateway.list_models(config.name):
                    ident = info.id if config.name == CEREBRAS else f"{config.name}:{info.id}"
                    models.append(
                        ModelRead(
                            id=ident, provider=config.name, model=info.id, owned_by=info.owned_by
                        )
                    )
            except LLMError as exc:
                error = exc.message
        else:
            error = f"not configured: set {config.key_variable}"
        providers.append(
            ProviderState(
                name=config.name,
                configured=bool(config.api_key),
                base_url=config.base_url,
                error=error,
            )
        )
    return ModelList(
        default_model=request.app.state.settings.default_model, models=models, providers=providers
    )
