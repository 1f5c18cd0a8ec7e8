from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Query, Response

from crew_platform.common.deps import BusDep, DispatcherDep, SessionDep, ToolboxDep
from crew_platform.common.http import (
    ERROR_RESPONSES,
    TOTAL_COUNT,
    AgentFilter,
    PageDep,
    TaskId,
    WorkflowFilter,
    WorkflowId,
)
from crew_platform.common.schemas import Deleted
from crew_platform.executions import control, repository, starting
from crew_platform.executions.schemas import ExecuteRequest, ExecutionRead, TaskRetryResult
from crew_platform.tasks import service
from crew_platform.tasks.schemas import (
    TaskCreate,
    TaskRead,
    TaskRunRead,
    TaskStatus,
    TaskUpdate,
    ToolCallRead,
)

router = APIRouter(prefix="/api/v1/tasks", tags=["tasks"], responses=ERROR_RESPONSES)


@router.get("/", response_model=list[TaskRead], responses=TOTAL_COUNT, summary="Get all tasks")
@router.get("", response_model=list[TaskRead], include_in_schema=False)
async def list_tasks(
    session: SessionDep,
    response: Response,
    page: PageDep,
    workflow_id: WorkflowFilter = None,
    agent_id: AgentFilter = None,
    status: Annotated[
        TaskStatus | None, Query(description="Filter by status (of the task's latest run)")
    ] = None,
) -> list[TaskRead]:
    items, total = await service.list_tasks(
        session,
        skip=page.skip,
        limit=page.limit,
        workflow_id=workflow_id,
        agent_id=agent_id,
        status=status,
    )
    response.headers["X-Total-Count"] = str(total)
    return items


@router.post("/", response_model=TaskRead, status_code=201, summary="Create task")
@router.post("", response_model=TaskRead, status_code=201, include_in_schema=False)
async def create_task(data: TaskCreate, session: SessionDep) -> TaskRead:
    return await service.create_task(session, data=data)


@router.get(
    "/workflow/{workflow_id}",
    response_model=list[TaskRead],
    responses=TOTAL_COUNT,
    summary="Get workflow tasks",
)
@router.get("/workflow/{workflow_id}/", response_model=list[TaskRead], include_in_schema=False)
async def workflow_tasks(
    workflow_id: WorkflowId, session: SessionDep, response: Response
) -> list[TaskRead]:
    """The workflow's tasks in execution order: `order`, then `priority` descending, then id."""
    items = await service.workflow_tasks(session, workflow_id)
    response.headers["X-Total-Count"] = str(len(items))
    return items


@router.get("/{task_id}", response_model=TaskRead, summary="Get task by ID")
async def get_task(task_id: TaskId, session: SessionDep) -> TaskRead:
    return await service.read_task(session, task_id)


@router.put("/{task_id}", response_model=TaskRead, summary="Update task")
async def update_task(task_id: TaskId, data: TaskUpdate, session: SessionDep) -> TaskRead:
    return await service.update_task(session, task_id=task_id, data=data)


@router.delete("/{task_id}", response_model=Deleted, summary="Delete task")
async def delete_task(task_id: TaskId, session: SessionDep) -> Deleted:
    await service.delete_task(session, task_id=task_id)
    return Deleted(id=task_id, message=f"Task {task_id} deleted")


@router.post(
    "/{task_id}/execute", response_model=ExecutionRead, status_code=202, summary="Execute task"
)
async def execute_task(
    task_id: TaskId,
    session: SessionDep,
    dispatcher: DispatcherDep,
    toolbox: ToolboxDep,
    request: Annotated[ExecuteRequest | None, Body()] = None,
) -> ExecutionRead:
    """Runs this one task now with its agent, as an execution of mode `task`; its
    dependencies' latest outputs are its context."""
    return await starting.start_task(
        session, dispatcher, toolbox, task_id=task_id, request=request or ExecuteRequest()
    )


@router.get(
    "/{task_id}/executions",
    response_model=list[TaskRunRead],
    responses=TOTAL_COUNT,
    summary="Get task executions",
)
async def task_executions(
    task_id: TaskId, session: SessionDep, response: Response, page: PageDep
) -> list[TaskRunRead]:
    runs, total = await repository.task_runs(
        session, task_id=task_id, skip=page.skip, limit=page.limit
    )
    response.headers["X-Total-Count"] = str(total)
    calls = await repository.tool_calls_of(session, [r.id for r in runs])
    reads = [TaskRunRead.model_validate(r) for r in runs]
    for read in reads:
        read.tool_calls = [ToolCallRead.model_validate(c) for c in calls.get(read.id, [])]
    return reads


@router.post(
    "/{task_id}/retry", response_model=TaskRetryResult, status_code=202, summary="Retry task"
)
async def retry_task(
    task_id: TaskId, session: SessionDep, bus: BusDep, dispatcher: DispatcherDep
) -> TaskRetryResult:
    return await control.retry_task(session, bus, dispatcher, task_id=task_id)
