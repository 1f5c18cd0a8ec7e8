"""CrewAI on the workload: `Crew(process=sequential).kickoff()` and, concurrently, `akickoff()`.

Runs in bench/.peers/crewai with telemetry off (see bench/peers.py). The crews are built before
the clock starts; only the kickoff is timed.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from workload import (
    MODEL,
    agent,
    concurrency_main,
    config_from_argv,
    emit,
    peak_rss_kb,
    task,
)

began_import = time.perf_counter()
from crewai import LLM, Agent, Crew, Process, Task  # noqa: E402

IMPORT_SECONDS = time.perf_counter() - began_import
# The stub's model name is unknown to CrewAI, which then warns on every call about token
# counting; the warning is noise for a benchmark (and costs a log write per call).
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
    agents = []
    tasks = []
    for i in range(int(config["n"])):
        a, t = agent(i), task(i)
        member = Agent(
            role=a.role,
            goal=a.goal,
            backstory=a.backstory,
            llm=llm,
            verbose=False,
            allow_delegation=False,
            max_iter=5,
        )
        agents.append(member)
        tasks.append(
            Task(description=t.description, expected_output=t.expected_output, agent=member)
        )
    return Crew(agents=agents, tasks=tasks, process=Process.sequential, verbose=False)


def main() -> None:
    config = config_from_argv()
    if config["mode"] == "overhead":
        walls: list[float] = []
        warmup = int(config.get("warmup", 1))
        for rep in range(warmup + int(config["runs"])):
            crew = build(config)
            began = time.perf_counter()
            crew.kickoff()
            if rep >= warmup:
                walls.append(time.perf_counter() - began)
        emit({"walls": walls, "peak_rss_kb": peak_rss_kb(), "import_s": IMPORT_SECONDS})
        return

    def factory(k: int) -> Any:
        crews = [build(config) for _ in range(k)]

        def make(i: int) -> Any:
            return lambda: crews[i].akickoff()

        return make

    emit({"results": concurrency_main(factory, config), "import_s": IMPORT_SECONDS})


if __name__ == "__main__":
    main()
