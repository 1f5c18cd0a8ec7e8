"""Writes an execution's events to its log inside the caller's transaction, publishes after commit.

Every persisted event gets the next per-execution `seq` (an atomic UPDATE ... RETURNING), so the
SSE stream can replay from any point and nothing a client was told is missing from the log.

A journal of a runner names the process it runs in (`owner`): each event it records is then
numbered only while that process holds the execution's lease, in the same UPDATE, so a process
that lost the lease writes nothing more (`LeaseLost`), at no extra statement.

Publishing never waits: the log is already committed when an event goes out, and the bus hands
it to a bounded outbox, so a bus that is down or stalls (Redis gone or frozen) costs live
delivery to other processes only, never the run or the request.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from enum import Enum
from typing import Any

from sqlalchemy import Table, Update, bindparam, insert, update

from crew_platform.engine.lease import TAKE_LEASE, LeaseLost, free_for, held_by
from crew_platform.engine.rules import RULES, Intent, Kind, Writer, move_params
from crew_platform.engine.states import ExecutionStatus
from crew_platform.events.bus import EventBus
from crew_platform.events.types import Event, EventType
from crew_platform.models import Execution, ExecutionLog

EXECUTIONS: Table = Execution.__table__  # type: ignore[assignment]
LOGS: Table = ExecutionLog.__table__  # type: ignore[assignment]

_LEVELS = {
    EventType.WORKFLOW_FAILED: "error",
    EventType.TASK_FAILED: "error",
    EventType.WORKFLOW_CANCELLED: "warning",
    EventType.TASK_CANCELLED: "warning",
    EventType.TASK_SKIPPED: "warning",
    EventType.TOOL_CALL_FAILED: "warning",
    EventType.MODEL_FALLBACK: "warning",
    EventType.OUTPUT_VALIDATION_FAILED: "warning",
    EventType.GUARDRAIL_FAILED: "warning",
}
_LOGGED_DATA_KEYS = (
    "output",
    "error",
    "tokens_used",
    "execution_time",
    "attempt",
    "reason",
    "tool",
    "call_id",
    "arguments",
    "result",
    "model",
    "from",
    "to",
    "remembered",
    "retries_left",
    "draft",
    "approved",
    "feedback",
    "manager",
    "manager_agent_id",
    "coworker",
    "task",
    "delegation_call_id",
)

log = logging.getLogger(__name__)


async def publish(bus: EventBus, event: Event) -> bool:
    """Publish `event` without waiting on any transport (the bus hands it to its outbox); a
    failing listener or bus is logged, not raised. Each persisted event makes one INFO line."""
    if event.seq is not None and not event.is_chunk:
        _log_event(event)
    try:
        await bus.publish(event)
        return True
    except Exception as exc:
        log.warning(
            "event %s of execution %s not published: %s: %s",
            event.type.value,
            event.execution_id,
            type(exc).__name__,
            exc,
        )
        return False


def _log_event(event: Event) -> None:
    """`execution 12 task_completed task=3 seq=7`: the one default log line per run event."""
    task = f" task={event.task_id}" if event.task_id is not None else ""
    log.info("execution %s %s%s seq=%s", event.execution_id, event.type.value, task, event.seq)


class _Lease(Enum):
    IGNORED = "ignored"
    HELD = "held"
    """Only while the journal's owner holds the lease."""
    TAKEN = "taken"
    """The journal's owner takes the lease, unless another live process holds it."""


def _numbering(*, guarded: bool, adds_tokens: bool, lease: _Lease) -> Update:
    """UPDATE reserving the execution's next `b_count` event numbers (returning the last);
    built once, so the per-event cost is binding values, not building and hashing a statement,
    which costs more than the binding."""
    statement = update(EXECUTIONS).where(EXECUTIONS.c.id == bindparam("b_execution"))
    if guarded:
        statement = statement.where(EXECUTIONS.c.status.in_(bindparam("b_from", expanding=True)))
    values: dict[str, Any] = {"last_seq": EXECUTIONS.c.last_seq + bindparam("b_count")}
    if adds_tokens:
        values["tokens_used"] = EXECUTIONS.c.tokens_used + bindparam("b_tokens")
    if lease is _Lease.HELD:
        statement = statement.where(held_by())
    elif lease is _Lease.TAKEN:
        statement = statement.where(free_for())
        values |= TAKE_LEASE
    return statement.values(values).returning(EXECUTIONS.c.last_seq)


_NUMBERING = {
    (guarded, adds_tokens, lease): _numbering(guarded=guarded, adds_tokens=adds_tokens, lease=lease)
    for guarded in (False, True)
    for adds_tokens in (False, True)
    for lease in _Lease
}


def _move_many(lease: _Lease) -> Update:
    taken = lease is _Lease.TAKEN
    return (
        update(EXECUTIONS)
        .where(
            EXECUTIONS.c.id.in_(bindparam("b_executions", expanding=True)),
            EXECUTIONS.c.status.in_(bindparam("b_from", expanding=True)),
            free_for() if taken else held_by(),
        )
        .values({"last_seq": EXECUTIONS.c.last_seq + 1} | (TAKE_LEASE if taken else {}))
        .returning(EXECUTIONS.c.id, EXECUTIONS.c.last_seq)
    )


_MOVE_MANY = {lease: _move_many(lease) for lease in (_Lease.HELD, _Lease.TAKEN)}
"""`record_moves`' UPDATE: one event each for several executions, in one statement."""
_INSERT_LOGS = insert(LOGS)


class Journal:
    def __init__(self, session: Writer, bus: EventBus, *, owner: str | None = None) -> None:
        """`owner`: the process whose runner writes (None for a user's request, which no
        lease restrains)."""
        self.session = session
        self._bus = bus
        self._owner = owner
        self._outbox: list[Event] = []
        self._rows: list[dict[str, Any]] = []

    async def record(self, event: Event, message: str, *, add_tokens: int = 0) -> Event:
        """Number the event and queue its log row; `add_tokens` rides along on the same UPDATE
        of the execution (one round trip instead of two)."""
        await self.record_all([(event, message)], add_tokens=add_tokens)
        return event

    async def record_all(
        self, entries: Sequence[tuple[Event, str]], *, add_tokens: int = 0
    ) -> None:
        """`record` for several events of one execution (with their messages), numbered in
        order by one UPDATE."""
        if not entries:
            return
        if not await self._record(entries, add_tokens=add_tokens):
            execution_id = entries[0][0].execution_id
            assert execution_id is not None
            if self._owner is not None:
                raise LeaseLost(execution_id)
            raise LookupError(f"execution {execution_id} is gone")

    async def record_if_running(self, event: Event, message: str) -> Event | None:
        """Record `event` only while the execution is `running` (None otherwise).

        The task boundary: numbering the event and checking the status are one UPDATE, whose
        row lock also serialises with a pause or cancel racing it.
        """
        recorded = await self._record(
            [(event, message)], only_from=(ExecutionStatus.RUNNING.value,)
        )
        return event if recorded else None

    async def record_move(
        self, event: Event, message: str, intent: Intent, **values: Any
    ) -> Event | None:
        """Move the execution by the rule for `intent` and record `event` in the same UPDATE;
        None, and nothing written, if the rule refuses the move from the current status.
        `values` are more columns of the execution to set. A rule that takes the lease takes
        it for the journal's owner."""
        rule = RULES[Kind.EXECUTION, intent]
        if rule.takes_lease and self._owner is None:
            raise ValueError(f"{intent.value} takes the execution's lease: name its owner")
        recorded = await self._record(
            [(event, message)],
            only_from=sorted(rule.sources),
            values=move_params(rule, **values),
            takes_lease=rule.takes_lease,
        )
        return event if recorded else None

    async def record_moves(
        self, entries: Sequence[tuple[Event, str]], intent: Intent, **values: Any
    ) -> list[Event]:
        """`record_move` for several executions at once (one event each, of distinct
        executions), by one UPDATE: the events of those the rule moved, in `entries`' order."""
        if not entries:
            return []
        if self._owner is None:
            raise ValueError("record_moves is for runners: name the journal's owner")
        rule = RULES[Kind.EXECUTION, intent]
        by_id = {event.execution_id: (event, message) for event, message in entries}
        assert len(by_id) == len(entries), "one event per execution"
        params = {
            "b_executions": sorted(i for i in by_id if i is not None),
            "b_from": sorted(rule.sources),
            "b_owner": self._owner,
            **move_params(rule, **values),
        }
        lease = _Lease.TAKEN if rule.takes_lease else _Lease.HELD
        result = await self.session.execute(_MOVE_MANY[lease], params)
        moved: dict[int, int] = {ident: seq for ident, seq in result.tuples()}
        recorded = []
        for event, message in entries:
            if (seq := moved.get(event.execution_id or 0)) is None:
                continue
            self._queue(event, message, seq)
            recorded.append(event)
        return recorded

    async def _record(
        self,
        entries: Sequence[tuple[Event, str]],
        *,
        only_from: Sequence[str] | None = None,
        add_tokens: int = 0,
        values: dict[str, Any] | None = None,
        takes_lease: bool = False,
    ) -> bool:
        """Number `entries` (events of one execution) and queue their log rows; False, and
        nothing queued, when the UPDATE matched no row."""
        execution_id = entries[0][0].execution_id
        assert execution_id is not None
        params: dict[str, Any] = {
            "b_execution": execution_id,
            "b_count": len(entries),
            **(values or {}),
        }
        if only_from is not None:
            params["b_from"] = list(only_from)
        if add_tokens:
            params["b_tokens"] = add_tokens
        lease = _Lease.IGNORED
        if self._owner is not None:
            lease = _Lease.TAKEN if takes_lease else _Lease.HELD
            params["b_owner"] = self._owner
        statement = _NUMBERING[(only_from is not None, bool(add_tokens), lease)]
        last = (await self.session.execute(statement, params)).scalar()
        if last is None:
            return False
        for seq, (event, message) in enumerate(entries, start=last - len(entries) + 1):
            assert event.execution_id == execution_id
            self._queue(event, message, seq)
        return True

    def _queue(self, event: Event, message: str, seq: int) -> None:
        """Number `event` and queue its log row (written at commit) and its publication."""
        event.seq = seq
        data: dict[str, Any] = {k: event.data[k] for k in _LOGGED_DATA_KEYS if k in event.data}
        data |= {"status": event.status, "agent_id": event.agent_id}
        self._rows.append(
            {
                "execution_id": event.execution_id,
                "seq": seq,
                "timestamp": event.timestamp,
                "level": _LEVELS.get(event.type, "info"),
                "event": event.type.value,
                "message": message,
                "task_id": event.task_id,
                "data": data,
            }
        )
        self._outbox.append(event)

    async def rollback(self) -> None:
        """Drop what was recorded since the last commit: nothing of it is written or published."""
        self._rows, self._outbox = [], []
        await self.session.rollback()

    async def commit(self) -> None:
        """Write the queued log rows in one statement, commit, then publish."""
        if self._rows:
            rows, self._rows = self._rows, []
            await self.session.execute(_INSERT_LOGS, rows)
        await self.session.commit()
        outbox, self._outbox = self._outbox, []
        for event in outbox:
            await publish(self._bus, event)
