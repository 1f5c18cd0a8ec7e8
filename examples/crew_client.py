"""The little client the example scripts share: Python's standard library only, nothing to install.

Every example follows the same steps: make sure its agents, workflow and tasks exist (reusing
those of the same name, changing only the fields that differ from the example's definition),
start an execution, follow that execution's event stream, and print its result. All ids come
from the server's answers, so an example can be run any number of times.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

FINAL_STATUSES = ("completed", "failed", "cancelled")
FINAL_EVENTS = ("workflow_completed", "workflow_failed", "workflow_cancelled")


class ExampleFailed(Exception):
    """Ends the example with exit status 1 and this message on stderr."""


class ApiError(ExampleFailed):
    def __init__(self, method: str, path: str, status: int, body: Any) -> None:
        envelope = json.dumps(body, indent=2) if isinstance(body, dict) else str(body)
        super().__init__(f"{method} {path} answered {status}:\n{envelope}")
        self.status = status
        self.body = body


@dataclass
class TaskSpec:
    name: str
    description: str
    agent: str
    expected_output: str | None = None
    depends_on: list[str] = field(default_factory=list)
    order: int = 0
    input_data: dict[str, Any] | None = None


class Client:
    def __init__(self, base_url: str, timeout: float = 30.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout

    def _open(self, method: str, path: str, body: Any = None, **headers: str) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.base_url + path, data=data, method=method)
        request.add_header("Accept", headers.pop("accept", "application/json"))
        if data is not None:
            request.add_header("Content-Type", "application/json")
        try:
            return urllib.request.urlopen(request, timeout=self.timeout)
        except urllib.error.HTTPError as exc:
            raw = exc.read().decode("utf-8", "replace")
            try:
                answer: Any = json.loads(raw)
            except ValueError:
                answer = raw
            raise ApiError(method, path, exc.code, answer) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ExampleFailed(
                f"cannot reach {self.base_url} ({reason}); is the server running (`make run`)?"
            ) from None

    def call(self, method: str, path: str, body: Any = None) -> Any:
        with self._open(method, path, body) as response:
            return json.loads(response.read())

    def find(self, collection: str, name: str) -> dict[str, Any] | None:
        """The agent or workflow called `name`, active or not (names are unique)."""
        skip = 0
        while True:
            query = f"active_only=false&limit=1000&skip={skip}"
            page = self.call("GET", f"/api/v1/{collection}/?{query}")
            for item in page:
                if item["name"] == name:
                    return dict(item)
            if len(page) < 1000:
                return None
            skip += len(page)

    def _ensure(self, path: str, existing: dict[str, Any] | None, wanted: dict[str, Any]) -> Any:
        if existing is None:
            return self.call("POST", f"{path}/", wanted)
        changes = {k: v for k, v in wanted.items() if existing.get(k) != v}
        if not changes:
            return existing
        return self.call("PUT", f"{path}/{existing['id']}", changes)

    def ensure_agent(self, name: str, **fields: Any) -> dict[str, Any]:
        wanted = {"name": name, "is_active": True, **fields}
        return dict(self._ensure("/api/v1/agents", self.find("agents", name), wanted))

    def ensure_workflow(self, name: str, **fields: Any) -> dict[str, Any]:
        existing = self.find("workflows", name)
        if existing is not None and existing.get("status") == "paused":
            raise ExampleFailed(
                f"workflow {name!r} (id {existing['id']}) is paused: resume it first with "
                f"POST /api/v1/workflows/{existing['id']}/resume"
            )
        wanted = {"name": name, "is_active": True, **fields}
        return dict(self._ensure("/api/v1/workflows", existing, wanted))

    def ensure_tasks(
        self, workflow_id: int, agents: dict[str, int], specs: list[TaskSpec]
    ) -> dict[str, dict[str, Any]]:
        """The workflow's tasks as the specs describe them, by name (dependencies first)."""
        existing = {t["name"]: t for t in self.call("GET", f"/api/v1/tasks/workflow/{workflow_id}")}
        tasks: dict[str, dict[str, Any]] = {}
        for spec in specs:
            wanted = {
                "workflow_id": workflow_id,
                "agent_id": agents[spec.agent],
                "name": spec.name,
                "description": spec.description,
                "expected_output": spec.expected_output,
                "order": spec.order,
                "input_data": spec.input_data,
                "dependencies": [tasks[d]["id"] for d in spec.depends_on],
                "is_active": True,
            }
            tasks[spec.name] = self._ensure("/api/v1/tasks", existing.get(spec.name), wanted)
        return tasks

    def events(self, execution_id: int) -> Iterator[dict[str, Any]]:
        """The execution's events, from its first, until its final one (Server-Sent Events)."""
        path = f"/api/v1/executions/{execution_id}/events"
        with self._open("GET", path, accept="text/event-stream") as stream:
            data: list[str] = []
            for raw in stream:
                line = raw.decode("utf-8").rstrip("\r\n")
                if line.startswith("data:"):
                    data.append(line[5:].removeprefix(" "))
                elif not line and data:
                    yield json.loads("\n".join(data))
                    data = []

    def run(self, workflow_id: int, input_data: dict[str, Any], timeout: float) -> dict[str, Any]:
        """Start an execution of the workflow, report its progress on stderr, and return it
        once finished."""
        execution = self.call(
            "POST", f"/api/v1/workflows/{workflow_id}/execute", {"input_data": input_data}
        )
        execution_id = execution["id"]
        say(f"execution {execution_id} started")
        deadline = time.monotonic() + timeout
        try:
            for event in self.events(execution_id):
                say(describe(event))
                if event["type"] in FINAL_EVENTS or time.monotonic() > deadline:
                    break
        except ExampleFailed as exc:
            say(f"event stream lost ({exc}); polling instead")
        while True:
            execution = self.call("GET", f"/api/v1/executions/{execution_id}")
            if execution["status"] in FINAL_STATUSES:
                return dict(execution)
            if time.monotonic() > deadline:
                raise ExampleFailed(
                    f"execution {execution_id} still {execution['status']} after {timeout:.0f}s"
                )
            time.sleep(0.5)


def describe(event: dict[str, Any]) -> str:
    text = event["type"]
    if event.get("task_id") is not None:
        text += f" task {event['task_id']}"
    if event.get("error"):
        text += f": {event['error']}"
    elif event["type"] == "task_completed":
        text += f" ({event.get('tokens_used', 0)} tokens)"
    return text


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def parser(description: str) -> argparse.ArgumentParser:
    parse = argparse.ArgumentParser(description=description)
    parse.add_argument("--base-url", default="http://localhost:8000", help="the server's address")
    parse.add_argument(
        "--model", help="model of the example's agents (default: the server's DEFAULT_MODEL)"
    )
    parse.add_argument("--timeout", type=float, default=600, help="seconds to wait for the run")
    return parse


def agent_fields(args: argparse.Namespace, **fields: Any) -> dict[str, Any]:
    return {**fields, **({"model": args.model} if args.model else {})}


def finish(execution: dict[str, Any]) -> int:
    """Print the result (stdout) of a completed execution; explain a failed one (stderr)."""
    if execution["status"] != "completed":
        say(
            f"execution {execution['id']} {execution['status']}: "
            f"{execution.get('error_message') or 'no error message'}"
        )
        return 1
    print((execution.get("output_data") or {}).get("result", ""))
    return 0


def main(example: Any) -> None:
    """Run `example()` (returning an exit status); a failure is a message and exit status 1."""
    try:
        sys.exit(example())
    except ExampleFailed as exc:
        say(f"error: {exc}")
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
