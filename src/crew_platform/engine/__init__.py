"""The engine's public face: what features (services, routers) may use.

Features import from `crew_platform.engine` only, never from its modules (import-linter checks
this in `make lint`): the runner, the scheduler and the step stay free to change.
"""

from crew_platform.engine.control import (
    abort_runners,
    cancel_executions,
    pause_workflow,
    resume_workflow,
    retry_execution,
    unfinished_executions,
)
from crew_platform.engine.delegation import MAX_DELEGATIONS_CEILING, role_key
from crew_platform.engine.dispatch import Dispatcher
from crew_platform.engine.executor import Executor
from crew_platform.engine.heartbeat import Heartbeat
from crew_platform.engine.journal import publish
from crew_platform.engine.lease import DatabaseNow, Process
from crew_platform.engine.loading import profile_of
from crew_platform.engine.manager import HIERARCHICAL, crew_agents, manager_agent_id
from crew_platform.engine.plan import dag_plan, execution_key, find_cycle, linear_plan
from crew_platform.engine.review import answer_draft
from crew_platform.engine.rules import RULES, Intent, Kind, Rule, allows, refusal
from crew_platform.engine.runner import ExecutionRunner
from crew_platform.engine.scheduler import Control
from crew_platform.engine.states import (
    FINISHED,
    UNFINISHED,
    ExecutionStatus,
    TaskRunStatus,
    WorkflowStatus,
)
from crew_platform.engine.tool_loop import ToolLoop

__all__ = [
    "FINISHED",
    "HIERARCHICAL",
    "MAX_DELEGATIONS_CEILING",
    "RULES",
    "UNFINISHED",
    "Control",
    "DatabaseNow",
    "Dispatcher",
    "ExecutionRunner",
    "ExecutionStatus",
    "Executor",
    "Heartbeat",
    "Intent",
    "Kind",
    "Process",
    "Rule",
    "TaskRunStatus",
    "ToolLoop",
    "WorkflowStatus",
    "abort_runners",
    "allows",
    "answer_draft",
    "cancel_executions",
    "crew_agents",
    "dag_plan",
    "execution_key",
    "find_cycle",
    "linear_plan",
    "manager_agent_id",
    "pause_workflow",
    "profile_of",
    "publish",
    "refusal",
    "resume_workflow",
    "retry_execution",
    "role_key",
    "unfinished_executions",
]
