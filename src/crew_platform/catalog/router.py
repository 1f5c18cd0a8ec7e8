"""GET /api/v1/models: what the configured providers serve right now (cached briefly)."""

from __future__ import annotations

from fastapi import APIRouter, Request

from crew_platform.catalog import service
from crew_platform.catalog.schemas import ModelList
from crew_platform.common.http import ERROR_RESPONSES

router = APIRouter(prefix="/api/v1/models", tags=["models"], responses=ERROR_RESPONSES)


@router.get("/", response_model=ModelList, summary="List models the providers serve now")
@router.get("", response_model=ModelList, include_in_schema=False)
async def list_models(request: Request) -> ModelList:
    """`id` is the value to put in an agent's `model`: bare for Cerebras, `provider:model`
    otherwise."""
    return await service.list_models(
        request.app.state.gateway, request.app.state.settings.default_model
    )
