"""Live processes and the executions they hold, read from the store: every process of the
deployment answers the same, whichever one is asked. Times and ages are the database's clock,
the one leases expire by.

A process belongs to no owner: every caller with `read` sees them all. The executions they
hold are owned, though (AUTH_OWNERSHIP=on): a caller sees only its own among them, so the
list does not leak the ids of other owners' runs; `admin` sees every one."""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from crew_platform.auth.ownership import of_owned_workflows
from crew_platform.engine import UNFINISHED, DatabaseNow
from crew_platform.models import Execution, Worker
from crew_platform.workers.schemas import LeasedExecution, WorkerRead


async def live_workers(session: AsyncSession) -> list[WorkerRead]:
    now: datetime = (await session.execute(select(DatabaseNow()))).scalar_one()
    workers = list(
        await session.scalars(
            select(Worker).where(Worker.expires_at > now).order_by(Worker.started_at, Worker.id)
        )
    )
    held: defaultdict[str, list[LeasedExecution]] = defaultdict(list)
    if workers:
        query = of_owned_workflows(
            select(
                Execution.id,
                Execution.workflow_id,
                Execution.status,
                Execution.lease_owner,
                Execution.leased_at,
            )
            .where(
                Execution.status.in_(sorted(UNFINISHED)),
                Execution.lease_owner.in_([w.id for w in workers]),
            )
            .order_by(Execution.leased_at, Execution.id),
            Execution.workflow_id,
        )
        rows = await session.execute(query)
        for row in rows:
            leased_at = row.leased_at or now
            held[row.lease_owner].append(
                LeasedExecution(
                    execution_id=row.id,
                    workflow_id=row.workflow_id,
                    status=row.status,
                    leased_at=leased_at,
                    lease_age_seconds=round(max(0.0, (now - leased_at).total_seconds()), 3),
                )
            )
    return [
        WorkerRead(
            id=w.id,
            kind=w.kind,
            host=w.host,
            pid=w.pid,
            started_at=w.started_at,
            last_heartbeat_at=w.heartbeat_at,
            lease_expires_at=w.expires_at,
            executions=held[w.id],
        )
        for w in workers
    ]
