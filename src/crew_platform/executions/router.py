from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response

from crew_platform.common.deps import BusDep, DispatcherDep, SessionDep
from crew_platform.common.http import ERROR_RESPONSES, ExecutionId, PageDep, WorkflowFilter
from crew_platform.common.limits import STATE_LENGTH
from crew_platform.common.types import SafeText
from crew_platform.engine import ExecutionStatus
from crew_platform.executions import control, repository
from crew_platform.executions import input as human_input
from crew_platform.executions.schemas import (
    ControlResult,
    ExecutionRead,
    ExecutionStats,
    ExecutionStatusRead,
    InputRequest,
    LogEntry,
)

router = APIRouter(prefix="/api/v1/executions", tags=["executions"], responses=ERROR_RESPONSES)


@router.get("/", response_model=list[ExecutionRead], summary="Get all executions")
@router.get("", response_model=list[ExecutionRead], include_in_schema=False)
async def list_executions(
    session: SessionDep,
    response: Response,
    page: PageDep,
    workflow_id: WorkflowFilter = None,
    status: Annotated[ExecutionStatus | None, Query(description="Filter by status")] = None,
) -> list[ExecutionRead]:
    items, total = await repository.list_executions(
        session, skip=page.skip, limit=page.limit, workflow_id=workflow_id, status=status
    )
    response.headers["X-Total-Count"] = str(total)
    return items


@router.get("/stats", response_model=ExecutionStats, summary="Get execution statistics")
async def execution_stats(
    session: SessionDep,
    workflow_id: WorkflowFilter = None,
    days: Annotated[int, Query(ge=1, le=365, description="Number of days to include")] = 30,
) -> ExecutionStats:
    return await repository.execution_stats(session, workflow_id=workflow_id, days=days)


@router.get("/{execution_id}", response_model=ExecutionRead, summary="Get execution by ID")
async def get_execution(execution_id: ExecutionId, session: SessionDep) -> ExecutionRead:
    return ExecutionRead.model_validate(await repository.get_execution(session, execution_id))


@router.get("/{execution_id}/logs", response_model=list[LogEntry], summary="Get execution logs")
async def execution_logs(
    execution_id: ExecutionId,
    session: SessionDep,
    response: Response,
    page: PageDep,
    level: Annotated[
        SafeText | None, Query(max_length=STATE_LENGTH, description="Only this level")
    ] = None,
) -> list[LogEntry]:
    items, total = await repository.execution_logs(
        session, execution_id=execution_id, skip=page.skip, limit=page.limit, level=level
    )
    response.headers["X-Total-Count"] = str(total)
    return items


@router.post("/{execution_id}/cancel", response_model=ControlResult, summary="Cancel execution")
async def cancel_execution(
    execution_id: ExecutionId, session: SessionDep, bus: BusDep, dispatcher: DispatcherDep
) -> ControlResult:
    return await control.cancel_execution(session, bus, dispatcher, execution_id=execution_id)


@router.post(
    "/{execution_id}/input",
    response_model=ExecutionRead,
    status_code=202,
    summary="Answer the draft an execution waits on",
)
async def give_input(
    execution_id: ExecutionId,
    data: InputRequest,
    session: SessionDep,
    bus: BusDep,
    dispatcher: DispatcherDep,
) -> ExecutionRead:
    """Approve the waiting draft (`{"approve": true}`) or return it with feedback
    (`{"feedback": "..."}`); the run goes on in the background. 409 unless the execution is
    `waiting_for_input`."""
    return await human_input.give_input(
        session, bus, dispatcher, execution_id=execution_id, data=data
    )


@router.get(
    "/{execution_id}/status", response_model=ExecutionStatusRead, summary="Get execution status"
)
async def execution_status(execution_id: ExecutionId, session: SessionDep) -> ExecutionStatusRead:
    return await repository.execution_status(session, execution_id=execution_id)
