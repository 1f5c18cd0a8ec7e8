from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Query, Response

from crew_platform.common.deps import BusDep, DispatcherDep, SessionDep, ToolboxDep
from crew_platform.common.http import ERROR_RESPONSES, TOTAL_COUNT, PageDep, WorkflowId
from crew_platform.common.schemas import Deleted
from crew_platform.engine import ExecutionStatus
from crew_platform.executions import control, repository, starting
from crew_platform.executions.schemas import ControlResult, ExecuteRequest, ExecutionRead
from crew_platform.workflows import service
from crew_platform.workflows.schemas import WorkflowCreate, WorkflowRead, WorkflowUpdate

router = APIRouter(prefix="/api/v1/workflows", tags=["workflows"], responses=ERROR_RESPONSES)


@router.get(
    "/", response_model=list[WorkflowRead], responses=TOTAL_COUNT, summary="Get all workflows"
)
@router.get("", response_model=list[WorkflowRead], include_in_schema=False)
async def list_workflows(
    session: SessionDep,
    response: Response,
    page: PageDep,
    active_only: Annotated[bool, Query(description="Filter only active workflows")] = True,
) -> list[WorkflowRead]:
    items, total = await service.list_workflows(
        session, skip=page.skip, limit=page.limit, active_only=active_only
    )
    response.headers["X-Total-Count"] = str(total)
    return items


@router.post("/", response_model=WorkflowRead, status_code=201, summary="Create workflow")
@router.post("", response_model=WorkflowRead, status_code=201, include_in_schema=False)
async def create_workflow(data: WorkflowCreate, session: SessionDep) -> WorkflowRead:
    return await service.create_workflow(session, data=data)


@router.get("/{workflow_id}", response_model=WorkflowRead, summary="Get workflow by ID")
async def get_workflow(workflow_id: WorkflowId, session: SessionDep) -> WorkflowRead:
    return await service.read_workflow(session, workflow_id)


@router.put("/{workflow_id}", response_model=WorkflowRead, summary="Update workflow")
async def update_workflow(
    workflow_id: WorkflowId, data: WorkflowUpdate, session: SessionDep
) -> WorkflowRead:
    return await service.update_workflow(session, workflow_id=workflow_id, data=data)


@router.delete("/{workflow_id}", response_model=Deleted, summary="Delete workflow")
async def delete_workflow(
    workflow_id: WorkflowId, session: SessionDep, dispatcher: DispatcherDep
) -> Deleted:
    """Deletes the workflow with its tasks and execution history; running executions are
    aborted first."""
    await service.get_workflow(session, workflow_id)
    await control.stop_all(session, dispatcher, workflow_id=workflow_id)
    await service.delete_workflow(session, workflow_id=workflow_id)
    return Deleted(id=workflow_id, message=f"Workflow {workflow_id} deleted")


@router.post(
    "/{workflow_id}/execute",
    response_model=ExecutionRead,
    status_code=202,
    summary="Execute workflow",
)
async def execute_workflow(
    workflow_id: WorkflowId,
    session: SessionDep,
    dispatcher: DispatcherDep,
    toolbox: ToolboxDep,
    request: Annotated[ExecuteRequest | None, Body()] = None,
) -> ExecutionRead:
    """422 `TOOL_NOT_FOUND` when an agent of its tasks names a tool that does not exist."""
    return await starting.start_workflow(
        session, dispatcher, toolbox, workflow_id=workflow_id, request=request or ExecuteRequest()
    )


@router.get(
    "/{workflow_id}/executions",
    response_model=list[ExecutionRead],
    responses=TOTAL_COUNT,
    summary="Get workflow executions",
)
async def workflow_executions(
    workflow_id: WorkflowId,
    session: SessionDep,
    response: Response,
    page: PageDep,
    status: Annotated[ExecutionStatus | None, Query(description="Filter by status")] = None,
) -> list[ExecutionRead]:
    items, total = await repository.workflow_executions(
        session, workflow_id=workflow_id, skip=page.skip, limit=page.limit, status=status
    )
    response.headers["X-Total-Count"] = str(total)
    return items


@router.post("/{workflow_id}/pause", response_model=ControlResult, summary="Pause workflow")
async def pause_workflow(
    workflow_id: WorkflowId, session: SessionDep, bus: BusDep, dispatcher: DispatcherDep
) -> ControlResult:
    return await control.pause(session, bus, dispatcher, workflow_id=workflow_id)


@router.post("/{workflow_id}/resume", response_model=ControlResult, summary="Resume workflow")
async def resume_workflow(
    workflow_id: WorkflowId, session: SessionDep, bus: BusDep, dispatcher: DispatcherDep
) -> ControlResult:
    return await control.resume(session, bus, dispatcher, workflow_id=workflow_id)


@router.post("/{workflow_id}/cancel", response_model=ControlResult, summary="Cancel workflow")
async def cancel_workflow(
    workflow_id: WorkflowId, session: SessionDep, bus: BusDep, dispatcher: DispatcherDep
) -> ControlResult:
    return await control.cancel_workflow(session, bus, dispatcher, workflow_id=workflow_id)
