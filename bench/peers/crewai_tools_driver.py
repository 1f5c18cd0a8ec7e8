"""CrewAI on the tool workload: `Crew(process=sequential).kickoff()`, each agent holding a
`@tool` calculator (CrewAI calls it through the provider's native tool calling).

    python crewai_tools_driver.py '{"base_url": ..., "n": 5, "runs": 1, "warmup": 1}'

Runs in bench/.peers/crewai with telemetry off. The crew is built before the clock starts; only
the kickoff is timed. CrewAI's tool cache is off: every run executes every call, as ours does.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from crewai import LLM, Agent, Crew, Process, Task
from crewai.tools import tool
from workload import (
    MODEL,
    TOOL_NAME,
    agent,
    calculate,
    config_from_argv,
    emit,
    peak_rss_kb,
    task,
)

logging.getLogger("crewai").setLevel(logging.ERROR)


@tool(TOOL_NAME)
def calculator(expression: str) -> str:
    """Evaluates an arithmetic expression (+ - * / ** % and parentheses)."""
    return calculate(expression)


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
    agents = []
    tasks = []
    for i in range(int(config["n"])):
        a, t = agent(i), task(i)
        member = Agent(
            role=a.role,
            goal=a.goal,
            backstory=a.backstory,
            llm=llm,
            tools=[calculator],
            verbose=False,
            allow_delegation=False,
            cache=False,
            max_iter=5,
        )
        agents.append(member)
        tasks.append(
            Task(description=t.description, expected_output=t.expected_output, agent=member)
        )
    return Crew(agents=agents, tasks=tasks, process=Process.sequential, verbose=False, cache=False)


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
