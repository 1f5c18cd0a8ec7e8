"""Execution order: which tasks an execution runs, what each waits for and whose output it reads.

A linear workflow is a chain (each task waits for the one before and reads every earlier output);
a parallel one is its dependency graph (each task reads its dependencies' outputs). Both are run
by the one scheduler, over `graph()`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from graphlib import CycleError, TopologicalSorter


@dataclass(frozen=True)
class PlannedTask:
    task_id: int
    depends_on: tuple[int, ...] = field(default_factory=tuple)

    def as_json(self) -> dict[str, object]:
        return {"task_id": self.task_id, "depends_on": list(self.depends_on)}

    @classmethod
    def from_json(cls, raw: Mapping[str, object]) -> PlannedTask:
        deps = raw.get("depends_on") or ()
        assert isinstance(deps, Iterable)
        return cls(int(str(raw["task_id"])), tuple(int(d) for d in deps))


def find_cycle(graph: Mapping[int, Iterable[int]]) -> list[int] | None:
    """One cycle of `graph` (node -> its dependencies) as [a, b, ..., a], each node depending on
    the next; None if there is none."""
    try:
        TopologicalSorter(graph).prepare()
    except CycleError as exc:
        # graphlib lists each node before the ones that depend on it: reverse to follow
        # "depends on".
        return list(reversed(exc.args[1]))
    return None


def execution_key(order: int, priority: int, task_id: int) -> tuple[int, int, int]:
    """Execution order: `order`, then `priority` descending, then id."""
    return (order, -priority, task_id)


def linear_plan(task_ids_in_order: Sequence[int]) -> list[PlannedTask]:
    return [PlannedTask(task_id) for task_id in task_ids_in_order]


def dag_plan(
    task_ids_in_order: Sequence[int], dependencies: Mapping[int, Iterable[int]]
) -> list[PlannedTask]:
    """Keep only dependencies on tasks that are part of this run (inactive ones drop out)."""
    included = set(task_ids_in_order)
    return [
        PlannedTask(tid, tuple(d for d in dependencies.get(tid, ()) if d in included))
        for tid in task_ids_in_order
    ]


def graph(plan: Sequence[PlannedTask], *, chain: bool) -> dict[int, tuple[int, ...]]:
    """Task -> the tasks it waits for: the previous one in a chain, else its dependencies."""
    if chain:
        order = [p.task_id for p in plan]
        return {tid: (order[i - 1],) if i else () for i, tid in enumerate(order)}
    return {p.task_id: p.depends_on for p in plan}


def context_of(plan: Sequence[PlannedTask], *, chain: bool) -> dict[int, list[int]]:
    """Task -> the tasks whose outputs its prompt shows: every earlier one in a chain, else its
    dependencies."""
    if chain:
        order = [p.task_id for p in plan]
        return {tid: order[:i] for i, tid in enumerate(order)}
    return {p.task_id: list(p.depends_on) for p in plan}
