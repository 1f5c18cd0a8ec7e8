"""LangGraph on the tool workload: a linear `StateGraph` whose node i is a prebuilt
`create_react_agent` (model + `ToolNode`) with the calculator tool.

    python langgraph_tools_driver.py '{"base_url": ..., "n": 5, "runs": 1, "warmup": 1}'

Runs in bench/.peers/langgraph with tracing off. The graph is compiled once, before the clock
starts; `ainvoke` is what is timed.
"""

from __future__ import annotations

import asyncio
import operator
import time
import warnings
from typing import Annotated, Any, TypedDict

from langchain_core.messages import HumanMessage, SystemMessage
from langchain_core.tools import StructuredTool
from langchain_openai import ChatOpenAI
from langgraph.graph import END, START, StateGraph
from workload import (
    MODEL,
    TOOL_DESCRIPTION,
    TOOL_NAME,
    calculate,
    config_from_argv,
    emit,
    messages,
    peak_rss_kb,
)

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # create_react_agent is deprecated for langchain's agents
    from langgraph.prebuilt import ToolNode, create_react_agent


class State(TypedDict):
    outputs: Annotated[list[tuple[str, str]], operator.add]


def calculator_tool() -> StructuredTool:
    def calculator(expression: str) -> str:
        return calculate(expression)

    return StructuredTool.from_function(calculator, name=TOOL_NAME, description=TOOL_DESCRIPTION)


def build(config: dict[str, Any]) -> Any:
    graph = StateGraph(State)
    tools = ToolNode([calculator_tool()])

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
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            agent = create_react_agent(model, tools)

        async def call(state: State) -> dict[str, Any]:
            system, user = messages(i, list(state["outputs"]))
            done = await agent.ainvoke(
                {"messages": [SystemMessage(system["content"]), HumanMessage(user["content"])]}
            )
            return {"outputs": [(f"Step {i}", str(done["messages"][-1].content))]}

        return call

    previous = START
    for i in range(int(config["n"])):
        graph.add_node(f"step_{i}", node(i))
        graph.add_edge(previous, f"step_{i}")
        previous = f"step_{i}"
    graph.add_edge(previous, END)
    return graph.compile()


def main() -> None:
    config = config_from_argv()
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
    emit({"walls": walls, "peak_rss_kb": peak_rss_kb()})


if __name__ == "__main__":
    main()
