"""ORM tables, shared by the features (kept together to avoid import cycles)."""

from crew_platform.models.tables import (
    Agent,
    ApiKey,
    Execution,
    ExecutionLog,
    McpServer,
    Task,
    TaskRun,
    Tool,
    ToolCall,
    Worker,
    Workflow,
)

__all__ = [
    "Agent",
    "ApiKey",
    "Execution",
    "ExecutionLog",
    "McpServer",
    "Task",
    "TaskRun",
    "Tool",
    "ToolCall",
    "Worker",
    "Workflow",
]
