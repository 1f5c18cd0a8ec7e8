"""Execution order: which tasks an execution runs, what each waits for and whose output it reads.

A linear workflow is a chain (each task waits for the one before and reads every earlier output);
a parallel one is its dependency graph (each task reads its dependencies' outputs). Both are run
by the one scheduler, over `graph()`. A task's own `context` replaces what it reads; in a parallel
workflow it also waits for those tasks, so it never races them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from graphlib import CycleError, TopologicalSorter


@dataclass(frozen=True)
class PlannedTask:
    task_id: int
    depends_on: tuple[int, ...] = field(default_factory=tuple)
    context: tuple[int, ...] | None = None
    """The tasks whose outputs it reads, when the task names them (None: the default)."""

    def as_json(self) -> dict[str, object]:
        planned: dict[str, object] = {"task_id": self.task_id, "depends_on": list(self.depends_on)}
        if self.context is not None:
            planned["context"] = list(self.context)
        return planned

    @classmethod
    def from_json(cls, raw: Mapping[str, object]) -> PlannedTask:
        deps = raw.get("depends_on") or ()
        context = raw.get("context")
        assert isinstance(deps, Iterable)
        return cls(
            int(str(raw["task_id"])),
            tuple(int(d) for d in deps),
            None if not isinstance(context, Iterable) else tuple(int(c) for c in context),
        )


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


Contexts = Mapping[int, Iterable[int] | None]
"""Task -> the context it names (None or absent: the default)."""


def _in_run(ids: Iterable[int] | None, included: set[int]) -> tuple[int, ...] | None:
    return None if ids is None else tuple(i for i in ids if i in included)


def linear_plan(
    task_ids_in_order: Sequence[int], contexts: Contexts | None = None
) -> list[PlannedTask]:
    included = set(task_ids_in_order)
    return [
        PlannedTask(task_id, context=_in_run((contexts or {}).get(task_id), included))
        for task_id in task_ids_in_order
    ]


def dag_plan(
    task_ids_in_order: Sequence[int],
    dependencies: Mapping[int, Iterable[int]],
    contexts: Contexts | None = None,
) -> list[PlannedTask]:
    """Keep only dependencies and context on tasks that are part of this run (inactive ones
    drop out); a task waits for its context as for its dependencies."""
    included = set(task_ids_in_order)
    planned = []
    for tid in task_ids_in_order:
        context = _in_run((contexts or {}).get(tid), included)
        waits = dict.fromkeys(d for d in dependencies.get(tid, ()) if d in included)
        waits.update(dict.fromkeys(context or ()))
        planned.append(PlannedTask(tid, tuple(waits), context))
    return planned


def graph(plan: Sequence[PlannedTask], *, chain: bool) -> dict[int, tuple[int, ...]]:
    """Task -> the tasks it waits for: the previous one in a chain, else its dependencies."""
    if chain:
        order = [p.task_id for p in plan]
        return {tid: (order[i - 1],) if i else () for i, tid in enumerate(order)}
    return {p.task_id: p.depends_on for p in plan}


def context_of(plan: Sequence[PlannedTask], *, chain: bool) -> dict[int, list[int]]:
    """Task -> the tasks whose outputs its prompt shows: its own context when it names one,
    else every earlier one in a chain, else its dependencies."""
    order = [p.task_id for p in plan]
    contexts: dict[int, list[int]] = {}
    for i, p in enumerate(plan):
        if p.context is not None:
            contexts[p.task_id] = list(p.context)
        else:
            contexts[p.task_id] = order[:i] if chain else list(p.depends_on)
    return contexts
