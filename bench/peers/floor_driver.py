"""The floor: the bare OpenAI SDK making the workload's calls, nothing else.

    python floor_driver.py '{"mode": "overhead", "base_url": ..., "n": 5, "runs": 3}'

Streams like our engine does (`stream_options.include_usage`), unless "stream" is false.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from openai import AsyncOpenAI
from workload import MODEL, concurrency_main, config_from_argv, emit, messages, peak_rss_kb


async def chain(client: AsyncOpenAI, n: int, stream: bool) -> None:
    context: list[tuple[str, str]] = []
    for i in range(n):
        if stream:
            response = await client.chat.completions.create(
                model=MODEL,
                messages=messages(i, context),
                temperature=0.6,
                top_p=0.9,
                max_tokens=1024,
                stream=True,
                stream_options={"include_usage": True},
            )
            pieces: list[str] = []
            async with response:
                async for chunk in response:
                    for choice in chunk.choices:
                        if choice.delta and choice.delta.content:
                            pieces.append(choice.delta.content)
            text = "".join(pieces)
        else:
            reply = await client.chat.completions.create(
                model=MODEL,
                messages=messages(i, context),
                temperature=0.6,
                top_p=0.9,
                max_tokens=1024,
            )
            text = reply.choices[0].message.content or ""
        context.append((f"Step {i}", text))


def main() -> None:
    config = config_from_argv()
    stream = bool(config.get("stream", True))

    def client() -> AsyncOpenAI:
        # The SDK's own HTTP client, as our gateway uses it (a plain httpx.AsyncClient passed
        # as http_client is several times slower under concurrency with this SDK).
        return AsyncOpenAI(base_url=config["base_url"], api_key="bench", max_retries=0, timeout=600)

    if config["mode"] == "overhead":
        walls: list[float] = []

        async def runs() -> None:
            sdk = client()
            for rep in range(int(config.get("warmup", 1)) + int(config["runs"])):
                began = time.perf_counter()
                await chain(sdk, int(config["n"]), stream)
                if rep >= int(config.get("warmup", 1)):
                    walls.append(time.perf_counter() - began)
            await sdk.close()

        asyncio.run(runs())
        emit({"walls": walls, "peak_rss_kb": peak_rss_kb()})
        return

    shared: list[AsyncOpenAI] = []

    def factory(k: int) -> Any:
        # One client for the whole process, as an application keeps one: a fresh client per
        # run left the earlier clients' pools open and the stub stopped answering new ones.
        if not shared:
            shared.append(client())
        sdk = shared[0]

        def make(_: int) -> Any:
            return lambda: chain(sdk, int(config["n"]), stream)

        return make

    emit({"results": concurrency_main(factory, config)})


if __name__ == "__main__":
    main()
