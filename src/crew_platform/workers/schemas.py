from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field


class LeasedExecution(BaseModel):
    execution_id: int
    workflow_id: int
    status: str
    leased_at: datetime = Field(description="When this process took the execution")
    lease_age_seconds: float = Field(description="How long this process has held it")


class WorkerRead(BaseModel):
    id: str = Field(description="`host:pid:random`, made when the process started")
    kind: str = Field(
        description="`server` (serves the API and runs executions) or `worker` "
        "(`crew-platform worker`)"
    )
    host: str
    pid: int
    started_at: datetime
    last_heartbeat_at: datetime
    lease_expires_at: datetime = Field(
        description="Without another heartbeat by then, its executions are taken over"
    )
    executions: list[LeasedExecution] = Field(description="What it runs now, oldest lease first")
