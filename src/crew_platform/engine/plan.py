"""Execution order: linear sequence or dependency DAG, with cycle detection."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True)
class PlannedTask:
    task_id: int
    depends_on: tuple[int, ...] = field(default_factory=tuple)

    def as_json(self) -> dict[str, object]:
        return {"task_id": self.task_id, "depends_on": list(self.depends_on)}


def find_cycle(graph: Mapping[int, Iterable[int]]) -> list[int] | None:
    """Return one cycle as [a, b, ..., a] if `graph` (node -> its dependencies) has one."""
    white, grey, black = 0, 1, 2
    colour = dict.fromkeys(graph, white)
    for root in graph:
        if colour[root] != white:
            continue
        path: list[int] = []
        stack: list[tuple[int, Iterable[int]]] = [(root, iter(graph.get(root, ())))]
        colour[root] = grey
        path.append(root)
        while stack:
            node, deps = stack[-1]
            advanced = False
            for dep in deps:
                state = colour.get(dep, black)
                if state == grey:
                    return [*path[path.index(dep) :], dep]
                if state == white:
                    colour[dep] = grey
                    path.append(dep)
                    stack.append((dep, iter(graph.get(dep, ()))))
                    advanced = True
                    break
            if not advanced:
                colour[node] = black
                path.pop()
                stack.pop()
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
