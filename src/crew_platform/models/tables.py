from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    false,
)
from sqlalchemy.orm import Mapped, mapped_column

from crew_platform.common.limits import (
    API_KEY_ID_LENGTH,
    CALL_ID_LENGTH,
    EVENT_LENGTH,
    NAME_LENGTH,
    PROCESS_ID_LENGTH,
    STATE_LENGTH,
    STATUS_LENGTH,
    TASK_TYPE_LENGTH,
    URL_LENGTH,
    WORKFLOW_TYPE_LENGTH,
)
from crew_platform.db import Base, JSONType, UTCDateTime, utcnow


class TimestampMixin:
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)


class Agent(TimestampMixin, Base):
    __tablename__ = "agents"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(NAME_LENGTH), unique=True)
    role: Mapped[str] = mapped_column(Text)
    goal: Mapped[str] = mapped_column(Text)
    backstory: Mapped[str | None] = mapped_column(Text)
    model: Mapped[str] = mapped_column(String(NAME_LENGTH))
    temperature: Mapped[float] = mapped_column(Float)
    max_tokens: Mapped[int] = mapped_column(Integer)
    top_p: Mapped[float] = mapped_column(Float)
    is_active: Mapped[bool] = mapped_column(Boolean, default=True, index=True)
    created_by: Mapped[str | None] = mapped_column(String(NAME_LENGTH))
    config: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    capabilities: Mapped[list[str]] = mapped_column(JSONType, default=list)
    tools: Mapped[list[str]] = mapped_column(JSONType, default=list)


class Workflow(TimestampMixin, Base):
    __tablename__ = "workflows"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(NAME_LENGTH), unique=True)
    description: Mapped[str | None] = mapped_column(Text)
    workflow_type: Mapped[str] = mapped_column(String(WORKFLOW_TYPE_LENGTH))
    config: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    is_active: Mapped[bool] = mapped_column(Boolean, default=True, index=True)
    status: Mapped[str] = mapped_column(String(STATE_LENGTH), default="active")
    created_by: Mapped[str | None] = mapped_column(String(NAME_LENGTH))


class Task(TimestampMixin, Base):
    __tablename__ = "tasks"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    workflow_id: Mapped[int] = mapped_column(
        ForeignKey("workflows.id", ondelete="CASCADE"), index=True
    )
    agent_id: Mapped[int | None] = mapped_column(ForeignKey("agents.id"), index=True)
    name: Mapped[str] = mapped_column(String(NAME_LENGTH))
    description: Mapped[str | None] = mapped_column(Text)
    expected_output: Mapped[str | None] = mapped_column(Text)
    task_type: Mapped[str] = mapped_column(String(TASK_TYPE_LENGTH))
    priority: Mapped[int] = mapped_column(Integer, default=0)
    order: Mapped[int] = mapped_column("position", Integer, default=0)
    input_data: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    config: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    dependencies: Mapped[list[int]] = mapped_column(JSONType, default=list)
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    human_input: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    """Its agent's answer is a draft a person approves or returns with feedback."""
    created_by: Mapped[str | None] = mapped_column(String(NAME_LENGTH))
    context: Mapped[list[int] | None] = mapped_column(JSONType)
    """Tasks whose outputs the prompt shows; None: the workflow type's default."""
    output_schema: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    """Plain JSON, not JSONB: kept as written, the order of its properties included (the order
    in which a model held to the schema writes them)."""
    guardrail: Mapped[str | None] = mapped_column(Text)
    guardrail_max_retries: Mapped[int] = mapped_column(Integer, default=2, server_default="2")


class Execution(Base):
    __tablename__ = "executions"
    __table_args__ = (Index("ix_executions_workflow_status", "workflow_id", "status"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    workflow_id: Mapped[int] = mapped_column(ForeignKey("workflows.id", ondelete="CASCADE"))
    status: Mapped[str] = mapped_column(String(STATUS_LENGTH), index=True)
    mode: Mapped[str] = mapped_column(String(STATE_LENGTH), default="workflow")
    input_data: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    config: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    plan: Mapped[list[dict[str, Any]]] = mapped_column(JSONType, default=list)
    output_data: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    error_message: Mapped[str | None] = mapped_column(Text)
    tokens_used: Mapped[int] = mapped_column(Integer, default=0)
    last_seq: Mapped[int] = mapped_column(Integer, default=0)
    created_by: Mapped[str | None] = mapped_column(String(NAME_LENGTH))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    lease_owner: Mapped[str | None] = mapped_column(String(PROCESS_ID_LENGTH))
    """The process whose runner holds this execution (`workers.id`); None once it let go."""
    leased_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class Worker(Base):
    """A live (or lately live) process that runs executions. Its leases last until `expires_at`,
    which its heartbeat keeps pushing on; both times are the database's clock."""

    __tablename__ = "workers"

    id: Mapped[str] = mapped_column(String(PROCESS_ID_LENGTH), primary_key=True)
    kind: Mapped[str] = mapped_column(String(STATE_LENGTH))
    host: Mapped[str] = mapped_column(String(NAME_LENGTH))
    pid: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime())
    heartbeat_at: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())


class TaskRun(Base):
    """One attempt of one task inside one execution: the engine's checkpoint."""

    __tablename__ = "task_runs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    execution_id: Mapped[int] = mapped_column(
        ForeignKey("executions.id", ondelete="CASCADE"), index=True
    )
    task_id: Mapped[int] = mapped_column(ForeignKey("tasks.id", ondelete="CASCADE"), index=True)
    agent_id: Mapped[int | None] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(STATUS_LENGTH))
    attempt: Mapped[int] = mapped_column(Integer, default=1)
    model: Mapped[str | None] = mapped_column(String(NAME_LENGTH))
    """The model that answered (a fallback when the agent's was not served)."""
    input: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    output: Mapped[str | None] = mapped_column(Text)
    output_json: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    """The parsed answer of a task with an `output_schema` (`output` holds its JSON text),
    in plain JSON: its keys keep the order the model wrote them in."""
    error: Mapped[str | None] = mapped_column(Text)
    feedback: Mapped[str | None] = mapped_column(Text)
    """What the reviewer answered to this run's draft (status `changes_requested`)."""
    answer_log: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON, deferred=True)
    """The model's answers after the tool loop (the answer a guardrail judges, the judge's
    verdicts, revisions) and the events between them, in order, as far as they were stored
    before a later model call: a resumed attempt goes on from them (`engine/answer_log.py`)."""
    tokens_used: Mapped[int] = mapped_column(Integer, default=0)
    execution_time: Mapped[float | None] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class ExecutionLog(Base):
    """Persisted events of an execution, numbered by `seq` (SSE replays from it)."""

    __tablename__ = "execution_logs"
    __table_args__ = (UniqueConstraint("execution_id", "seq", name="uq_execution_logs_seq"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    execution_id: Mapped[int] = mapped_column(
        ForeignKey("executions.id", ondelete="CASCADE"), index=True
    )
    seq: Mapped[int] = mapped_column(Integer)
    timestamp: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    level: Mapped[str] = mapped_column(String(STATE_LENGTH))
    event: Mapped[str] = mapped_column(String(EVENT_LENGTH))
    message: Mapped[str] = mapped_column(Text)
    task_id: Mapped[int | None] = mapped_column(Integer)
    data: Mapped[dict[str, Any] | None] = mapped_column(JSONType)


class Tool(TimestampMixin, Base):
    """A tool a user defined over HTTP (built-in and MCP tools are not stored here)."""

    __tablename__ = "tools"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(NAME_LENGTH), unique=True)
    description: Mapped[str] = mapped_column(Text)
    parameters: Mapped[dict[str, Any]] = mapped_column(JSONType)
    """The JSON Schema of the arguments, given to the model."""
    http: Mapped[dict[str, Any]] = mapped_column(JSONType)
    """`method`, `url`, `headers` (values may hold `${ENV_NAME}`, resolved only at call time)."""
    created_by: Mapped[str | None] = mapped_column(String(NAME_LENGTH))


class McpServer(TimestampMixin, Base):
    """An MCP server whose tools agents may call as `<server>.<tool>`."""

    __tablename__ = "mcp_servers"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(NAME_LENGTH), unique=True)
    url: Mapped[str | None] = mapped_column(String(URL_LENGTH))
    """Streamable HTTP endpoint; None for a stdio server."""
    command: Mapped[list[str] | None] = mapped_column(JSONType)
    """stdio transport (only with MCP_ALLOW_STDIO=true)."""
    headers: Mapped[dict[str, str] | None] = mapped_column(JSONType)
    tools: Mapped[list[dict[str, Any]]] = mapped_column(JSONType, default=list)
    """The server's tools as last listed (`name`, `description`, `input_schema`)."""
    reachable: Mapped[bool] = mapped_column(Boolean, default=False)
    last_error: Mapped[str | None] = mapped_column(Text)
    refreshed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    created_by: Mapped[str | None] = mapped_column(String(NAME_LENGTH))


class ToolCall(Base):
    """One tool call of one model answer inside a task run: recorded before it runs and when
    it returns, so a resumed step replays the conversation and never calls a finished tool
    again. A coworker's call inside a delegation of a hierarchical run is a row of the manager's
    task run too, marked with the delegation call it belongs to."""

    __tablename__ = "tool_calls"
    __table_args__ = (
        UniqueConstraint(
            "task_run_id",
            "delegation_iteration",
            "delegation_position",
            "iteration",
            "position",
            name="uq_tool_calls_turn",
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    execution_id: Mapped[int] = mapped_column(
        ForeignKey("executions.id", ondelete="CASCADE"), index=True
    )
    task_run_id: Mapped[int] = mapped_column(
        ForeignKey("task_runs.id", ondelete="CASCADE"), index=True
    )
    task_id: Mapped[int] = mapped_column(Integer)
    iteration: Mapped[int] = mapped_column(Integer)
    """Which model call of the step asked for it (1-based)."""
    position: Mapped[int] = mapped_column(Integer)
    """Its place among the calls of that model answer (0-based)."""
    delegation_iteration: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    """For a coworker's call inside a delegation: the `iteration` of that delegation call
    (`delegate_work` or `ask_question`) in the run; 0 for the run's own calls."""
    delegation_position: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    """For a coworker's call: the `position` of its delegation call; 0 for the run's own."""
    delegation_call_id: Mapped[str | None] = mapped_column(String(CALL_ID_LENGTH))
    """For a coworker's call: the `call_id` of its delegation call (for readers)."""
    call_id: Mapped[str] = mapped_column(String(CALL_ID_LENGTH))
    tool: Mapped[str] = mapped_column(String(NAME_LENGTH))
    arguments: Mapped[str] = mapped_column(Text)
    """The arguments as the model sent them (JSON text, possibly invalid)."""
    assistant_content: Mapped[str | None] = mapped_column(Text)
    """Text the model answered beside its tool calls (kept on position 0)."""
    status: Mapped[str] = mapped_column(String(STATE_LENGTH))
    result: Mapped[str | None] = mapped_column(Text)
    """What the model was given back: the tool's result, or its error text."""
    error: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class ApiKey(Base):
    """An API key (`crew-platform api-key create`). Only an HMAC of the key is stored; `key_id`,
    the key's public middle part, finds the row."""

    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(NAME_LENGTH), unique=True)
    key_id: Mapped[str] = mapped_column(String(API_KEY_ID_LENGTH), unique=True)
    key_hash: Mapped[str] = mapped_column(String(64))
    """HMAC-SHA256 of the whole key under API_KEY_SECRET, hex."""
    subject: Mapped[str] = mapped_column(String(NAME_LENGTH))
    """The principal the key acts as (`created_by` of what it creates)."""
    scopes: Mapped[list[str]] = mapped_column(JSONType, default=list)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
