"""Leases: which process runs a running execution.

Each process gets an id when it starts (`host:pid:random`) and a `workers` row whose `expires_at`
its heartbeat keeps LEASE_SECONDS ahead (`engine/heartbeat.py`). An execution's `lease_owner`
names the process whose runner holds it. A runner takes the lease in the very UPDATE that starts
the execution or takes it over (the rules START and TAKE_OVER), and only while nobody else holds
a live one (`free_for`); each later write of the runner is guarded by still holding it
(`held_by`, folded into the UPDATE that numbers the write's event). The lease is a column of the
execution's row, so a takeover and the old holder's next write serialise on that row: one of
them wins, and a process that lost its lease (stopped past its expiry, then woken) writes
nothing more to that execution.

Every time here is the database's clock (`DatabaseNow`), so processes on different machines
agree on who has expired.
"""

from __future__ import annotations

import os
import secrets
import socket
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Float,
    Select,
    Table,
    and_,
    bindparam,
    delete,
    exists,
    func,
    insert,
    literal,
    or_,
    select,
    update,
)
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement

from crew_platform.db import UTCDateTime
from crew_platform.engine.states import ExecutionStatus, WorkflowStatus
from crew_platform.models import Execution, Worker, Workflow

EXECUTIONS: Table = Execution.__table__  # type: ignore[assignment]
WORKERS: Table = Worker.__table__  # type: ignore[assignment]
WORKFLOWS: Table = Workflow.__table__  # type: ignore[assignment]

FORGET_AFTER_SECONDS = 3600
"""A process whose lease expired this long ago is forgotten (its `workers` row deleted)."""


class LeaseLost(Exception):
    """This process no longer holds the execution it was about to write to: another process
    took it over (this one stalled past its lease), or the execution was deleted."""

    def __init__(self, execution_id: int) -> None:
        super().__init__(f"this process no longer holds execution {execution_id}")
        self.execution_id = execution_id


class DatabaseNow(FunctionElement[datetime]):
    """The database's current UTC time, `offset` seconds ahead (a naive UTC timestamp, as the
    `UTCDateTime` columns store them). The offset is a bound value: statements that differ
    only in it share one compiled form."""

    type = UTCDateTime()
    inherit_cache = True
    name = "database_now"

    def __init__(self, offset: float | None = None) -> None:
        args = () if offset is None else (literal(float(offset), Float()),)
        super().__init__(*args)


def _offset(element: DatabaseNow, compiler: SQLCompiler, **kw: Any) -> str | None:
    clauses = list(element.clauses)
    return compiler.process(clauses[0], **kw) if clauses else None


@compiles(DatabaseNow, "postgresql")
def _postgres_now(element: DatabaseNow, compiler: SQLCompiler, **kw: Any) -> str:
    now = "(statement_timestamp() AT TIME ZONE 'UTC')"
    offset = _offset(element, compiler, **kw)
    return f"({now} + make_interval(secs => {offset}))" if offset else now


@compiles(DatabaseNow, "sqlite")
def _sqlite_now(element: DatabaseNow, compiler: SQLCompiler, **kw: Any) -> str:
    # Microseconds written out as SQLAlchemy stores them (`%f` gives milliseconds only), so
    # these compare with stored times as strings do.
    offset = _offset(element, compiler, **kw)
    modifier = f", {offset} || ' seconds'" if offset else ""
    return f"strftime('%Y-%m-%d %H:%M:%f000', 'now'{modifier})"


@dataclass(frozen=True)
class Process:
    """This process, as the holder of leases."""

    id: str
    kind: str
    host: str
    pid: int

    @classmethod
    def new(cls, kind: str) -> Process:
        host, pid = socket.gethostname()[:100], os.getpid()
        return cls(f"{host}:{pid}:{secrets.token_hex(4)}", kind, host, pid)


def _live_holder() -> ColumnElement[bool]:
    return exists().where(
        WORKERS.c.id == EXECUTIONS.c.lease_owner, WORKERS.c.expires_at > DatabaseNow()
    )


def lapsed() -> ColumnElement[bool]:
    """Nobody holds the execution's lease, or its holder's lease has expired."""
    return or_(EXECUTIONS.c.lease_owner.is_(None), ~_live_holder())


def free_for() -> ColumnElement[bool]:
    """Process `b_owner` may take the execution's lease: it holds it already, or it lapsed."""
    return or_(EXECUTIONS.c.lease_owner == bindparam("b_owner"), lapsed())


def held_by() -> ColumnElement[bool]:
    """Process `b_owner` holds the execution's lease."""
    return EXECUTIONS.c.lease_owner == bindparam("b_owner")


TAKE_LEASE: dict[str, Any] = {"lease_owner": bindparam("b_owner"), "leased_at": DatabaseNow()}
"""What an UPDATE that takes the lease for `b_owner` sets."""


_RELEASE = (
    update(EXECUTIONS)
    .where(EXECUTIONS.c.id == bindparam("b_execution"), held_by())
    .values(lease_owner=None)
    .returning(EXECUTIONS.c.status)
)
_HELD = select(EXECUTIONS.c.id, EXECUTIONS.c.lease_owner).where(
    EXECUTIONS.c.id.in_(bindparam("b_ids", expanding=True))
)
_RUNNING = EXECUTIONS.c.status == ExecutionStatus.RUNNING
_PENDING_TO_START = and_(
    EXECUTIONS.c.status == ExecutionStatus.PENDING, WORKFLOWS.c.status == WorkflowStatus.ACTIVE
)
_BY_WORKFLOW = select(EXECUTIONS.c.id).join_from(
    EXECUTIONS, WORKFLOWS, WORKFLOWS.c.id == EXECUTIONS.c.workflow_id
)
ORPHANED = _BY_WORKFLOW.where(
    or_(
        and_(_RUNNING, lapsed()),
        and_(_PENDING_TO_START, EXECUTIONS.c.lease_owner.is_not(None), ~_live_holder()),
    )
).order_by(EXECUTIONS.c.id)
"""Executions whose process is gone: running ones whose lease lapsed, and pending ones (paused
or retried, then resumed) whose last holder died before it let them go."""
TO_RECOVER = _BY_WORKFLOW.where(or_(and_(_RUNNING, lapsed()), _PENDING_TO_START)).order_by(
    EXECUTIONS.c.id
)
"""What a process starting up runs: running executions nobody holds a live lease on, and every
accepted one of an active workflow (starting it takes the lease, so a live holder keeps it)."""


def stranded(older_than: float, limit: int) -> Select[tuple[int]]:
    """Accepted executions of active workflows that nobody holds and nobody took up for
    `older_than` seconds (since accepted, or since their last runner let them go), oldest
    first: a queue worker with room runs them, whichever way their message was lost (the API
    stopped between its commit and its enqueue, the broker was down, or the worker that
    received it died before its runner began)."""
    since = func.coalesce(EXECUTIONS.c.leased_at, EXECUTIONS.c.created_at)
    return (
        _BY_WORKFLOW.where(
            _PENDING_TO_START,
            EXECUTIONS.c.lease_owner.is_(None),
            since < DatabaseNow(-older_than),
        )
        .order_by(EXECUTIONS.c.id)
        .limit(limit)
    )


async def release(writer: Any, execution_id: int, owner: str) -> str | None:
    """Let the execution go (its runner ended); its status, or None if `owner` did not hold it."""
    status: str | None = (
        await writer.execute(_RELEASE, {"b_execution": execution_id, "b_owner": owner})
    ).scalar()
    return status


async def taken_from(writer: Any, owner: str, execution_ids: Collection[int]) -> list[int]:
    """Those of `execution_ids` another process holds now (deleted ones count as held)."""
    rows = (await writer.execute(_HELD, {"b_ids": list(execution_ids)})).all()
    present = {row.id: row.lease_owner for row in rows}
    return [i for i in execution_ids if i not in present or present[i] not in (None, owner)]


async def register(writer: Any, process: Process, lease_seconds: float) -> None:
    """Record this process as live for `lease_seconds`, forgetting long-dead ones."""
    await writer.execute(
        delete(WORKERS).where(WORKERS.c.expires_at < DatabaseNow(-FORGET_AFTER_SECONDS))
    )
    await writer.execute(
        insert(WORKERS).values(
            id=process.id,
            kind=process.kind,
            host=process.host,
            pid=process.pid,
            started_at=DatabaseNow(),
            heartbeat_at=DatabaseNow(),
            expires_at=DatabaseNow(lease_seconds),
        )
    )


async def renew(writer: Any, process: Process, lease_seconds: float) -> None:
    """Push this process's lease `lease_seconds` ahead (recording it again if it was
    forgotten while this process stood still)."""
    renewed = await writer.execute(
        update(WORKERS)
        .where(WORKERS.c.id == process.id)
        .values(heartbeat_at=DatabaseNow(), expires_at=DatabaseNow(lease_seconds))
    )
    if not renewed.rowcount:
        await register(writer, process, lease_seconds)


async def retire(writer: Any, process: Process) -> None:
    """This process stops: its leases lapse now, so another may take its executions over."""
    await writer.execute(
        update(WORKERS).where(WORKERS.c.id == process.id).values(expires_at=DatabaseNow())
    )
