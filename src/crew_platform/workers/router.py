"""GET /api/v1/workers: who runs what."""

from __future__ import annotations

from fastapi import APIRouter

from crew_platform.common.deps import SessionDep
from crew_platform.common.http import ERROR_RESPONSES
from crew_platform.workers import service
from crew_platform.workers.schemas import WorkerRead

router = APIRouter(prefix="/api/v1/workers", tags=["workers"], responses=ERROR_RESPONSES)


@router.get("/", response_model=list[WorkerRead], summary="List live processes and their runs")
@router.get("", response_model=list[WorkerRead], include_in_schema=False)
async def list_workers(session: SessionDep) -> list[WorkerRead]:
    """Every process whose lease is live, oldest first, with the executions it holds."""
    return await service.live_workers(session)
