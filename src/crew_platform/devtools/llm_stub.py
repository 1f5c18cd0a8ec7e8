"""A real HTTP server speaking the OpenAI chat-completions protocol, for tests, benchmarks, demos.

Replies are scripted through an admin API, else derived from the prompt, so runs are
deterministic. It can also misbehave on purpose: a status with headers (429 + Retry-After, 500),
latency, a hang past the client's timeout, a malformed body, a connection dropped mid-stream.

    make stub                                   # 127.0.0.1:9100 (STUB_PORT=... to change)
    python -m crew_platform.devtools.llm_stub --port 9100 --latency 0.1

Admin API (not part of OpenAI's):
    POST /_script   {"replies": [Reply, ...]}  queue replies (FIFO; `match` ones by prompt text)
    POST /_config   {"latency": 0.1, "models": [...], "chunk_words": 3}: `models` are the ones
                    served (listed by /v1/models); a call to any other answers 404
                    `model_not_found` as Cerebras does
    GET  /_requests the chat requests received, newest last
    POST /_reset    forget scripts, requests and config
    POST /_open     {"gate": "name"} let the requests held at that gate go on
    GET  /_stats    {"active": n, "peak": m}: chat requests being answered now, and the most at
                    once since the last reset (or since `POST /_stats/reset`, which keeps
                    scripts, requests and config)
Reply fields: content, latency, status, headers, body,
              fault ("drop" | "malformed" | "hang" | "error": half way, a chunk carrying
              `{"error": {"message": error}}`, as providers report a failure mid-stream), error,
              match (substring of the last user message), prefix (the last user message
              starts with it), role (the system prompt starts with "You are <role>.", as an
              agent of that role is prompted), model (only for this model),
              chunk_delay (seconds between chunks), usage (false to omit the usage report, or
              {"prompt_tokens": n, "completion_tokens": m} to report those numbers),
              gate (hold the request until the gate is opened), quorum (with gate: the gate
              opens by itself once this many requests wait at it),
              tool_calls ([{"name", "arguments" (object or raw text), "id"?}, ...]: the answer
              asks for these calls, streamed in deltas as providers do, finish_reason
              "tool_calls"), quote_tools (true: the answer ends with the `tool` messages the
              request carried, "Tool results: <call id>=<content>; ..."),
              delegate ([{"coworker", "task" | "question", "context"?, "id"?}, ...]: a manager's
              answer, calls of `delegate_work` (with `task`) or `ask_question` (with
              `question`), added to any `tool_calls`),
              json (any JSON value: the answer is its JSON text), format (only for requests
              whose `response_format` is a `json_schema` of this name, e.g. the guardrail
              judge's "guardrail_verdict").
Structured output: a request with a `json_schema` response_format and no scripted content is
answered with a small instance of that schema (its first enum value or option, "" for strings,
0 for numbers, true for booleans, every property of an object), so a judge passes by default.
The request log keeps each request's body as sent, `response_format` included.
A request held by a gate or a hang notices when its client goes away: it is then marked
`"_disconnected": true` in /_requests and `disconnects` counts it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import socket
import threading
import time
from collections.abc import AsyncIterable, AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

DEFAULT_MODELS = [
    "llama-4-maverick-17b-128e-instruct",
    "llama3.1-8b",
    "gpt-oss-120b",
    "gemma-4-31b",
]


@dataclass
class StubState:
    latency: float = 0.0
    chunk_words: int = 4
    models: list[str] = field(default_factory=lambda: list(DEFAULT_MODELS))
    script: list[dict[str, Any]] = field(default_factory=list)
    requests: list[dict[str, Any]] = field(default_factory=list)
    record_requests: bool = True
    generation: int = 0
    active: int = 0
    max_active: int = 0
    disconnects: int = 0
    opened_gates: set[str] = field(default_factory=set)
    waiting: dict[str, int] = field(default_factory=dict)

    def reset(self) -> None:
        self.latency = 0.0
        self.chunk_words = 4
        self.models = list(DEFAULT_MODELS)
        self.script.clear()
        self.requests.clear()
        self.generation += 1  # requests still in flight from before no longer count
        self.active = 0
        self.max_active = 0
        self.disconnects = 0
        self.opened_gates.clear()
        self.waiting.clear()

    def reset_peak(self) -> None:
        self.max_active = self.active

    def take_reply(
        self, model: str, prompt: str, schema_name: str | None = None, system: str = ""
    ) -> dict[str, Any]:
        """The first queued reply for this call; one that names this prompt (or this
        structured-output schema, or the agent's role) wins over one that names none. A model
        not in `models` only takes replies naming it (`model`): the others wait for the call
        that falls back to a served model."""

        def targeted(reply: dict[str, Any]) -> bool:
            return "match" in reply or "prefix" in reply or "format" in reply or "role" in reply

        served = model in self.models

        def fits(reply: dict[str, Any]) -> bool:
            return (
                (reply.get("model") == model or (served and "model" not in reply))
                and ("match" not in reply or reply["match"] in prompt)
                and ("prefix" not in reply or prompt.startswith(reply["prefix"]))
                and ("format" not in reply or reply["format"] == schema_name)
                and ("role" not in reply or system.startswith(f"You are {reply['role']}."))
            )

        for i, reply in enumerate(self.script):
            if not fits(reply):
                continue
            if not targeted(reply) and any(targeted(r) and fits(r) for r in self.script):
                continue
            return self.script.pop(i)
        return {}


def _schema_of(payload: dict[str, Any]) -> tuple[str | None, Any]:
    """The name and schema of a request's `json_schema` response_format (None, None without)."""
    response_format = payload.get("response_format")
    if not isinstance(response_format, dict) or response_format.get("type") != "json_schema":
        return None, None
    spec = response_format.get("json_schema") or {}
    return spec.get("name"), spec.get("schema")


def sample_of(schema: Any, root: Any = None, depth: int = 0) -> Any:
    """A small value that `schema` accepts (for the common keywords; a stub, not a solver)."""
    root = schema if root is None else root
    if not isinstance(schema, dict) or depth > 20:
        return None
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#"):
        target: Any = root
        for part in [p for p in ref[1:].split("/") if p]:
            target = target.get(part, {}) if isinstance(target, dict) else {}
        return sample_of(target, root, depth + 1)
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return schema["enum"][0]
    for key in ("anyOf", "oneOf", "allOf"):
        if schema.get(key):
            return sample_of(schema[key][0], root, depth + 1)
    kind = schema.get("type")
    kind = kind[0] if isinstance(kind, list) and kind else kind
    if kind == "object" or "properties" in schema:
        properties = schema.get("properties") or {}
        return {name: sample_of(sub, root, depth + 1) for name, sub in properties.items()}
    if kind == "array":
        count = int(schema.get("minItems", 0))
        return [sample_of(schema.get("items", {}), root, depth + 1) for _ in range(count)]
    values = {"string": "", "integer": 0, "number": 0, "boolean": True, "null": None}
    return values.get(str(kind))


def default_answer(model: str, prompt: str) -> str:
    first = next((line for line in prompt.splitlines() if line.strip()), "")
    return f"[{model}] answer to: {first[:120]}"


def _words(text: str) -> int:
    return max(1, len(text.split()))


def _system_prompt(messages: list[dict[str, Any]]) -> str:
    first = messages[0] if messages else {}
    content = first.get("content") if first.get("role") == "system" else ""
    return content if isinstance(content, str) else ""


def _last_user_message(messages: list[dict[str, Any]]) -> str:
    for message in reversed(messages):
        if message.get("role") == "user":
            content = message.get("content")
            return content if isinstance(content, str) else json.dumps(content)
    return ""


def create_stub_app(state: StubState | None = None) -> Starlette:
    state = state or StubState()

    async def chat(request: Request) -> Response:
        try:
            payload = await request.json()
        except ValueError:
            return JSONResponse({"error": {"message": "invalid JSON"}}, status_code=400)
        generation = state.generation
        state.active += 1
        state.max_active = max(state.max_active, state.active)

        def done() -> None:
            if state.generation == generation:
                state.active -= 1

        streaming = False
        try:
            response = await _answer(request, payload)
            if isinstance(response, StreamingResponse):
                streaming = True
                response.body_iterator = _counted(response.body_iterator, done)
            return response
        finally:
            if not streaming:
                done()

    async def _counted(body: AsyncIterable[Any], done: Callable[[], None]) -> AsyncIterator[Any]:
        try:
            async for piece in body:
                yield piece
        finally:
            done()

    async def _hold(request: Request, record: dict[str, Any], until: Any) -> bool:
        """Wait until `until()` is true; False if the client went away first."""
        while not until():
            if await request.is_disconnected():
                record["_disconnected"] = True
                state.disconnects += 1
                return False
            await asyncio.sleep(0.01)
        return True

    async def _answer(request: Request, payload: dict[str, Any]) -> Response:
        model = str(payload.get("model", ""))
        messages = payload.get("messages") or []
        prompt = _last_user_message(messages)
        record: dict[str, Any] = {
            "received_at": time.time(),
            "_auth": request.headers.get("authorization"),
            **payload,
        }
        if state.record_requests:
            state.requests.append(record)
        schema_name, schema = _schema_of(payload)
        reply = state.take_reply(model, prompt, schema_name, _system_prompt(messages))
        if "gate" in reply:
            gate = str(reply["gate"])
            state.waiting[gate] = state.waiting.get(gate, 0) + 1
            quorum = reply.get("quorum")
            if quorum is not None and state.waiting[gate] >= int(quorum):
                state.opened_gates.add(gate)
            try:
                if not await _hold(request, record, lambda: gate in state.opened_gates):
                    return Response(status_code=499)
            finally:
                state.waiting[gate] = max(0, state.waiting.get(gate, 1) - 1)
        await asyncio.sleep(float(reply.get("latency", state.latency)))
        if reply.get("fault") == "hang":
            await _hold(request, record, lambda: False)
            return Response(status_code=499)
        if "status" in reply:
            body = reply.get("body", {"error": {"message": f"scripted {reply['status']}"}})
            return JSONResponse(
                body, status_code=int(reply["status"]), headers=reply.get("headers", {})
            )
        if model not in state.models:
            return JSONResponse(
                {
                    "message": f"Model {model} does not exist or you do not have access to it.",
                    "type": "not_found_error",
                    "param": "model",
                    "code": "model_not_found",
                },
                status_code=404,
            )
        calls = _scripted_calls(reply)
        quiet = calls or reply.get("quote_tools")
        if "json" in reply:
            reply["content"] = json.dumps(reply["json"], ensure_ascii=False)
        elif schema is not None and not quiet and "content" not in reply:
            reply["content"] = json.dumps(sample_of(schema), ensure_ascii=False)
        content = str(reply.get("content", "" if quiet else default_answer(model, prompt)))
        if reply.get("quote_tools"):
            content = (content + " " if content else "") + quote_tool_results(messages)
        usage = {
            "prompt_tokens": sum(_words(str(m.get("content", ""))) for m in messages),
            "completion_tokens": _words(content) + sum(_words(c["arguments"]) for c in calls),
        }
        if isinstance(reply.get("usage"), dict):
            usage = {k: int(reply["usage"][k]) for k in ("prompt_tokens", "completion_tokens")}
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        created = int(time.time())
        ident = f"chatcmpl-stub-{time.monotonic_ns()}"
        if not payload.get("stream"):
            if reply.get("fault") == "malformed":
                return Response("{not json", media_type="application/json")
            return JSONResponse(
                {
                    "id": ident,
                    "object": "chat.completion",
                    "created": created,
                    "model": model,
                    "choices": [
                        {
                            "index": 0,
                            "finish_reason": "tool_calls" if calls else "stop",
                            "message": {
                                "role": "assistant",
                                "content": content or None,
                                **({"tool_calls": [_call_json(c) for c in calls]} if calls else {}),
                            },
                        }
                    ],
                    "usage": usage,
                }
            )
        include_usage = bool((payload.get("stream_options") or {}).get("include_usage"))
        if reply.get("usage") is False:
            include_usage = False
        return StreamingResponse(
            _stream(
                ident,
                created,
                model,
                content,
                usage,
                include_usage,
                reply,
                state.chunk_words,
                calls,
            ),
            media_type="text/event-stream",
        )

    async def models(_: Request) -> Response:
        return JSONResponse(
            {
                "object": "list",
                "data": [
                    {"id": m, "object": "model", "created": 0, "owned_by": "stub"}
                    for m in state.models
                ],
            }
        )

    async def script(request: Request) -> Response:
        body = await request.json()
        state.script.extend(body.get("replies", []))
        return JSONResponse({"queued": len(state.script)})

    async def configure(request: Request) -> Response:
        body = await request.json()
        for key in ("latency", "chunk_words", "models", "record_requests"):
            if key in body:
                setattr(state, key, body[key])
        return JSONResponse({"latency": state.latency, "models": state.models})

    async def recorded(_: Request) -> Response:
        return JSONResponse(state.requests)

    async def reset(_: Request) -> Response:
        state.reset()
        return JSONResponse({"reset": True})

    async def stats(_: Request) -> Response:
        return JSONResponse({"active": state.active, "peak": state.max_active})

    async def reset_stats(_: Request) -> Response:
        state.reset_peak()
        return JSONResponse({"active": state.active, "peak": state.max_active})

    async def open_gate(request: Request) -> Response:
        body = await request.json()
        state.opened_gates.add(str(body["gate"]))
        return JSONResponse({"opened": body["gate"]})

    app = Starlette(
        routes=[
            Route("/v1/chat/completions", chat, methods=["POST"]),
            Route("/v1/models", models, methods=["GET"]),
            Route("/_script", script, methods=["POST"]),
            Route("/_config", configure, methods=["POST"]),
            Route("/_requests", recorded, methods=["GET"]),
            Route("/_reset", reset, methods=["POST"]),
            Route("/_open", open_gate, methods=["POST"]),
            Route("/_stats", stats, methods=["GET"]),
            Route("/_stats/reset", reset_stats, methods=["POST"]),
        ]
    )
    app.state.stub = state
    return app


async def _stream(
    ident: str,
    created: int,
    model: str,
    content: str,
    usage: dict[str, int],
    include_usage: bool,
    reply: dict[str, Any],
    chunk_words: int,
    calls: list[dict[str, str]],
) -> AsyncIterator[bytes]:
    def frame(delta: dict[str, Any], finish: str | None = None) -> bytes:
        chunk = {
            "id": ident,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }
        return f"data: {json.dumps(chunk)}\n\n".encode()

    words = content.split(" ") if content or not calls else []
    pieces = [" ".join(words[i : i + chunk_words]) for i in range(0, len(words), chunk_words)]
    pieces = [p + (" " if i < len(pieces) - 1 else "") for i, p in enumerate(pieces)]
    yield frame({"role": "assistant", "content": ""})
    delay = float(reply.get("chunk_delay", 0.0))
    for i, piece in enumerate(pieces):
        if reply.get("fault") == "drop" and i >= max(1, len(pieces) // 2):
            raise ConnectionResetError("stub: connection dropped mid-stream on purpose")
        if reply.get("fault") == "malformed" and i >= max(1, len(pieces) // 2):
            yield b"data: {this is not json\n\n"
            return
        if reply.get("fault") == "error" and i >= max(1, len(pieces) // 2):
            failure = {"error": {"message": str(reply.get("error", "stub: failed mid-stream"))}}
            yield f"data: {json.dumps(failure)}\n\n".encode()
            return
        if delay:
            await asyncio.sleep(delay)
        yield frame({"content": piece})
    for index, call in enumerate(calls):
        first = _call_json(call) | {"index": index}
        first["function"] = {"name": call["name"], "arguments": ""}
        yield frame({"tool_calls": [first]})
        for piece in _thirds(call["arguments"]):
            if delay:
                await asyncio.sleep(delay)
            yield frame({"tool_calls": [{"index": index, "function": {"arguments": piece}}]})
    yield frame({}, "tool_calls" if calls else "stop")
    if include_usage:
        tail = {
            "id": ident,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [],
            "usage": usage,
        }
        yield f"data: {json.dumps(tail)}\n\n".encode()
    yield b"data: [DONE]\n\n"


def _delegations(reply: dict[str, Any]) -> list[dict[str, Any]]:
    """A manager's scripted `delegate` entries as tool calls of the delegation tools."""
    calls = []
    for entry in reply.get("delegate") or ():
        asks = "question" in entry
        arguments = {
            "coworker": entry["coworker"],
            "question" if asks else "task": entry["question" if asks else "task"],
            "context": entry.get("context", ""),
        }
        name = "ask_question" if asks else "delegate_work"
        calls.append({"name": name, "arguments": arguments, "id": entry.get("id")})
    return calls


def _scripted_calls(reply: dict[str, Any]) -> list[dict[str, str]]:
    """The reply's tool calls with ids and arguments as JSON text."""
    calls = []
    for i, call in enumerate([*(reply.get("tool_calls") or ()), *_delegations(reply)]):
        arguments = call.get("arguments", {})
        calls.append(
            {
                "id": str(call.get("id") or f"call_{time.monotonic_ns()}_{i}"),
                "name": str(call["name"]),
                "arguments": arguments if isinstance(arguments, str) else json.dumps(arguments),
            }
        )
    return calls


def _call_json(call: dict[str, str]) -> dict[str, Any]:
    return {
        "id": call["id"],
        "type": "function",
        "function": {"name": call["name"], "arguments": call["arguments"]},
    }


def _thirds(text: str) -> list[str]:
    """`text` in up to three pieces, as providers stream a call's arguments."""
    step = max(1, -(-len(text) // 3))
    return [text[i : i + step] for i in range(0, len(text), step)]


def quote_tool_results(messages: list[dict[str, Any]]) -> str:
    """What a `quote_tools` answer ends with: every `tool` message of the request."""
    results = [
        f"{m.get('tool_call_id')}={m.get('content')}" for m in messages if m.get("role") == "tool"
    ]
    return "Tool results: " + "; ".join(results)


def free_port() -> int:
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class StubServer:
    """Runs the stub on a real port in a background thread (its own event loop)."""

    def __init__(self, port: int | None = None, latency: float = 0.0) -> None:
        self.port = port or free_port()
        self.state = StubState(latency=latency)
        self.app = create_stub_app(self.state)
        config = uvicorn.Config(
            self.app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="off"
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> StubServer:
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("LLM stub did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)

    def script(self, *replies: dict[str, Any]) -> None:
        self.state.script.extend(replies)

    def reset(self) -> None:
        self.state.reset()

    def open_gate(self, name: str) -> None:
        self.state.opened_gates.add(name)

    def waiting_at(self, name: str) -> int:
        """How many requests are held at gate `name` right now."""
        return self.state.waiting.get(name, 0)

    @property
    def requests(self) -> list[dict[str, Any]]:
        return self.state.requests

    @property
    def max_active(self) -> int:
        """Most chat requests the stub was answering at the same time since the last reset."""
        return self.state.max_active

    @property
    def disconnects(self) -> int:
        """Requests whose client hung up while the stub was still holding them."""
        return self.state.disconnects


class _AnnouncingServer(uvicorn.Server):
    """Prints the address it listens on once the socket is bound (the port too when `--port 0`
    let the system choose it), so a user or a script knows where to point CEREBRAS_BASE_URL."""

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.should_exit:
            return
        host, port = self.servers[0].sockets[0].getsockname()[:2]
        if ":" in host:
            host = f"[{host}]"
        print(f"LLM stub listening on http://{host}:{port}/v1", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9100, help="0 picks a free port")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds before each reply")
    parser.add_argument("--no-record", action="store_true", help="do not keep request bodies")
    args = parser.parse_args()
    state = StubState(latency=args.latency, record_requests=not args.no_record)
    config = uvicorn.Config(
        create_stub_app(state),
        host=args.host,
        port=args.port,
        log_level="warning",
        access_log=False,
    )
    _AnnouncingServer(config).run()


if __name__ == "__main__":
    main()
