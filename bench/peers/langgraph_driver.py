"""LangGraph on the workload: a linear `StateGraph`, one `ChatOpenAI` call per node.

Runs in bench/.peers/langgraph with tracing off (see bench/peers.py). The graph is compiled
once, before the clock starts; `ainvoke` is what is timed, alone or K at once.
"""

from __future__ import annotations

import asyncio
import operator
import time
from typing import Annotated, Any, TypedDict

from workload import MODEL, concurrency_main, config_from_argv, emit, messages, peak_rss_kb

began_import = time.perf_counter()
from langchain_core.messages import HumanMessage, SystemMessage  # noqa: E402
from langchain_openai import ChatOpenAI  # noqa: E402
from langgraph.graph import END, START, StateGraph  # noqa: E402

IMPORT_SECONDS = time.perf_counter() - began_import


class State(TypedDict):
    outputs: Annotated[list[tuple[str, str]], operator.add]


def build(config: dict[str, Any]) -> Any:
    n = int(config["n"])
    graph = StateGraph(State)

    def node(i: int) -> Any:
        model = ChatOpenAI(
            model=MODEL,
            base_url=config["base_url"],
            api_key="bench",
            temperature=0.6,
            top_p=0.9,
            max_tokens=1024,
            max_retries=0,
            timeout=600,
        )

        async def call(state: State) -> dict[str, Any]:
            system, user = messages(i, list(state["outputs"]))
            reply = await model.ainvoke(
                [SystemMessage(system["content"]), HumanMessage(user["content"])]
            )
            return {"outputs": [(f"Step {i}", str(reply.content))]}

        return call

    previous = START
    for i in range(n):
        graph.add_node(f"step_{i}", node(i))
        graph.add_edge(previous, f"step_{i}")
        previous = f"step_{i}"
    graph.add_edge(previous, END)
    return graph.compile()


def main() -> None:
    config = config_from_argv()
    if config["mode"] == "overhead":
        walls: list[float] = []
        warmup = int(config.get("warmup", 1))

        async def runs() -> None:
            app = build(config)
            for rep in range(warmup + int(config["runs"])):
                began = time.perf_counter()
                await app.ainvoke({"outputs": []})
                if rep >= warmup:
                    walls.append(time.perf_counter() - began)

        asyncio.run(runs())
        emit({"walls": walls, "peak_rss_kb": peak_rss_kb(), "import_s": IMPORT_SECONDS})
        return

    def factory(k: int) -> Any:
        app = build(config)

        def make(_: int) -> Any:
            return lambda: app.ainvoke({"outputs": []})

        return make

    emit({"results": concurrency_main(factory, config), "import_s": IMPORT_SECONDS})


if __name__ == "__main__":
    main()
