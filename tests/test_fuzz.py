"""Property-based fuzzing of the whole HTTP API from its own OpenAPI schema (schemathesis).

Every documented operation gets generated requests, valid and invalid ones; every response
must be no 5xx, conform to the documented status codes, content types, headers and response
schemas (the error envelope included), and invalid input must be refused. The app runs for
real (lifespan, SQLite file, LLM stub server), seeded with one agent, workflow and task so
that generated ids sometimes name existing rows.

Not checked: "schema-valid request accepted" (positive_data_acceptance). Some valid-looking
input is refused on purpose: ids that name no row (422/404), blank names, NUL characters.

FUZZ_MAX_EXAMPLES raises the number of examples per operation (default 40) for a deeper run.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.python import asgi as schemathesis_asgi
from schemathesis.specs.openapi.checks import positive_data_acceptance

from crew_platform.app import create_app
from crew_platform.devtools.llm_stub import StubServer
from crew_platform.migrations.runner import upgrade_to_head
from tests.conftest import make_settings

MAX_EXAMPLES = int(os.environ.get("FUZZ_MAX_EXAMPLES", "40"))

# The schema is the app's own; building the app touches no database.
schema = schemathesis.openapi.from_dict(
    create_app(make_settings("sqlite+aiosqlite:///unused.db")).openapi()
)
schema.config.generation.update(max_examples=MAX_EXAMPLES)
_rejection = schema.config.checks.negative_data_rejection
# A body over MAX_BODY_BYTES is refused before validation, with 413: a rejection all the same.
_rejection.expected_statuses = [*_rejection.expected_statuses, "413"]

# The SSE stream answers forever by design; it has tests of its own. Adding or refreshing an
# MCP server resolves and connects to the generated URL: tests reach nothing beyond loopback
# (tests/toolbox covers those endpoints against a local MCP server).
fuzzed = schema.exclude(path_regex=r"/events$").exclude(
    method="POST", path_regex=r"^/api/v1/mcp-servers/(\{server_id\}/refresh)?$"
)


@pytest.fixture(scope="module")
def fuzz_app(tmp_path_factory: pytest.TempPathFactory, stub: StubServer) -> Iterator[Any]:
    url = f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('fuzz') / 'fuzz.db'}"
    upgrade_to_head(url)
    app = create_app(make_settings(url, stub))
    with schemathesis_asgi.get_client(app) as http:
        for path, body in (
            ("/api/v1/agents/", {"name": "Seed", "role": "Seeder", "goal": "Exist"}),
            ("/api/v1/workflows/", {"name": "Seed"}),
            ("/api/v1/tasks/", {"workflow_id": 1, "agent_id": 1, "name": "Seed"}),
        ):
            assert http.post(path, json=body).status_code == 201
    yield app
    schemathesis_asgi.shutdown_lifespans()


@fuzzed.parametrize()
@settings(deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
def test_api_conforms_to_its_openapi_schema(case: schemathesis.Case, fuzz_app: Any) -> None:
    case.call_and_validate(app=fuzz_app, excluded_checks=[positive_data_acceptance])


def test_openapi_documents_the_error_envelope_for_every_operation() -> None:
    document = fuzzed.raw_schema
    envelope = {"$ref": "#/components/schemas/ErrorBody"}
    for path, operations in document["paths"].items():
        if not path.startswith("/api/"):
            continue
        for method, operation in operations.items():
            for status in ("400", "404", "409", "413", "422", "500"):
                content = operation["responses"][status]["content"]["application/json"]
                assert content["schema"] == envelope, (method, path, status)
    body = document["components"]["schemas"]["ErrorBody"]
    assert set(body["required"]) == {"error", "message", "details"}
    assert "HTTPValidationError" not in document["components"]["schemas"]
