"""CrewAI on the hierarchical workload: `Crew(process=hierarchical, manager_llm=...).kickoff()`
with three agents (no tools, no delegation of their own) and three tasks without an agent, so
CrewAI's manager delegates each task through its delegation tools (native tool calling).

    python crewai_hierarchical_driver.py '{"base_url": ..., "runs": 1, "warmup": 1}'

Runs in bench/.peers/crewai with telemetry off. The crew is built before the clock starts; only
the kickoff is timed.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from crewai import LLM, Agent, Crew, Process, Task
from workload import (
    HIERARCHY_TASKS,
    MODEL,
    agent,
    config_from_argv,
    emit,
    peak_rss_kb,
    task,
)

logging.getLogger("crewai").setLevel(logging.ERROR)


def build(config: dict[str, Any]) -> Crew:
    llm = LLM(
        model=f"openai/{MODEL}",
        base_url=config["base_url"],
        api_key="bench",
        temperature=0.6,
        top_p=0.9,
        max_tokens=1024,
        max_retries=0,
        timeout=600,
    )
    members = []
    for i in range(HIERARCHY_TASKS):
        a = agent(i)
        members.append(
            Agent(
                role=a.role,
                goal=a.goal,
                backstory=a.backstory,
                llm=llm,
                verbose=False,
                allow_delegation=False,
                max_iter=5,
            )
        )
    tasks = [
        Task(description=task(i).description, expected_output=task(i).expected_output)
        for i in range(HIERARCHY_TASKS)
    ]
    return Crew(
        agents=members,
        tasks=tasks,
        process=Process.hierarchical,
        manager_llm=llm,
        verbose=False,
        cache=False,
    )


def main() -> None:
    config = config_from_argv()
    walls: list[float] = []
    warmup = int(config.get("warmup", 1))
    for rep in range(warmup + int(config["runs"])):
        crew = build(config)
        began = time.perf_counter()
        crew.kickoff()
        if rep >= warmup:
            walls.append(time.perf_counter() - began)
    emit({"walls": walls, "peak_rss_kb": peak_rss_kb()})


if __name__ == "__main__":
    main()
