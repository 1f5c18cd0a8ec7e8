"""deploy/docker-compose.yml, checked as far as this machine can (it has no Docker daemon): its
processes run the commands the scale-out tests run, with an environment our start-up accepts."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from crew_platform.cli import build_parser, executor_refusal, unauthenticated_refusal
from crew_platform.settings import Settings
from tests.scale.procs import WorkerProcess

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
INTERPOLATION = re.compile(r"\$\{(\w+)(?::?[-?])?([^}]*)\}")
SECRET = "x" * 40
"""What an operator exports for the variables the file requires (API_KEY_SECRET)."""


def _resolve(value: Any) -> Any:
    """Compose's `${VAR:-default}` and `${VAR:?message}` as an operator's shell would see
    them: the default, or a value set for a required one."""
    if isinstance(value, list):
        return [_resolve(v) for v in value]
    if not isinstance(value, str):
        return value

    def one(match: re.Match[str]) -> str:
        required = "?" in match.group(0)
        return SECRET if required else match.group(2)

    return INTERPOLATION.sub(one, value)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return dict(yaml.safe_load((DEPLOY / "docker-compose.yml").read_text()))


def _service(compose: dict[str, Any], name: str) -> dict[str, Any]:
    service = dict(compose["services"][name])
    service["command"] = _resolve(service["command"])
    service["environment"] = {k: _resolve(v) for k, v in service["environment"].items()}
    return service


def test_the_services_are_one_postgres_one_redis_apis_and_workers(compose: dict) -> None:
    services = compose["services"]
    assert {"postgres", "redis", "migrate", "api", "worker", "lb"} <= set(services)
    assert services["api"]["deploy"]["replicas"] >= 2
    assert services["worker"]["deploy"]["replicas"] >= 2
    for name in ("api", "worker"):
        assert services[name]["depends_on"]["migrate"]["condition"] == (
            "service_completed_successfully"
        )


def test_the_processes_run_the_commands_the_tests_run(compose: dict) -> None:
    parser = build_parser()
    worker = _service(compose, "worker")["command"]
    concurrency = int(worker[2])
    assert worker == WorkerProcess.arguments(concurrency)
    assert parser.parse_args(worker).command == "worker"
    api = parser.parse_args(_service(compose, "api")["command"])
    assert (api.command, api.host) == ("serve", "0.0.0.0")
    assert parser.parse_args(_service(compose, "migrate")["command"]).command == "migrate"
    upstream = re.search(r"server api:(\d+);", (DEPLOY / "nginx.conf").read_text())
    assert upstream is not None and int(upstream.group(1)) == api.port


@pytest.mark.parametrize("name", ["api", "worker", "migrate"])
def test_the_environment_is_one_start_up_accepts(compose: dict, name: str) -> None:
    environment = _service(compose, name)["environment"]
    assert {"DATABASE_URL", "REDIS_URL", "EXECUTOR", "BROKER_URL"} <= set(environment)
    unknown = {key for key in environment if key.lower() not in Settings.model_fields}
    assert not unknown, f"not settings of ours: {unknown}"
    settings = Settings(**{key.lower(): value for key, value in environment.items()})
    assert executor_refusal(settings, worker=name == "worker") is None
    assert unauthenticated_refusal(settings, "0.0.0.0", allow=False) is None
