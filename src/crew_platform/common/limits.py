"""Every size limit of stored input, in one place.

The tables (`String(N)` columns) and the request schemas (`max_length=N`) both read these, so a
schema can never admit a string its column cannot hold. Text columns are unbounded in the
database; their limits here are the API's documented ones.
"""

from __future__ import annotations

MAX_ID = 2**31 - 1
"""Ids are 32-bit on every backend (INTEGER primary keys); larger values cannot name a row."""

NAME_LENGTH = 200
"""Names of agents, workflows and tasks, model ids, labels, `created_by`."""
TASK_TYPE_LENGTH = 64
WORKFLOW_TYPE_LENGTH = 32
STATE_LENGTH = 16
"""Workflow statuses, execution modes and log levels."""
STATUS_LENGTH = 32
"""Statuses of executions and task runs (`waiting_for_input` is longer than STATE_LENGTH)."""
EVENT_LENGTH = 64
PROCESS_ID_LENGTH = 200
"""A process's id (`host:pid:random`), which names the holder of an execution's lease."""

URL_LENGTH = 2_000
"""URLs of HTTP tools and MCP servers."""
CALL_ID_LENGTH = 200
"""A provider's id of one tool call."""
API_KEY_ID_LENGTH = 32
"""The public part of an API key that finds its row (`crew_<id>_<secret>`)."""

REQUIRED_TEXT_LENGTH = 20_000
"""An agent's role and goal."""
LONG_TEXT_LENGTH = 100_000
"""Backstories, descriptions, expected outputs."""
AGENT_TEST_INPUT_LENGTH = 200_000

MAX_JSON_DEPTH = 32
"""How deeply a free-form JSON field (a config, input data, a context) may nest objects and
arrays. The field's own object is level 1. Far below what the serializers handle (pydantic stops
at 255), so whatever is accepted can always be read back."""
