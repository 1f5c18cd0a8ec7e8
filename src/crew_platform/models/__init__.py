"""ORM tables, shared by the features (kept together to avoid import cycles)."""

from crew_platform.models.tables import (
    Agent,
    Execution,
    ExecutionLog,
    Task,
    TaskRun,
    Workflow,
)

__all__ = ["Agent", "Execution", "ExecutionLog", "Task", "TaskRun", "Workflow"]
