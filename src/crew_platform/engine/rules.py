"""State rules: every status change of an execution, a task run or a workflow, declared once.

A rule names what asks for the change (its intent), the statuses it may leave from and the status
it leads to, and what else it writes (a finishing rule stamps `completed_at`, a retry clears the
old outcome). Every status write, from the API or from the engine, is `move()`: one UPDATE guarded
by the rule's from-statuses, so of two racing writers (a cancel and a finishing task) exactly one
wins, and a request the rules refuse is a 409 naming the current status (`refusal()`).

New capabilities add rules here (waiting for input, taking over a lease), not new code paths.
A rule that `takes_lease` also hands the execution to the moving process, in the same UPDATE
and only when no other process holds a live lease on it (`engine/lease.py`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from sqlalchemy import Table, Update, bindparam, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from crew_platform.db import utcnow
from crew_platform.engine.lease import TAKE_LEASE, free_for
from crew_platform.engine.states import ExecutionStatus as ES
from crew_platform.engine.states import TaskRunStatus as TS
from crew_platform.engine.states import WorkflowStatus as WS
from crew_platform.errors import InvalidStateTransition
from crew_platform.models import Execution, TaskRun, Workflow

Writer = AsyncSession | AsyncConnection
"""Where status is written: an ORM session, or a bare connection on the engine's hot path."""


class Kind(StrEnum):
    EXECUTION = "execution"
    TASK_RUN = "task_run"
    WORKFLOW = "workflow"


class Intent(StrEnum):
    START = "start"
    PAUSE = "pause"
    RESUME = "resume"
    CANCEL = "cancel"
    RETRY = "retry"
    COMPLETE = "complete"
    FAIL = "fail"
    AWAIT_INPUT = "await_input"
    APPROVE = "approve"
    REQUEST_CHANGES = "request_changes"
    TAKE_OVER = "take_over"


def _finished() -> dict[str, Any]:
    return {"completed_at": utcnow()}


def _reopened() -> dict[str, Any]:
    return {"completed_at": None, "error_message": None}


@dataclass(frozen=True)
class Rule:
    kind: Kind
    intent: Intent
    sources: frozenset[str]
    target: str
    doc: str
    writes: Callable[[], dict[str, Any]] = field(default=dict)
    """Columns this rule sets besides the status (evaluated at each move)."""
    takes_lease: bool = False
    """The mover takes the execution's lease; refused while another process holds it."""

    def allows(self, current: str, target: str) -> bool:
        return current in self.sources and target == self.target


def _rule(
    kind: Kind,
    intent: Intent,
    sources: set[str],
    target: str,
    doc: str,
    writes: Callable[[], dict[str, Any]] = dict,
    *,
    takes_lease: bool = False,
) -> Rule:
    return Rule(kind, intent, frozenset(sources), target, doc, writes, takes_lease)


E, T, W = Kind.EXECUTION, Kind.TASK_RUN, Kind.WORKFLOW
RULES: dict[tuple[Kind, Intent], Rule] = {
    (r.kind, r.intent): r
    for r in (
        _rule(
            E,
            Intent.START,
            {ES.PENDING},
            ES.RUNNING,
            "a runner begins an accepted execution",
            takes_lease=True,
        ),
        _rule(
            E,
            Intent.TAKE_OVER,
            {ES.RUNNING},
            ES.RUNNING,
            "a runner goes on with an execution whose process stopped (its lease lapsed)",
            takes_lease=True,
        ),
        _rule(E, Intent.PAUSE, {ES.RUNNING}, ES.PAUSED, "it stops at the next task boundary"),
        _rule(E, Intent.RESUME, {ES.PAUSED}, ES.PENDING, "it waits for a runner again"),
        _rule(
            E,
            Intent.CANCEL,
            {ES.PENDING, ES.RUNNING, ES.PAUSED, ES.WAITING_FOR_INPUT},
            ES.CANCELLED,
            "anything unfinished may be cancelled",
            _finished,
        ),
        _rule(
            E,
            Intent.RETRY,
            {ES.FAILED, ES.CANCELLED},
            ES.PENDING,
            "a failed or cancelled execution re-opens from its first unfinished task",
            _reopened,
        ),
        _rule(E, Intent.COMPLETE, {ES.RUNNING}, ES.COMPLETED, "every task answered", _finished),
        _rule(E, Intent.FAIL, {ES.RUNNING}, ES.FAILED, "a task failed", _finished),
        _rule(
            E,
            Intent.AWAIT_INPUT,
            {ES.RUNNING},
            ES.WAITING_FOR_INPUT,
            "a task's draft waits for a person; its runner ends",
        ),
        _rule(
            E,
            Intent.APPROVE,
            {ES.WAITING_FOR_INPUT},
            ES.PENDING,
            "the draft is accepted; it waits for a runner again",
        ),
        _rule(
            E,
            Intent.REQUEST_CHANGES,
            {ES.WAITING_FOR_INPUT},
            ES.PENDING,
            "the draft got feedback; it waits for a runner to revise it",
        ),
        _rule(T, Intent.COMPLETE, {TS.RUNNING}, TS.COMPLETED, "its model call answered", _finished),
        _rule(T, Intent.FAIL, {TS.RUNNING}, TS.FAILED, "its model call failed", _finished),
        _rule(
            T,
            Intent.AWAIT_INPUT,
            {TS.RUNNING},
            TS.WAITING_FOR_INPUT,
            "its task needs review: the answer is a draft",
        ),
        _rule(
            T,
            Intent.APPROVE,
            {TS.WAITING_FOR_INPUT},
            TS.COMPLETED,
            "its draft is the task's output",
            _finished,
        ),
        _rule(
            T,
            Intent.REQUEST_CHANGES,
            {TS.WAITING_FOR_INPUT},
            TS.CHANGES_REQUESTED,
            "its draft got feedback; the next attempt revises it",
            _finished,
        ),
        _rule(
            T,
            Intent.CANCEL,
            {TS.PENDING, TS.RUNNING, TS.WAITING_FOR_INPUT},
            TS.CANCELLED,
            "its execution was cancelled or its process stopped",
            _finished,
        ),
        _rule(W, Intent.PAUSE, {WS.ACTIVE}, WS.PAUSED, "its executions hold"),
        _rule(W, Intent.RESUME, {WS.PAUSED}, WS.ACTIVE, "its executions may run again"),
    )
}

STATUSES: dict[Kind, tuple[str, ...]] = {
    E: tuple(ES),
    T: tuple(TS),
    W: tuple(WS),
}
_TABLES: dict[Kind, Table] = {
    E: Execution.__table__,  # type: ignore[dict-item]
    T: TaskRun.__table__,  # type: ignore[dict-item]
    W: Workflow.__table__,  # type: ignore[dict-item]
}
_LABELS = {E: "Execution", T: "Task run", W: "Workflow"}


def rule_for(kind: Kind, intent: Intent) -> Rule | None:
    return RULES.get((kind, intent))


def allows(kind: Kind, current: str, target: str, intent: Intent) -> bool:
    """Whether the rules let `intent` move a `kind` from `current` to `target`."""
    rule = rule_for(kind, intent)
    return rule is not None and rule.allows(current, target)


def refusal(kind: Kind, ident: int, current: str, intent: Intent) -> InvalidStateTransition:
    """The 409 for a request the rules refuse, naming the current status."""
    rule = rule_for(kind, intent)
    allowed = sorted(rule.sources) if rule else []
    label = _LABELS[kind]
    return InvalidStateTransition(
        f"{label} {ident} is {current}; cannot {intent.value} it"
        + (f" (only when {' or '.join(allowed)})" if allowed else ""),
        {
            f"{kind.value}_id": ident,
            "status": current,
            "intent": intent.value,
            "allowed_from": allowed,
        },
    )


def _guarded_update(table: Table) -> Update:
    return update(table).where(
        table.c.id == bindparam("b_id"),
        table.c.status.in_(bindparam("b_from", expanding=True)),
    )


_MOVES: dict[Kind, Update] = {kind: _guarded_update(table) for kind, table in _TABLES.items()}
_LEASING_MOVE = _guarded_update(_TABLES[E]).where(free_for()).values(TAKE_LEASE)
assert all(r.kind is E for r in RULES.values() if r.takes_lease), "only executions are leased"


def move_params(rule: Rule, **values: Any) -> dict[str, Any]:
    """The SET values of a move: the target status, what the rule writes, then `values`."""
    return {"status": rule.target, **rule.writes(), **values}


async def move(
    writer: Writer,
    kind: Kind,
    ident: int,
    intent: Intent,
    *,
    owner: str | None = None,
    **values: Any,
) -> bool:
    """Apply the rule for `intent` to one row: True if it moved, False if its status was not
    one the rule leaves from (someone else won, or the request does not apply), or if the rule
    takes the lease for process `owner` and another live process holds it."""
    rule = RULES[kind, intent]
    params = {"b_id": ident, "b_from": sorted(rule.sources), **move_params(rule, **values)}
    statement = _MOVES[kind]
    if rule.takes_lease:
        if owner is None:
            raise ValueError(f"{intent.value} takes the execution's lease: name its owner")
        statement, params["b_owner"] = _LEASING_MOVE, owner
    result = await writer.execute(statement, params)
    return bool(result.rowcount)  # type: ignore[attr-defined]
